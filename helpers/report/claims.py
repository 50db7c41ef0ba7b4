"""The paper's claims C1–C8 (docs/claims.md) judged on what a ``make reproduce`` run measured.

:func:`evaluate_claims` reads the tables the notebooks wrote under ``figures/<profile>/tables``
(named in :mod:`.tables`) and judges each claim: per claim and method, the effect with its interval
and a verdict (:mod:`.claims_report` writes them into ``claims.md``). Nothing here is tuned: the
rules are fixed below and stated in the report.

Side effects (C1–C4, C8 and the rescues) are judged on the per-example records, paired: the same
examples are read before and after, so each task's damage is an average of per-example changes
(NER: per sentence). A claim's verdict reads a *family* of comparisons — every task of every
method it names — and their intervals are simultaneous at 95% over the family (:mod:`.judge`,
:mod:`.stats`), so the chance that any task is counted on a wrong side stays at 5%, over the
examples, for the edit orderings run; a side is taken only where every ordering agrees. "As edits
grow" is two questions: the damage at the last checkpoint (the *level*, which the verdicts read)
and how much it grew since the first (the *growth*, reported with its own simultaneous intervals).

Which measure judges a task: the paper's metric where the unedited model is above chance on it
(more than two standard errors above the chance level; for the generation tasks, which have no
chance level, a value of at least ``FLOOR``); otherwise the gold answer's NLL (docs/protocol.md),
since a drop from the floor cannot be seen.

Verdicts: *holds* — most tasks (5 of 8) lie wholly on the paper's side of zero; *does not hold*
— so many lie on the other side, or wholly inside the margin of no practical effect
(``MARGIN``), that the paper's side cannot reach most; *inconclusive* — neither, with, per
undecided task, the orderings and examples that would decide it (:func:`helpers.report.sensitivity.needed`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import get_task, row_from_records
from ..editing import BATCH_EDIT_NAMES
from . import coverage, rescues, sensitivity, stats
from .judge import (INCONCLUSIVE, MARGIN, NOT_MEASURED, Comparison, Judged, advantage_by_task, by_ordering,
                    common_orderings, comparisons, growth, judge_family, judge_measure, majority, task_judges)
from .tables import (FIG8_EXAMPLES, RECT_ABLATION_ROWS, SIDE_EFFECTS_EXAMPLES, WEIGHT_CHANGE_TABLE1, read_records,
                     read_table)

PAPER = {
    "C1": "Sequential instance editing (ROME, KN) lowers downstream performance as edits grow (Fig. 3, 9).",
    "C2": "KN drives performance to nearly 0 on all tasks after a single edit (LLaMA-1, Fig. 3).",
    "C3": "Larger batches (MEND, MEMIT, batch-single) lower downstream performance (Fig. 4, 10).",
    "C4": "Batch-sequential editing echoes C1 and C3 (Fig. 11–16).",
    "C5": "A single ROME update is concentrated (~20% of elements with δ > 0.077); the share and the "
          "Manhattan distance grow with the number of edits (Table 1, Fig. 5).",
    "C6": "RECT top-40% keeps ≥ 94% of unregularized reliability and generalization and improves "
          "locality; top-20% hurts editing (Fig. 7, 17).",
    "C7": "RECT top-40% beats Random 40% and PCA 40% on editing performance (Fig. 7).",
    "C8": "RECT preserves downstream performance better than unregularized editing as edits grow, for "
          "most tasks; sentiment is an exception (Fig. 8, 18).",
}


# a batch's two readings (docs/protocol.md): as the paper's released editor edits it, and in one edit
READING_NAMES = {r: f"({name})" for r, name in BATCH_EDIT_NAMES.items()}
READING_NOTES = {
    "C3 (as released)": " As released: the fork's batch_edit applies chunks of the file's batch_size (1 for the "
                        "paper's MEMIT and MEND files) in sequence — what the paper's released code ran.",
    "C3 (joint)": " Joint: one edit over the whole batch (one MEMIT solve, one MEND edit), what batch editing "
                  "means in the methods' papers.",
}


# ---------------------------------------------------------------------------- text
def _fmt(e: stats.Effect) -> str:
    """The estimate, its interval, and — with several orderings — each ordering's own value."""
    text = f"{e.estimate:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"
    if e.orderings > 1:
        text += f" (orderings {' / '.join(f'{p:+.3f}' for p in e.per_ordering)})"
    return text


