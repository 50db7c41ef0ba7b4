"""Judging side effects task by task: which measure judges a task, the families of comparisons a
claim reads, and the rules that turn intervals into verdicts (docs/claims.md).

A *comparison* is one task's damage between two sets of records (a chain against the unedited
model, a larger batch against the smallest, the unregularised chain against a rescue's), reduced
to a :class:`helpers.report.stats.DamageSample`. A claim's verdict reads a *family* of them, and
:func:`judge_family` gives the family intervals that are simultaneous at 95%
(:func:`helpers.report.stats.intervals`), so the chance that any of them takes a wrong side stays at
5%. C8 and the rescues' table compare the same chains through :func:`advantage_by_task`, so one
comparison has one number wherever it is shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..evaluation import get_task, row_from_records
from . import stats

FLOOR = 0.05  # a generation metric below this is at the floor: judged on gold_nll
MAJORITY_SHARE = 5 / 8  # the paper's "most tasks": 5 of its 8 tasks
# no practical effect: a task metric (accuracy, F1, ROUGE) within 2 points, the gold NLL within
# 0.05 nats per token
MARGIN = {"value": 0.02, "gold_nll": 0.05}
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"


def judge_measure(base: pd.Series) -> str:
    """``"value"`` or ``"gold_nll"``: how a task whose unedited row is ``base`` is judged. Above
    chance means more than two standard errors above it, the standard error over the task's
    examples (``base["examples"]``; NER's sentence, not its 4 prompts)."""
    p, chance = base["value"], base.get("chance", math.nan)
    n = max(int(base.get("examples", base["prompts"])), 1)
    if chance is None or chance != chance:
        chance = 0.0
    above = p > chance + 2 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return "value" if above and p >= FLOOR else "gold_nll"


def unedited_row(records: pd.DataFrame, task: str, protocol: str = "paper") -> pd.Series:
    """The aggregate row of one task's unedited records (what :func:`judge_measure` reads), with
    its number of examples."""
    chance = get_task(task).chance
    return pd.Series({**row_from_records(task, records, protocol), "examples": int(records.example.nunique()),
                      "chance": math.nan if chance is None else chance})


def task_judges(unedited: pd.DataFrame, protocol: str = "paper") -> dict[str, str]:
    """{task: the measure that judges it}, from one ordering's unedited records."""
    return {t: judge_measure(unedited_row(unedited[unedited.task == t], t, protocol))
            for t in dict.fromkeys(unedited.task)}


def by_ordering(records: pd.DataFrame) -> list[pd.DataFrame]:
    """One frame per edit ordering, in ordering order."""
    if "ordering" not in records:
        return [records]
    return [g for _, g in sorted(records.groupby("ordering"), key=lambda kv: kv[0])]


def common_orderings(*parts: pd.DataFrame) -> list:
    """The orderings present in every part (each a chain's records at one point)."""
    sets = [set(p.ordering) for p in parts]
    return sorted(set.intersection(*sets)) if sets else []


@dataclass
class Comparison:
    """One task's damage between two sets of records: ``label`` names the comparison (a method,
    a rescue), ``sample`` holds its per-ordering and per-example damages."""

    label: str
    task: str
    measure: str
    sample: stats.DamageSample


@dataclass
class Judged:
    """A comparison with its family interval and its side (:meth:`helpers.report.stats.Effect.side`)."""

    label: str
    task: str
    measure: str
    effect: stats.Effect
    side: str


def comparisons(after: pd.DataFrame, before: pd.DataFrame, judge: dict[str, str], label: str = "",
                protocol: str = "paper", paired_orderings: bool = True) -> list[Comparison]:
    """Per task of ``judge``: how much worse ``after`` is than ``before`` (records of one point
    each, one or more orderings). ``paired_orderings``: ``before`` holds the same orderings
    (another chain, another checkpoint); else its first ordering serves all (the unedited model)."""
    out = []
    for task, measure in judge.items():
        a = by_ordering(after[after.task == task])
        b = by_ordering(before[before.task == task])
        if not len(a[0]) or not len(b[0]):
            continue
        out.append(Comparison(label, task, measure,
                              stats.damage_sample(a, b if paired_orderings else b[:1], task, protocol, measure)))
    return out


def judge_family(family: list[Comparison], level: float = stats.LEVEL) -> list[Judged]:
    """The family's simultaneous intervals and each comparison's side."""
    effects = stats.intervals([c.sample for c in family], level)
    return [Judged(c.label, c.task, c.measure, e, e.side(MARGIN[c.measure])) for c, e in zip(family, effects)]


def growth(last: list[Comparison], first: list[Comparison]) -> list[Comparison]:
    """Each comparison at the last point minus the same at the first: does the damage grow?"""
    firsts = {(c.label, c.task): c for c in first}
    return [Comparison(c.label, c.task, c.measure, c.sample - firsts[(c.label, c.task)].sample)
            for c in last if (c.label, c.task) in firsts]


def advantage_by_task(theirs: pd.DataFrame, mine: pd.DataFrame, judge: dict[str, str], label: str = "",
                      protocol: str = "paper") -> list[Comparison]:
    """How much more ``theirs`` (the unregularised chain, at one point) is damaged than ``mine``
    (a rescue's chain that edited the same records in the same orderings, at the same point):
    positive = the rescue is better. C8 and the rescues' table both use it."""
    orderings = common_orderings(theirs, mine)
    return comparisons(theirs[theirs.ordering.isin(orderings)], mine[mine.ordering.isin(orderings)], judge, label,
                       protocol)


def majority(sides: list[str]) -> str:
    """Most tasks worse beyond their interval (5 of 8; the same share of another number of
    tasks): holds; so many decided as not worse (better, or within the margin) that a majority
    cannot be reached: does not hold; else inconclusive."""
    total = len(sides)
    if not total:
        return NOT_MEASURED
    need = math.ceil(MAJORITY_SHARE * total - 1e-9)
    worse = sides.count("worse")
    settled_not = sides.count("better") + sides.count("negligible")
    if worse >= need:
        return "holds"
    if settled_not > total - need:
        return "does not hold"
    return INCONCLUSIVE


__all__ = ["FLOOR", "MARGIN", "MAJORITY_SHARE", "INCONCLUSIVE", "NOT_MEASURED", "judge_measure", "unedited_row",
           "task_judges", "by_ordering", "common_orderings", "Comparison", "Judged", "comparisons", "judge_family",
           "growth", "advantage_by_task", "majority"]
