"""A method and a task added from outside the package (tests/extending/, the worked example of
docs/extending.md) run through a sweep as the package's own do: rows, per-example records and a
claims-style comparison."""
import pytest

from tests.extending import capitals, nudge

pytestmark = [pytest.mark.data]


def _module_tmp(model) -> str:
    return "transformer.h.{}.mlp.c_proj" if hasattr(model, "transformer") else "model.layers.{}.mlp.down_proj"


def test_a_registered_method_edits_like_the_packages_own(tiny_model):
    import torch

    from helpers import EditRequest, edit, method_names

    nudge.register()
    model, tok = tiny_model
    assert "NUDGE" in method_names()
    req = EditRequest("The capital of Peru is", "Peru", "Lima", ground_truth="Lima", rephrase="Peru's capital is",
                      locality_prompt="The sky is", locality_answer="blue")
    target = tok(" Lima", add_special_tokens=False).input_ids[0]

    def logprob():
        with torch.no_grad():
            ids = tok(req.prompt, return_tensors="pt").input_ids
            return torch.log_softmax(model(ids).logits[0, -1].float(), -1)[target]

    before = logprob()
    res = edit(model, tok, req, "nudge", {"layer": 1, "module_tmp": _module_tmp(model), "alpha": 8.0})
    try:
        assert logprob() > before + 0.5  # the target became more likely
        assert list(res.deltas) == [f"{_module_tmp(model).format(1)}.weight"]
    finally:
        res.restore()


def test_a_registered_method_and_task_run_through_a_sweep(tiny_model, tmp_path):
    from helpers.model import LoadedModel
    from helpers.report.judge import comparisons, judge_family, task_judges
    from helpers.runs import sweep

    nudge.register()
    capitals.register()
    model, tok = tiny_model
    loaded = LoadedModel(f"tiny-{type(model).__name__}", model, tok)
    hparams = {"NUDGE": {"layer": 1, "module_tmp": _module_tmp(model), "alpha": 2.0}}
    chains = sweep.chains({"NUDGE": [0, 2]}, orderings=2)
    run = dict(model=loaded, tasks=["capitals"], n=None, hparams=hparams, store=tmp_path / "s.jsonl", progress=False)
    rows = sweep.side_effects(chains, **run)
    assert sorted(rows.edits.unique()) == [0, 2] and set(rows.task) == {"capitals"} and len(rows) == 4
    records = sweep.side_effect_records(chains, **{k: v for k, v in run.items() if k != "progress"})
    assert len(records) == 4 * len(capitals.CAPITALS)  # every prompt of every point
    again = sweep.side_effects(chains, **run)  # all stored: read back, nothing recomputed
    assert again.value.tolist() == rows.value.tolist()

    unedited = records[records.edits == 0]
    judge = task_judges(unedited[unedited.ordering == 0])
    (judged,) = judge_family(comparisons(records[records.edits == 2], unedited, judge, "NUDGE"))
    assert judged.task == "capitals" and judged.side in ("negligible", "worse", "better", "unclear")
    assert judged.effect.low <= judged.effect.estimate <= judged.effect.high
