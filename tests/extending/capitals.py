"""A toy downstream task registered from outside the package: the worked example of
docs/extending.md. Its examples are in the file; a reply scores 1 when its first line holds the
capital."""
from helpers.evaluation import Task, register_task
from helpers.evaluation.tasks import Example, Prompt

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"),
            ("Kenya", "Nairobi")]


class Capitals(Task):
    name, metric, max_new_tokens, chance = "capitals", "exact_match", 5, 0.0
    revision = 1  # of its prompts and scoring: raising it recomputes its stored rows

    def load(self, data_dir=None, protocol="paper"):
        if protocol != "paper":
            raise ValueError("capitals is scored under the paper protocol only")
        return [Example(self.name, i, {"country": c, "capital": k}) for i, (c, k) in enumerate(CAPITALS)]

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        return [Prompt(ex, f"The capital of {f['country']} is", f" {f['capital']}", f["capital"])]

    def paper_each(self, prompts, outputs):
        return [{"score": float(p.target.lower() in o.strip().split("\n")[0].lower()), "valid": bool(o.strip())}
                for p, o in zip(prompts, outputs)]


def register() -> None:
    register_task(Capitals(), replace=True)
