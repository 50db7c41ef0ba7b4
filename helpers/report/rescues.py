"""The rescues side by side (notebook 05): what each preserves, and what it costs the edits.

Every variant — a method alone, or with a regulariser — edits the same records in the same
orderings (chains of the same seed draw the same records), and every checkpoint reads the same
task examples, so each comparison is paired: a variant's damage against the unedited model (the
ranking), and against the unregularised chain of its family that edited the same records (the
claims: does the rescue preserve more, and does it keep its edits). The family of a variant is
its method, except r-ROME (ROME's) and AlphaEdit (MEMIT's).

Inputs are :func:`helpers.runs.sweep.side_effect_records` and
:func:`helpers.runs.sweep.checkpoint_measures` (``records=True``) of the same chains; points are
matched by ``edited_facts`` (a batch chain's 5 edits of 10 facts meet a single-fact chain's 50).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..editing import base_method
from . import stats
from .judge import MARGIN, Judged, advantage_by_task, judge_family, task_judges

EDITING = ("reliability", "generalization", "locality")
SIDES = stats.comparison_sides("rescue")  # a rescue's advantage is its family's extra damage

def family(variant: str) -> str:
    """The unregularised variant a rescue is compared with: ``"ROME + RECT 40%"`` -> ``"ROME"``,
    ``"AlphaEdit"`` -> ``"MEMIT"`` (a method's ``base`` in its spec, :mod:`helpers.editing.registry`)."""
    return base_method(variant.split(" + ")[0])


def heldout_as_task_records(windows: pd.DataFrame) -> pd.DataFrame:
    """Held-out windows as task-like records whose ``gold_nll`` measure is the NLL per token over
    the windows (the log of the perplexity), so :mod:`.stats` pairs and resamples them."""
    out = windows.drop(columns=["window", "nll_sum", "tokens"])
    return out.assign(example=windows.window.to_numpy(), gold_nll=windows.nll_sum.to_numpy(),
                      has_gold=windows.tokens.to_numpy(), task="heldout")


def _frames(records: pd.DataFrame) -> list[pd.DataFrame]:
    return [g for _, g in records.groupby("ordering", sort=True)]


def _at(records: pd.DataFrame, variant: str, facts: int) -> pd.DataFrame:
    return records[(records.variant == variant) & (records.edited_facts == facts)]


def ranking(records: pd.DataFrame, windows: pd.DataFrame | None = None, measures=("value", "gold_nll"),
            protocol: str = "paper") -> pd.DataFrame:
    """Per task (and the held-out text's perplexity, as task ``heldout``), each variant's paired
    damage at the last checkpoint they all reach (positive = worse than unedited; the interval
    over examples, for these orderings) and its rank among the variants (1 = least damage; by the
    estimate, ties shared), one line per (task, measure, variant)."""
    facts = int(records.groupby("variant").edited_facts.max().min())
    sources = [(records, list(measures))]
    if windows is not None:
        sources.append((heldout_as_task_records(windows), ["gold_nll"]))
    out = []
    for frame, ms in sources:
        unedited = frame[frame.edited_facts == 0]
        for task in dict.fromkeys(frame.task):
            before = unedited[unedited.task == task]
            if before.empty:
                continue
            # the unedited model, read once (every chain carries the same rows at 0 edits)
            before = before[(before.ordering == before.ordering.min()) & (before.variant == before.variant.iloc[0])]
            for measure in ms:
                for variant in dict.fromkeys(frame.variant):
                    after = _at(frame[frame.task == task], variant, facts)
                    if after.empty or before.empty:
                        continue
                    e = stats.paired_damage(_frames(after), before, task, protocol, measure)
                    out.append({"task": task, "measure": measure, "variant": variant, "edited_facts": facts,
                                "damage": e.estimate, "low": e.low, "high": e.high, "side": e.side(),
                                "orderings": e.orderings, "examples": e.examples})
    table = pd.DataFrame(out)
    if table.empty:
        return table
    table["rank"] = table.groupby(["task", "measure"]).damage.rank(method="min").astype(int)
    return table


def rank_summary(table: pd.DataFrame, measure: str = "value") -> pd.DataFrame:
    """One line per variant: its mean rank over the tasks (``measure``; the held-out text left
    out) and on how many tasks its damage is beyond zero (``worse``)."""
    part = table[(table.measure == measure) & (table.task != "heldout")]
    return (part.groupby("variant", sort=False)
            .agg(mean_rank=("rank", "mean"), tasks=("task", "nunique"), worse=("side", lambda s: int((s == "worse").sum())))
            .reset_index().sort_values("mean_rank"))


def editing_intervals(editing: pd.DataFrame, x: str = "edited_facts") -> pd.DataFrame:
    """Mean and 95% interval of each editing metric per (variant, ``x``), over the edited
    records of all orderings (a bootstrap over records): the shaded bands of 05's editing figure."""
    out = []
    for (variant, point), part in editing.groupby(["variant", x], sort=False):
        for metric in EDITING:
            mean, low, high = stats.paired_mean_interval(part[metric].to_numpy())
            out.append({"variant": variant, x: point, "measure": metric, "estimate": mean, "low": low, "high": high})
    return pd.DataFrame(out)


def perplexity_intervals(windows: pd.DataFrame, x: str = "edited_facts") -> pd.DataFrame:
    """Held-out perplexity with its 95% interval per (variant, ``x``), over windows and orderings."""
    records = heldout_as_task_records(windows)
    out = []
    for (variant, point), part in records.groupby(["variant", x], sort=False):
        est, low, high = stats.level_interval(_frames(part), "heldout", measure="gold_nll")
        out.append({"variant": variant, x: point, "measure": "perplexity", "estimate": float(np.exp(est)),
                    "low": float(np.exp(low)), "high": float(np.exp(high))})
    return pd.DataFrame(out)


def editing_cost(editing: pd.DataFrame, variant: str, base: str, facts: int,
                 level: float = stats.LEVEL) -> dict[str, tuple[float, float, float]]:
    """Per editing metric: ``(change, low, high)`` of the rescue's mean minus its family's, over
    the same edited records in the same orderings at ``facts`` edited facts (negative = the
    rescue keeps less of its edits; :func:`helpers.report.stats.paired_mean_interval`)."""
    both = _at(editing, variant, facts).merge(_at(editing, base, facts), on=["ordering", "case_id"],
                                             suffixes=("", "_base"))
    return {m: stats.paired_mean_interval((both[m] - both[f"{m}_base"]).to_numpy(), level) for m in EDITING}


def against_family(records: pd.DataFrame, editing: pd.DataFrame, windows: pd.DataFrame | None = None,
                   protocol: str = "paper", level: float = stats.LEVEL) -> pd.DataFrame:
    """Each rescue against the unregularised chain of its family on the same records, at the
    last checkpoint both reach: per task, the rescue's *advantage* (how much more the family's
    chain is damaged than the rescue's; positive = the rescue is better; paired by example and
    ordering), on the measure that judges the task, with the family of simultaneous intervals
    over the tasks that ``claims.md`` reads (:func:`helpers.report.judge.advantage_by_task`:
    the same numbers as there, and as C8's for RECT); the held-out text's NLL per token (one
    interval); and the cost in editing performance (:func:`editing_cost`). One line per
    (variant, task)."""
    out = []
    variants = [v for v in dict.fromkeys(records.variant) if family(v) != v and family(v) in set(records.variant)]
    for variant in variants:
        base = family(variant)
        facts = int(min(records[records.variant == variant].edited_facts.max(),
                        records[records.variant == base].edited_facts.max()))
        cost = {}
        for metric, (est, low, high) in editing_cost(editing, variant, base, facts, level).items():
            cost.update({f"{metric}_change": est, f"{metric}_low": low, f"{metric}_high": high})
        unedited = records[(records.variant == base) & (records.edited_facts == 0)]
        unedited = unedited[unedited.ordering == unedited.ordering.min()]
        judge = task_judges(unedited, protocol)
        found = judge_family(advantage_by_task(_at(records, base, facts), _at(records, variant, facts), judge, variant,
                                               protocol), level)
        if windows is not None:
            held = heldout_as_task_records(windows)
            e = stats.paired_damage(_frames(_at(held, base, facts)), _frames(_at(held, variant, facts)), "heldout",
                                    protocol, "gold_nll", level=level)
            found.append(Judged(variant, "heldout", "gold_nll", e, e.side(MARGIN["gold_nll"])))
        for r in found:
            e = r.effect
            out.append({"variant": variant, "family": base, "edited_facts": facts, "task": r.task,
                        "measure": r.measure, "advantage": e.estimate, "low": e.low, "high": e.high,
                        "side": SIDES[r.side], "orderings": e.orderings, "examples": e.examples, **cost})
    return pd.DataFrame(out)


__all__ = ["EDITING", "family", "heldout_as_task_records", "ranking", "rank_summary", "editing_intervals",
           "perplexity_intervals", "editing_cost", "against_family"]