def _per_task(records: pd.DataFrame) -> str:
    """How many examples each task's records hold: "n = 40 per task" (or the range)."""
    counts = records.groupby("task").example.nunique()
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low} per task" if low == high else f"n = {low}–{high} per task"


def _measure_name(task: str, measure: str) -> str:
    return f"{get_task(task).metric}" if measure == "value" else "NLL"


def _family_text(judged: list[Judged]) -> str:
    if not judged:
        return ""
    e = judged[0].effect
    return f"{len(judged)} intervals simultaneous at {e.level:.0%} (critical value {e.critical:.2f} standard errors)"


def _task_text(results: list[Judged], what: str, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return "; ".join(f"{r.task} ({_measure_name(r.task, r.measure)}) {what} {_fmt(r.effect)}"
                     f"{' — ' + labels.get(r.side, r.side) if r.side != 'unclear' else ''}" for r in results)


def _split(results: list[Judged]) -> str:
    """``", k beyond zero but with the orderings disagreeing in sign"`` (empty when none)."""
    k = sum(r.side == "unclear" and r.effect.beyond_zero for r in results)
    return f", {k} beyond zero but with the orderings disagreeing in sign" if k else ""


def _summary(results: list[Judged]) -> str:
    sides = [r.side for r in results]
    return (f"{sides.count('worse')} of {len(sides)} tasks worse beyond the interval, {sides.count('better')} better, "
            f"{sides.count('negligible')} within the margin{_split(results)}")


def _growth_text(results: list[Judged], first: int, last: int) -> str:
    if not results:
        return ""
    sides = [r.side for r in results]
    return (f" Growth from {first} to {last} edits ({_family_text(results)}): grew on {sides.count('worse')} of "
            f"{len(sides)} tasks, shrank on {sides.count('better')}, within the margin on {sides.count('negligible')}. "
            + _task_text(results, "grew by"))


# ---------------------------------------------------------------------------- sensitivity
# Every judged comparison a claim reads, with what one more ordering of it costs: the rows of
# claims.md's "What would decide the undecided" table.
class Ledger:
    """The undecided comparisons of a report, with what would decide them (:func:`sensitivity.needed`)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.families: dict[str, list[stats.DamageSample]] = {}

    def family(self, claim: str, judged_family: list[Comparison]):
        """Keep the family a claim's verdict reads, for its measured coverage (:meth:`coverage_lines`)."""
        if judged_family:
            self.families[claim] = [c.sample for c in judged_family]

    def coverage_lines(self, runs: int = 1000) -> list[str]:
        """claims.md's table of each family's family-wise error, measured by simulation on its own
        shapes with the effect removed (:func:`helpers.report.coverage.family_error`)."""
        if not self.families:
            return []
        out = ["", "## Measured coverage of the families", "",
               "Each family's chance of any task taking a wrong side, simulated on this run's own per-example damages",
               f"with their effect removed ({runs} simulated runs, docs/statistics.md): what the 5% promise is worth here.",
               "", "| family | intervals | family-wise error | Monte Carlo SE | keeps the 5% promise |", "|---|---|---|---|---|"]
        for claim, samples in self.families.items():
            e = coverage.family_error(samples, "simultaneous", runs=runs, seed=0)
            out.append(f"| {claim} | {len(samples)} | {e.rate:.1%} | {e.mc_se:.1%} | "
                       f"{'yes' if e.keeps_promise else '**no**'} |")
        return out

    def add(self, claim: str, judged: list[Judged], seconds_per_ordering: float, verdict: str):
        """Record each undecided comparison of a claim whose verdict is inconclusive."""
        if verdict != INCONCLUSIVE and not verdict.startswith("mixed"):
            return
        for r in judged:
            if r.side != "unclear":
                continue
            target = abs(r.effect.estimate) if abs(r.effect.estimate) >= MARGIN[r.measure] else MARGIN[r.measure]
            need = sensitivity.needed(r.effect, target)
            self.rows.append({"claim": claim, "comparison": r.label, "task": r.task,
                              "measure": _measure_name(r.task, r.measure), "estimate": r.effect.estimate,
                              "orderings_run": r.effect.orderings, "examples_run": r.effect.examples, **need,
                              "hours_2_cores": need["orderings"] * seconds_per_ordering / 3600
                              if math.isfinite(need["orderings"]) else math.inf})

    def lines(self) -> list[str]:
        if not self.rows:
            return []
        out = ["", "## What would decide the undecided", "",
               "Per undecided task of an inconclusive claim: the spread of its damage between edit orderings and over",
               "examples (variance components of the per-example values, docs/statistics.md), and what would show a",
               "damage of this run's size (or the margin, if smaller) with 80% power as a mean over *new* orderings at",
               "the error each of the family's intervals may spend: the orderings needed at this run's examples, the",
               "examples needed at its orderings (∞: more examples cannot, the orderings' spread alone is too large),",
               "and the time those orderings take on 2 cores (from `make bench`'s seconds per edit and per prompt;",
               f"one GPU: about {sensitivity.GPU_SPEEDUP:.0f}× less, an assumption, not a measurement). Three orderings give",
               "each SD 2 degrees of freedom: read these as orders of magnitude (docs/power.md).", "",
               "| claim | comparison | task | measure | damage | SD between orderings | SD over examples | orderings "
               "needed | examples needed | hours on 2 cores |", "|---|---|---|---|---|---|---|---|---|---|"]

        def num(x, fmt="{:.0f}"):
            return "∞" if not math.isfinite(x) else fmt.format(x)

        for r in self.rows:
            out.append(f"| {r['claim']} | {r['comparison']} | {r['task']} | {r['measure']} | {r['estimate']:+.3f} | "
                       f"{r['sd_orderings']:.3f} | {r['sd_examples']:.3f} | {num(r['orderings'])} (at n = "
                       f"{r['examples_run']}) | {num(r['examples'])} (at {r['orderings_run']} orderings) | "
                       f"{num(r['hours_2_cores'], '{:.1f}')} |")
        return out

    def brief(self, claim: str) -> str:
        """" What would decide it: 12–400 orderings at n = 40 (see below)." for a claim's rows."""
        rows = [r for r in self.rows if r["claim"] == claim]
        if not rows:
            return ""
        k = [r["orderings"] for r in rows]
        finite = [x for x in k if math.isfinite(x)]
        span = (f"{min(finite):.0f}–{max(finite):.0f}" if finite else "∞") + (" (some ∞)" if len(finite) < len(k) and finite else "")
        return f" Undecided tasks would need {span} orderings at n = {rows[0]['examples_run']} (table below)."


# ---------------------------------------------------------------------------- claims
def chain_claim(ex: pd.DataFrame, setting: str, methods, protocol: str = "paper", ledger: Ledger | None = None,
                 claim: str = "C1") -> list[tuple[str, str, str]]:
    """C1 / C4: per method, each task's damage at the chain's last checkpoint against the
    unedited model (the verdict; one family over every method's tasks), and its growth since
    the first checkpoint (reported; a family of its own)."""
    part = ex[(ex.setting == setting) & (ex.how == "none")]
    level, grown, info = [], [], {}
    for method in dict.fromkeys(part.method):
        if method not in methods:
            continue
        c = part[part.method == method]
        points = sorted(p for p in set(c.edits) if p > 0)
        if not points or 0 not in set(c.edits):
            continue
        keep = common_orderings(*(c[c.edits == p] for p in points))
        if not keep:
            continue
        c = c[c.ordering.isin(keep) | (c.edits == 0)]
        unedited = by_ordering(c[c.edits == 0])[0]
        judge = task_judges(unedited, protocol)
        last = c[c.edits == points[-1]]
        level += comparisons(last, unedited, judge, method, protocol, paired_orderings=False)
        if len(points) > 1:
            grown += comparisons(last, c[c.edits == points[0]], judge, method, protocol)
        batch = int(c.batch_size.iloc[0])
        info[method] = (points, len(keep), _per_task(unedited), batch,
                        sensitivity.seconds_per_ordering(method, points[-1] * batch, len(points), int(unedited.groupby(
                            "task").example.nunique().max())))
    judged, growing = judge_family(level), judge_family(grown)
    if ledger is not None:
        ledger.family(claim, level)
    out = []
    for method, (points, k, per_task, batch, seconds) in info.items():
        mine = [r for r in judged if r.label == method]
        verdict = majority([r.side for r in mine])
        if ledger is not None:
            ledger.add(claim, mine, seconds, verdict)
        size = f", batch {batch}" if setting == "batch-sequential" else ""
        text = (f"{method}{size}: checkpoints {', '.join(map(str, points))} edits, {k} ordering(s), {per_task}. "
                f"Damage after {points[-1]} edits ({_family_text(judged)}): {_summary(mine)}. "
                + _task_text(mine, "damage") + "."
                + _growth_text([r for r in growing if r.label == method], points[0], points[-1]))
        out.append((method, text, verdict))
    return out


def claim_c2(ex: pd.DataFrame, protocol: str = "paper", ledger: Ledger | None = None) -> tuple[str, str]:
    c = ex[(ex.method == "KN") & (ex.how == "none") & (ex.setting == "instance-sequential")]
    if c.empty or 1 not in set(c.edits) or 0 not in set(c.edits):
        return "no KN chain in this run", NOT_MEASURED
    unedited = by_ordering(c[c.edits == 0])[0]
    judge = task_judges(unedited, protocol)
    after = c[c.edits == 1]
    family = comparisons(after, unedited, judge, "KN", protocol, paired_orderings=False)
    judged = judge_family(family)
    if ledger is not None:
        ledger.family("C2", family)
    collapsed = on_metric = 0
    for r in judged:
        if r.measure == "value":
            on_metric += 1
            before = row_from_records(r.task, unedited[unedited.task == r.task], protocol)["value"]
            value_after = float(np.mean([row_from_records(r.task, a, protocol)["value"]
                                         for a in by_ordering(after[after.task == r.task])]))
            collapsed += value_after <= 0.2 * before
    sides = [r.side for r in judged]
    text = (f"after one KN edit ({_per_task(unedited)}, {after.ordering.nunique()} ordering(s), {_family_text(judged)}): "
            f"{sides.count('worse')} of {len(sides)} tasks worse; of the {on_metric} judged on the paper's metric, "
            f"{collapsed} fell to ≤ 20% of the unedited value. " + _task_text(judged, "damage"))
    if not sides:
        return text, NOT_MEASURED
    if sides.count("worse") == len(sides) and collapsed == on_metric:
        verdict = "holds"
    elif any(s in ("better", "negligible") for s in sides):
        verdict = "does not hold"
    else:
        verdict = INCONCLUSIVE
    if ledger is not None:
        ledger.add("C2", judged, sensitivity.seconds_per_ordering("KN", 1, 1, judged[0].effect.examples), verdict)
    return text, verdict


def batch_readings(part: pd.DataFrame) -> pd.Series:
    """Each record's reading of a batch (``"chunks"``, ``"joint"``; ``""`` where the records
    predate the column)."""
    if "batch_edit" not in part:
        return pd.Series("", index=part.index)
    return part["batch_edit"].fillna("").astype(str)


def claim_c3(ex: pd.DataFrame, protocol: str = "paper", ledger: Ledger | None = None,
             reading: str | None = None) -> list[tuple[str, str, str]]:
    """Per method, each task's damage in the largest batch beyond the smallest (one edit each;
    one family over every method's tasks), for the batch-single chains of one ``reading`` of a
    batch (None: all; docs/protocol.md, "Batch editing: two readings")."""
    part = ex[(ex.setting == "batch-single") & (ex.how == "none")]
    if reading is not None:
        part = part[batch_readings(part) == reading]
    claim = "C3" if reading is None else f"C3 {READING_NAMES[reading]}"
    family, info = [], {}
    for method in dict.fromkeys(part.method):
        c = part[part.method == method]
        sizes = sorted(set(c[c.edits == 1].batch_size))
        if len(sizes) < 2:
            continue
        keep = common_orderings(*(c[(c.edits == 1) & (c.batch_size == b)] for b in sizes))
        if not keep:
            continue
        c = c[c.ordering.isin(keep)]
        unedited = by_ordering(c[(c.edits == 0) & (c.batch_size == sizes[0])])[0]
        judge = task_judges(unedited, protocol)
        largest, smallest = (c[(c.edits == 1) & (c.batch_size == b)] for b in (sizes[-1], sizes[0]))
        family += comparisons(largest, smallest, judge, method, protocol)
        info[method] = (sizes, len(keep), _per_task(unedited),
                        sensitivity.seconds_per_ordering(method, sizes[-1] + sizes[0], 2, unedited.example.nunique()))
    judged = judge_family(family)
    if ledger is not None:
        ledger.family(claim, family)
    out = []
    for method, (sizes, k, per_task, seconds) in info.items():
        mine = [r for r in judged if r.label == method]
        verdict = majority([r.side for r in mine])
        if ledger is not None:
            ledger.add(claim, mine, seconds, verdict)
        text = (f"{method}: batches of {', '.join(map(str, sizes))} facts, {k} ordering(s), {per_task}. How much more "
                f"damage a batch of {sizes[-1]} facts does than a batch of {sizes[0]} ({_family_text(judged)}): "
                f"{_summary(mine)}. " + _task_text(mine, "damage"))
        out.append((method, text, verdict))
    return out


def claim_c5(table1: pd.DataFrame) -> tuple[str, str]:
    t = table1.sort_values("edits")
    share = [c for c in t.columns if c.startswith("share_above_0.077")][0]
    first = t.iloc[0]
    grows = bool((t.manhattan.diff().dropna() > 0).all() and (t[share].diff().dropna() > 0).all())
    sd = f" ± {first[share + '_sd']:.1f}" if f"{share}_sd" in t and first[f"{share}_sd"] == first[f"{share}_sd"] else ""
    text = (f"single edit ({first.source}): {first[share]:.1f}%{sd} of elements with δ > 0.077 (paper 20.0%), "
            f"Manhattan {first.manhattan:.1f}; over {', '.join(str(int(e)) for e in t.edits)} sequential edits: "
            f"Manhattan {' → '.join(f'{v:.0f}' for v in t.manhattan)}, share "
            f"{' → '.join(f'{v:.1f}%' for v in t[share])}")
    if len(t) < 2:
        return text, INCONCLUSIVE
    return text, "holds" if grows else "does not hold"


def _pair(rows: pd.DataFrame, method: str, a: str, b: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` of regularisers ``a`` and ``b`` on the same edits of ``method``."""
    x = rows[(rows.method == method) & (rows.regularizer == a)].set_index("case_id")[metric]
    y = rows[(rows.method == method) & (rows.regularizer == b)].set_index("case_id")[metric]
    common = x.index.intersection(y.index)
    return x[common].to_numpy(dtype=float), y[common].to_numpy(dtype=float)


def _side(low: float, high: float, threshold: float = 0.0, margin: float = 0.0) -> str:
    """Where an interval lies against ``threshold``: within ±margin (tested first, as for the
    side effects), above, below, or unclear."""
    if margin and threshold - margin < low and high < threshold + margin:
        return "within"
    if low > threshold:
        return "above"
    if high < threshold:
        return "below"
    return "unclear"


def claim_c6(rows: pd.DataFrame) -> tuple[str, str]:
    """Per method: RECT 40% over unregularised reliability and generalization (ratio of means,
    paired by edit) at least 0.94; locality with RECT 40% not lower; RECT 20% lowers
    reliability. Each part's interval decides it; the claim holds when every part does."""
    parts, verdicts = [], []
    if rows.empty:
        return "no regularizer ablation in this run", NOT_MEASURED
    for method in dict.fromkeys(rows.method):
        decided = []
        text = []
        for metric in ("reliability", "generalization"):
            r, u = _pair(rows, method, "RECT 40%", "Unregularized", metric)
            est, low, high = stats.ratio_interval(r, u)
            side = _side(low, high, 0.94)
            decided.append("holds" if side == "above" else "does not hold" if side == "below" else INCONCLUSIVE)
            text.append(f"RECT 40% keeps {est:.1%} [{low:.1%}, {high:.1%}] of {metric}")
        r, u = _pair(rows, method, "RECT 40%", "Unregularized", "locality")
        est, low, high = stats.paired_mean_interval(r - u)
        side = _side(low, high, 0.0, MARGIN["value"])
        decided.append("holds" if side == "above" else "does not hold" if side in ("below", "within") else INCONCLUSIVE)
        text.append(f"locality {u.mean():.3f} → {r.mean():.3f} (change {est:+.3f} [{low:+.3f}, {high:+.3f}])")
        r20, u20 = _pair(rows, method, "RECT 20%", "Unregularized", "reliability")
        est, low, high = stats.paired_mean_interval(u20 - r20)
        side = _side(low, high, 0.0, MARGIN["value"])
        decided.append("holds" if side == "above" else "does not hold" if side in ("below", "within") else INCONCLUSIVE)
        text.append(f"RECT 20% costs {est:+.3f} [{low:+.3f}, {high:+.3f}] of reliability")
        verdict = ("holds" if all(d == "holds" for d in decided) else
                   "does not hold" if "does not hold" in decided else INCONCLUSIVE)
        verdicts.append(verdict)
        parts.append(f"{method} (n = {len(r)} edits; 95% intervals): " + ", ".join(text) + f" → {verdict}")
    return "; ".join(parts), _combine(verdicts)


def claim_c7(rows: pd.DataFrame) -> tuple[str, str]:
    """RECT 40% minus Random 40% and PCA 40%, paired by edit, on reliability and
    generalization; Bonferroni over the comparisons. Holds when every difference is above
    zero; does not hold when any is below (or within the margin)."""
    comparisons = [(m, o, metric) for m in dict.fromkeys(rows.method) for o in ("Random 40%", "PCA 40%")
                   for metric in ("reliability", "generalization")]
    if not comparisons:
        return "no regularizer ablation in this run", NOT_MEASURED
    level = stats.bonferroni(stats.LEVEL, len(comparisons))
    parts, sides = [], []
    for method, other, metric in comparisons:
        r, o = _pair(rows, method, "RECT 40%", other, metric)
        est, low, high = stats.paired_mean_interval(r - o, level=level)
        sides.append(_side(low, high, 0.0, MARGIN["value"]))
        parts.append(f"{method} {metric}: RECT {r.mean():.3f} vs {other} {o.mean():.3f} (difference {est:+.3f} "
                     f"[{low:+.3f}, {high:+.3f}], n = {len(r)})")
    verdict = ("holds" if sides.count("above") == len(sides) else
               "does not hold" if any(s in ("below", "within") for s in sides) else INCONCLUSIVE)
    return (f"RECT ahead beyond the interval in {sides.count('above')} of {len(sides)} comparisons ({level:.2%} "
            "intervals). " + "; ".join(parts)), verdict


def claim_c8(ex: pd.DataFrame, protocol: str = "paper", ledger: Ledger | None = None) -> tuple[str, str]:
    """Per task: how much more the unregularised chain is damaged than the RECT 40% chain that
    edited the same records, at the last checkpoint (paired by example and ordering; the verdict),
    and how much that advantage grew since the first checkpoint (reported)."""
    none = ex[ex.how == "none"]
    rect = ex[(ex.how == "rect") & (ex.k.round(2) == 0.4)]
    points = sorted(set(rect.edits) & set(none.edits) - {0})
    if none.empty or rect.empty or not points or 0 not in set(none.edits):
        return "no unregularized and RECT 40% chains in this run", NOT_MEASURED
    orderings = common_orderings(*(x[x.edits == p] for p in points for x in (none, rect)))
    if not orderings:
        return "the unregularized and RECT 40% chains share no edit ordering at every checkpoint", NOT_MEASURED
    none, rect = none[none.ordering.isin(orderings) | (none.edits == 0)], rect[rect.ordering.isin(orderings)]
    unedited = by_ordering(none[none.edits == 0])[0]
    judge = task_judges(unedited, protocol)
    at = {p: advantage_by_task(none[none.edits == p], rect[rect.edits == p], judge, "RECT 40%", protocol)
          for p in (points[0], points[-1])}
    judged = judge_family(at[points[-1]])
    if ledger is not None:
        ledger.family("C8", at[points[-1]])
    growing = judge_family(growth(at[points[-1]], at[points[0]])) if len(points) > 1 else []
    verdict = majority([r.side for r in judged])
    if ledger is not None:
        ledger.add("C8", judged, 2 * sensitivity.seconds_per_ordering("ROME", points[-1], len(points),
                                                                unedited.example.nunique()), verdict)
    sides = [r.side for r in judged]
    text = (f"checkpoints {', '.join(map(str, points))} edits, {len(orderings)} ordering(s), {_per_task(unedited)} "
            f"({_family_text(judged)}). How much more the unregularized chain is damaged than RECT 40%'s after "
            f"{points[-1]} edits (positive: RECT better): RECT better on {sides.count('worse')} of {len(sides)} tasks, "
            f"worse on {sides.count('better')}, within the margin on {sides.count('negligible')}{_split(judged)}. "
            + _task_text(judged, "RECT's advantage", stats.comparison_sides("RECT")) + "."
            + (_growth_text(growing, points[0], points[-1]).replace("grew by", "advantage grew by")
               if growing else ""))
    return text, verdict


# ---------------------------------------------------------------------------- beyond RECT (notebook 05)
def rescue_claims(ex: pd.DataFrame, editing: pd.DataFrame | None = None, windows: pd.DataFrame | None = None,
                  protocol: str = "paper", ledger: Ledger | None = None, label: str = "rescue") -> list[dict]:
    """Per rescue (a variant whose family — :func:`helpers.report.rescues.family` — also ran):
    does it preserve the tasks better than its family's unregularised chain on the same records,
    at the last checkpoint both reach (paired by example and ordering; a family of one interval
    per task, the same computation as C8: :func:`helpers.report.judge.advantage_by_task`), the
    held-out perplexity likewise (one interval), and what it costs the edits (each editing
    metric's change, paired by record). Verdict on the tasks: *holds* (better on most tasks),
    *does not hold*, *inconclusive*, with the same rules as the paper's claims. ``label`` names the
    claims in the ledger (``"<label> <variant>"``: notebook 05's and the horizon's stay apart)."""
    out = []
    for variant in dict.fromkeys(ex.variant):
        base = rescues.family(variant)
        if base == variant or base not in set(ex.variant):
            continue
        mine, theirs = ex[ex.variant == variant], ex[ex.variant == base]
        points = sorted(set(mine.edited_facts) & set(theirs.edited_facts) - {0})
        orderings = common_orderings(*(x[x.edited_facts == p] for p in points for x in (mine, theirs)))
        unedited = theirs[theirs.edited_facts == 0]
        if not points or not orderings or unedited.empty:
            out.append({"rescue": variant, "family": base, "verdict": NOT_MEASURED, "tasks": "no common checkpoints"})
            continue
        mine, theirs = mine[mine.ordering.isin(orderings)], theirs[theirs.ordering.isin(orderings)]
        first = by_ordering(unedited)[0]
        judge = task_judges(first, protocol)
        family = advantage_by_task(theirs[theirs.edited_facts == points[-1]], mine[mine.edited_facts == points[-1]],
                                   judge, variant, protocol)
        judged = judge_family(family)
        if ledger is not None:
            ledger.family(f"{label} {variant}", family)
        sides = [r.side for r in judged]
        verdict = majority(sides)
        if ledger is not None:
            ledger.add(f"{label} {variant}", judged, sensitivity.seconds_per_ordering(variant, points[-1], len(points),
                                                                               first.example.nunique())
                       + sensitivity.seconds_per_ordering(base, points[-1], len(points), first.example.nunique()), verdict)
        line = {"rescue": variant, "family": base, "facts": points[-1], "orderings": len(orderings),
                "verdict": verdict,
                "tasks": f"better on {sides.count('worse')} of {len(sides)}, worse on {sides.count('better')}, "
                         f"within the margin on {sides.count('negligible')}{_split(judged)}",
                "detail": _task_text(judged, "advantage", rescues.SIDES)}
        if windows is not None and variant in set(windows.variant):
            held = rescues.heldout_as_task_records(windows[windows.ordering.isin(orderings)])
            at = held[held.edited_facts == points[-1]]
            e = stats.paired_damage(by_ordering(at[at.variant == base]), by_ordering(at[at.variant == variant]),
                                    "heldout", protocol, "gold_nll")
            line["heldout"] = f"{_fmt(e)} — {rescues.SIDES[e.side(MARGIN['gold_nll'])]}"
        if editing is not None and variant in set(editing.variant):
            for metric, (est, low, high) in rescues.editing_cost(editing, variant, base, points[-1]).items():
                line[metric] = f"{est:+.3f} [{low:+.3f}, {high:+.3f}]"
        out.append(line)
    return out


# ---------------------------------------------------------------------------- all claims
def evaluate_claims(out_dir: str | Path, protocol: str = "paper", ledger: Ledger | None = None) -> list[dict]:
    """One dict per claim: ``claim``, ``paper``, ``measured``, ``verdict``, from the tables a
    run wrote to ``out_dir``; the undecided comparisons go to ``ledger``."""
    side, t1 = read_records(out_dir, SIDE_EFFECTS_EXAMPLES), read_table(out_dir, WEIGHT_CHANGE_TABLE1)
    abl, f8 = read_table(out_dir, RECT_ABLATION_ROWS), read_records(out_dir, FIG8_EXAMPLES)
    out = []

    def add(claim, measured, verdict):
        if ledger is not None and verdict != "holds":
            measured += ledger.brief(claim)
        out.append({"claim": claim, "paper": PAPER[claim.split(" ")[0]] + READING_NOTES.get(claim, ""),
                    "measured": measured, "verdict": verdict})

    missing = ("not measured in this run (no per-example records: run `make reproduce`)", NOT_MEASURED)
    if side is not None and len(side):
        c1 = chain_claim(side, "instance-sequential", ("ROME", "KN"), protocol, ledger, "C1")
        add("C1", "<br>".join(s for _, s, _ in c1) or missing[0], _combine([v for _, _, v in c1]))
        add("C2", *claim_c2(side, protocol, ledger))
        batch = side[side.setting == "batch-single"]
        readings = [r for r in READING_NAMES if r in set(batch_readings(batch))]
        if len(readings) > 1:  # both readings of a batch ran: C3 under each, side by side
            for r in readings:
                c3 = claim_c3(side, protocol, ledger, reading=r)
                add(f"C3 {READING_NAMES[r]}", "<br>".join(s for _, s, _ in c3) or missing[0],
                    _combine([v for _, _, v in c3]))
        else:
            c3 = claim_c3(side, protocol, ledger)
            add("C3", "<br>".join(s for _, s, _ in c3) or missing[0], _combine([v for _, _, v in c3]))
        c4 = chain_claim(side, "batch-sequential", ("MEMIT", "MEND"), protocol, ledger, "C4")
        add("C4", "<br>".join(s for _, s, _ in c4) or missing[0], _combine([v for _, _, v in c4]))
    else:
        for c in ("C1", "C2", "C3", "C4"):
            add(c, *missing)
    add("C5", *(claim_c5(t1) if t1 is not None and len(t1) else missing))
    add("C6", *(claim_c6(abl) if abl is not None else missing))
    add("C7", *(claim_c7(abl) if abl is not None else missing))
    add("C8", *(claim_c8(f8, protocol, ledger) if f8 is not None and len(f8) else missing))
    return out


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return NOT_MEASURED
    if all(v == "holds" for v in verdicts):
        return "holds"
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return "mixed: " + ", ".join(verdicts)


__all__ = ["evaluate_claims", "batch_readings", "READING_NAMES", "chain_claim", "claim_c2", "claim_c3", "claim_c5", "claim_c6", "claim_c7", "claim_c8",
           "rescue_claims", "judge_measure", "Ledger", "MARGIN", "PAPER"]
