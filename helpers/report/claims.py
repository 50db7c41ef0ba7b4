"""The paper's claims C1–C8 (docs/claims.md) checked against what a ``make reproduce`` run measured.

:func:`write_claims` reads the tables the notebooks wrote under ``figures/<profile>/tables``
(named in :mod:`.tables`) and writes ``claims.md`` beside them: per claim and method, the effect
with its interval and a verdict. Nothing here is tuned: the rules are fixed below and stated in
the report.

Side effects (C1–C4, C8) are judged on the per-prompt records, paired: the same examples are
read before and after, so each task's damage is an average of per-example changes, with a 95%
interval over examples for the edit orderings run, a side taken only where every ordering agrees
(:mod:`.stats`). "As edits grow" is the trend over
the checkpoints (the damage the least-squares line reaches at the last checkpoint), not one
endpoint. A claim about most of the 8 tasks uses Bonferroni-adjusted intervals (level
1 − 0.05/8 each), so that the chance of any task counted wrongly stays below 5% — over the
examples, for the edit orderings run (docs/statistics.md).

Which measure judges a task: the paper's metric where the unedited model is above chance on it
(more than two standard errors above the chance level; for the generation tasks, which have no
chance level, a value of at least ``FLOOR``); otherwise the gold answer's NLL (docs/protocol.md),
since a drop from the floor cannot be seen.

Verdicts: *holds* — the interval lies wholly on the paper's side of zero; *does not hold* —
wholly on the other side, or wholly inside the margin of no practical effect (``MARGIN``);
*inconclusive* — neither, reported with the smallest effect this run could have seen.

The later rescues (notebook 05) get a section of their own, judged by the same rules: each
against the unregularised chain of its family on the same records (:func:`rescue_claims`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import get_task, row_from_records
from . import rescues, stats
from .tables import (FIG8_EXAMPLES, RECT_ABLATION_ROWS, RESCUE_EDITING, RESCUE_EXAMPLES, RESCUE_WINDOWS,
                     SIDE_EFFECTS_EXAMPLES, WEIGHT_CHANGE_TABLE1, read_records, read_table)

FLOOR = 0.05  # a generation metric below this is at the floor: judged on gold_nll
MAJORITY = 5  # tasks out of 8 that must move for a "most tasks" claim to hold
# no practical effect: a task metric (accuracy, F1, ROUGE) within 2 points, the gold NLL within
# 0.05 nats per token, a ratio of editing scores within 2% of the paper's threshold
MARGIN = {"value": 0.02, "gold_nll": 0.05}
LEVEL = 0.95

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
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"


# ---------------------------------------------------------------------------- per task
def judge_measure(base: pd.Series) -> str:
    """``"value"`` or ``"gold_nll"``: how a task whose unedited row is ``base`` is judged."""
    p, n, chance = base["value"], max(int(base["prompts"]), 1), base.get("chance", math.nan)
    if chance is None or chance != chance:
        chance = 0.0
    above = p > chance + 2 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return "value" if above and p >= FLOOR else "gold_nll"


def unedited_row(records: pd.DataFrame, task: str, protocol: str = "paper") -> pd.Series:
    """The aggregate row of one task's unedited records (what :func:`judge_measure` reads)."""
    chance = get_task(task).chance
    return pd.Series({**row_from_records(task, records, protocol), "chance": math.nan if chance is None else chance})


def _judges(unedited: pd.DataFrame, protocol: str) -> dict[str, str]:
    """{task: the measure that judges it}, from one ordering's unedited records."""
    return {t: judge_measure(unedited_row(unedited[unedited.task == t], t, protocol))
            for t in dict.fromkeys(unedited.task)}


def _orderings(records: pd.DataFrame) -> list[pd.DataFrame]:
    """One frame per edit ordering, in ordering order."""
    if "ordering" not in records:
        return [records]
    return [g for _, g in sorted(records.groupby("ordering"), key=lambda kv: kv[0])]


def _level(tasks: int) -> float:
    return stats.bonferroni(LEVEL, tasks)


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


def _majority(sides: list[str]) -> str:
    """Most tasks worse beyond their interval: holds; so many decided as not worse (better,
    or within the margin) that a majority cannot be reached: does not hold; else inconclusive."""
    total = len(sides)
    if not total:
        return NOT_MEASURED
    need = min(MAJORITY, total)
    worse = sides.count("worse")
    settled_not = sides.count("better") + sides.count("negligible")
    if worse >= need:
        return "holds"
    if settled_not > total - need:
        return "does not hold"
    return INCONCLUSIVE


def _trend_by_task(after: dict[float, pd.DataFrame], before, protocol: str, judge: dict[str, str],
                   level: float, origin: float = 0.0) -> list[dict]:
    """Per task: the damage trend over the checkpoints of ``after`` ({checkpoint: records})
    against ``before`` (records, or {checkpoint: records}), read at the last checkpoint."""
    out = []
    last = max(after)
    for task in dict.fromkeys(after[last].task):
        measure = judge[task]
        a = {c: _orderings(r[r.task == task]) for c, r in after.items()}
        b = ({c: _orderings(r[r.task == task]) for c, r in before.items()} if isinstance(before, dict)
             else _orderings(before[before.task == task])[:1])
        trend = stats.damage_trend(a, b, task, protocol, measure, level=level, origin=origin)
        out.append({"task": task, "measure": measure, "trend": trend, "side": trend.side(MARGIN[measure])})
    return out


def _common_orderings(*parts: pd.DataFrame) -> list:
    """The orderings present in every part (each a chain's records at one checkpoint)."""
    sets = [set(p.ordering) for p in parts]
    return sorted(set.intersection(*sets)) if sets else []


def _task_text(results: list[dict], what: str, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return "; ".join(f"{r['task']} ({_measure_name(r['task'], r['measure'])}) {what} {_fmt(r['trend'])}"
                     f"{' — ' + labels.get(r['side'], r['side']) if r['side'] != 'unclear' else ''}" for r in results)


def _split(results: list[dict]) -> str:
    """``", k beyond zero but with the orderings disagreeing in sign"`` (empty when none)."""
    k = sum(r["side"] == "unclear" and r["trend"].beyond_zero for r in results)
    return f", {k} beyond zero but with the orderings disagreeing in sign" if k else ""


def _summary(results: list[dict], verdict: str) -> str:
    sides = [r["side"] for r in results]
    text = (f"{sides.count('worse')} of {len(sides)} tasks worse beyond the interval, {sides.count('better')} better, "
            f"{sides.count('negligible')} within the margin{_split(results)}")
    if verdict == INCONCLUSIVE:
        seen = [r["trend"].detectable() for r in results if r["side"] == "unclear"]
        text += (f"; the smallest damage this run could have seen (80% power) on the undecided tasks: "
                 f"{min(seen):.3f}–{max(seen):.3f}" if seen else "")
    return text


# ---------------------------------------------------------------------------- claims
def _chain_claim(ex: pd.DataFrame, setting: str, methods, protocol: str) -> list[tuple[str, str, str]]:
    """C1 / C4: per method, the trend of each task's damage over the chain's checkpoints."""
    out = []
    part = ex[(ex.setting == setting) & (ex.how == "none")]
    for method in dict.fromkeys(part.method):
        if method not in methods:
            continue
        c = part[part.method == method]
        points = sorted(p for p in set(c.edits) if p > 0)
        if not points or 0 not in set(c.edits):
            continue
        keep = _common_orderings(*(c[c.edits == p] for p in points))
        if not keep:
            continue
        c = c[c.ordering.isin(keep) | (c.edits == 0)]
        base = c[c.edits == 0]
        first = _orderings(base)[0]
        judge = _judges(first, protocol)
        after = {p: c[c.edits == p] for p in points}
        level = _level(len(judge))
        res = _trend_by_task(after, base, protocol, judge, level)
        verdict = _majority([r["side"] for r in res])
        size = f", batch {int(c.batch_size.iloc[0])}" if setting == "batch-sequential" else ""
        head = (f"{method}{size}: checkpoints {', '.join(map(str, points))} edits, {len(keep)} "
                f"ordering(s), {_per_task(first)}. Damage the trend reaches after {points[-1]} "
                f"edits ({level:.2%} intervals): {_summary(res, verdict)}. ")
        out.append((method, head + _task_text(res, "damage"), verdict))
    return out


def claim_c2(ex: pd.DataFrame, protocol: str = "paper") -> tuple[str, str]:
    c = ex[(ex.method == "KN") & (ex.how == "none") & (ex.setting == "instance-sequential")]
    if c.empty or 1 not in set(c.edits) or 0 not in set(c.edits):
        return "no KN chain in this run", NOT_MEASURED
    first = _orderings(c[c.edits == 0])[0]
    tasks = list(dict.fromkeys(first.task))
    level = _level(len(tasks))
    parts, sides, collapsed, on_metric = [], [], 0, 0
    for t in tasks:
        row = unedited_row(first[first.task == t], t, protocol)
        measure = judge_measure(row)
        if c[(c.edits == 1) & (c.task == t)].empty:
            continue
        after = _orderings(c[(c.edits == 1) & (c.task == t)])
        eff = stats.paired_damage(after, first[first.task == t], t, protocol, measure, level=level)
        sides.append(eff.side(MARGIN[measure]))
        if measure == "value":
            on_metric += 1
            value_after = float(np.mean([row_from_records(t, a, protocol)["value"] for a in after]))
            collapsed += value_after <= 0.2 * row["value"]
        parts.append(f"{t} ({_measure_name(t, measure)}) damage {_fmt(eff)}")
    text = (f"after one KN edit ({_per_task(first)}, {c.ordering.nunique()} ordering(s), "
            f"{level:.2%} intervals): {sides.count('worse')} of {len(sides)} tasks worse; of the {on_metric} judged on "
            f"the paper's metric, {collapsed} fell to ≤ 20% of the unedited value. " + "; ".join(parts))
    if not sides:
        return text, NOT_MEASURED
    if sides.count("worse") == len(sides) and collapsed == on_metric:
        return text, "holds"
    if any(s in ("better", "negligible") for s in sides):
        return text, "does not hold"
    return text, INCONCLUSIVE


def claim_c3(ex: pd.DataFrame, protocol: str = "paper") -> list[tuple[str, str, str]]:
    """Per method, the trend of each task's damage over the batch sizes (one edit each)."""
    out = []
    part = ex[(ex.setting == "batch-single") & (ex.how == "none")]
    for method in dict.fromkeys(part.method):
        c = part[part.method == method]
        sizes = sorted(set(c[c.edits == 1].batch_size))
        if len(sizes) < 2:
            continue
        keep = _common_orderings(*(c[(c.edits == 1) & (c.batch_size == b)] for b in sizes))
        if not keep:
            continue
        c = c[c.ordering.isin(keep)]
        base = c[(c.edits == 0) & (c.batch_size == sizes[0])]
        first = _orderings(base)[0]
        judge = _judges(first, protocol)
        smallest = c[(c.edits == 1) & (c.batch_size == sizes[0])]
        # the claim is that damage grows with the batch: each larger batch against the smallest
        after = {int(b): c[(c.edits == 1) & (c.batch_size == b)] for b in sizes[1:]}
        level = _level(len(judge))
        res = _trend_by_task(after, {b: smallest for b in after}, protocol, judge, level, origin=sizes[0])
        verdict = _majority([r["side"] for r in res])
        head = (f"{method}: batches of {', '.join(map(str, sizes))} facts, {len(keep)} ordering(s), "
                f"{_per_task(first)}. How much more damage the trend over batch size reaches at "
                f"{sizes[-1]} facts than at {sizes[0]} ({level:.2%} intervals): {_summary(res, verdict)}. ")
        out.append((method, head + _task_text(res, "damage"), verdict))
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
    """Where an interval lies against ``threshold``: above, below, within ±margin, or unclear."""
    if low > threshold:
        return "above"
    if margin and threshold - margin < low and high < threshold + margin:
        return "within"
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
    level = stats.bonferroni(LEVEL, len(comparisons))
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


def claim_c8(ex: pd.DataFrame, protocol: str = "paper") -> tuple[str, str]:
    """Per task: how much more the unregularised chain is damaged than the RECT 40% chain that
    edited the same records (paired by example and ordering), as a trend over the checkpoints."""
    none = ex[ex.how == "none"]
    rect = ex[(ex.how == "rect") & (ex.k.round(2) == 0.4)]
    points = sorted(set(rect.edits) & set(none.edits) - {0})
    if none.empty or rect.empty or not points or 0 not in set(none.edits):
        return "no unregularized and RECT 40% chains in this run", NOT_MEASURED
    orderings = _common_orderings(*(x[x.edits == p] for p in points for x in (none, rect)))
    if not orderings:
        return "the unregularized and RECT 40% chains share no edit ordering at every checkpoint", NOT_MEASURED
    none, rect = none[none.ordering.isin(orderings) | (none.edits == 0)], rect[rect.ordering.isin(orderings)]
    base = none[none.edits == 0]
    first = _orderings(base)[0]
    judge = _judges(first, protocol)
    level = _level(len(judge))
    res = _trend_by_task({p: none[none.edits == p] for p in points}, {p: rect[rect.edits == p] for p in points},
                         protocol, judge, level)
    verdict = _majority([r["side"] for r in res])
    sides = [r["side"] for r in res]
    text = (f"checkpoints {', '.join(map(str, points))} edits, {len(orderings)} ordering(s), "
            f"{_per_task(first)} ({level:.2%} intervals). How much more the unregularized chain is "
            f"damaged than RECT 40%'s by {points[-1]} edits (positive: RECT better): RECT better on "
            f"{sides.count('worse')} of {len(sides)} tasks, worse on {sides.count('better')}, within the margin on "
            f"{sides.count('negligible')}{_split(res)}. "
            + _task_text(res, "RECT's advantage", stats.comparison_sides("RECT")))
    return text, verdict


# ---------------------------------------------------------------------------- beyond RECT (notebook 05)
def rescue_claims(ex: pd.DataFrame, editing: pd.DataFrame | None = None, windows: pd.DataFrame | None = None,
                  protocol: str = "paper") -> list[dict]:
    """Per rescue (a variant whose family — :func:`helpers.report.rescues.family` — also ran):
    does it preserve the tasks better than its family's unregularised chain on the same records
    (the damage difference's trend over the checkpoints, paired by example and ordering, as C8),
    the held-out perplexity likewise, and what it costs the edits (each editing metric's change,
    paired by record, at the last checkpoint). Verdict on the tasks: *holds* (better on most
    tasks), *does not hold*, *inconclusive*, with the same rules as the paper's claims."""
    out = []
    for variant in dict.fromkeys(ex.variant):
        base = rescues.family(variant)
        if base == variant or base not in set(ex.variant):
            continue
        mine, theirs = ex[ex.variant == variant], ex[ex.variant == base]
        points = sorted(set(mine.edited_facts) & set(theirs.edited_facts) - {0})
        orderings = _common_orderings(*(x[x.edited_facts == p] for p in points for x in (mine, theirs)))
        unedited = theirs[theirs.edited_facts == 0]
        if not points or not orderings or unedited.empty:
            out.append({"rescue": variant, "family": base, "verdict": NOT_MEASURED, "tasks": "no common checkpoints"})
            continue
        mine, theirs = mine[mine.ordering.isin(orderings)], theirs[theirs.ordering.isin(orderings)]
        judge = _judges(_orderings(unedited)[0], protocol)
        level = _level(len(judge))
        res = _trend_by_task({p: theirs[theirs.edited_facts == p] for p in points},
                             {p: mine[mine.edited_facts == p] for p in points}, protocol, judge, level)
        sides = [r["side"] for r in res]
        line = {"rescue": variant, "family": base, "facts": points[-1], "orderings": len(orderings),
                "verdict": _majority(sides),
                "tasks": f"better on {sides.count('worse')} of {len(sides)}, worse on {sides.count('better')}, "
                         f"within the margin on {sides.count('negligible')}{_split(res)}",
                "detail": _task_text(res, "advantage", rescues.SIDES)}
        if windows is not None and variant in set(windows.variant):
            held = rescues.heldout_records(windows[windows.ordering.isin(orderings)])
            a = {p: _orderings(held[(held.variant == base) & (held.edited_facts == p)]) for p in points}
            b = {p: _orderings(held[(held.variant == variant) & (held.edited_facts == p)]) for p in points}
            trend = stats.damage_trend(a, b, "heldout", protocol, "gold_nll")
            line["heldout"] = f"{_fmt(trend)} — {rescues.SIDES[trend.side(MARGIN['gold_nll'])]}"
        if editing is not None and variant in set(editing.variant):
            for metric, (est, low, high) in rescues.editing_cost(editing, variant, base, points[-1]).items():
                line[metric] = f"{est:+.3f} [{low:+.3f}, {high:+.3f}]"
        out.append(line)
    return out


def rescue_section(out_dir: str | Path, protocol: str = "paper") -> list[str]:
    """The "Beyond RECT" section of claims.md (empty when notebook 05 did not run)."""
    ex = read_records(out_dir, RESCUE_EXAMPLES)
    if ex is None or not len(ex):
        return []
    found = rescue_claims(ex, read_records(out_dir, RESCUE_EDITING), read_records(out_dir, RESCUE_WINDOWS), protocol)
    lines = ["", "## Beyond RECT: which rescue preserves what, at what cost in editing performance", "",
             "Notebook 05: every rescue against the unregularised chain of its family (ROME for RECT, PRUNE and",
             "r-ROME; MEMIT for AlphaEdit) that edited the same records in the same orderings. *Preserves*: the damage",
             "the family's chain takes beyond the rescue's, per task, as the trend over the checkpoints reaches the",
             "last one (positive = the rescue is better; Bonferroni over the tasks; the verdict's rules are the",
             "claims'). Held-out: the same for the NLL per token of the held-out text (the log of its perplexity).",
             "Editing: the rescue's reliability, generalization and locality minus the family's over the same",
             "edited records at the last checkpoint (negative = the rescue keeps less of its edits), 95% intervals.",
             "", "| rescue | vs | facts | preserves the tasks | tasks | held-out NLL advantage | reliability | "
             "generalization | locality |", "|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r['rescue']} | {r['family']} | {r.get('facts', '')} | **{r['verdict']}** | {r['tasks']} | "
                     f"{r.get('heldout', '')} | {r.get('reliability', '')} | {r.get('generalization', '')} | "
                     f"{r.get('locality', '')} |")
    details = [f"- {r['rescue']}: {r['detail']}" for r in found if r.get("detail")]
    return lines + ([""] + details if details else [])


# ---------------------------------------------------------------------------- report
def evaluate_claims(out_dir: str | Path, protocol: str = "paper") -> list[dict]:
    """One dict per claim: ``claim``, ``paper``, ``measured``, ``verdict``, from the tables a
    run wrote to ``out_dir``."""
    side, t1 = read_records(out_dir, SIDE_EFFECTS_EXAMPLES), read_table(out_dir, WEIGHT_CHANGE_TABLE1)
    abl, f8 = read_table(out_dir, RECT_ABLATION_ROWS), read_records(out_dir, FIG8_EXAMPLES)
    out = []

    def add(claim, measured, verdict):
        out.append({"claim": claim, "paper": PAPER[claim], "measured": measured, "verdict": verdict})

    missing = ("not measured in this run (no per-example records: run `make reproduce`)", NOT_MEASURED)
    if side is not None and len(side):
        c1 = _chain_claim(side, "instance-sequential", ("ROME", "KN"), protocol)
        add("C1", "<br>".join(s for _, s, _ in c1) or missing[0], _combine([v for _, _, v in c1]))
        add("C2", *claim_c2(side, protocol))
        c3 = claim_c3(side, protocol)
        add("C3", "<br>".join(s for _, s, _ in c3) or missing[0], _combine([v for _, _, v in c3]))
        c4 = _chain_claim(side, "batch-sequential", ("MEMIT", "MEND"), protocol)
        add("C4", "<br>".join(s for _, s, _ in c4) or missing[0], _combine([v for _, _, v in c4]))
    else:
        for c in ("C1", "C2", "C3", "C4"):
            add(c, *missing)
    add("C5", *(claim_c5(t1) if t1 is not None and len(t1) else missing))
    add("C6", *(claim_c6(abl) if abl is not None else missing))
    add("C7", *(claim_c7(abl) if abl is not None else missing))
    add("C8", *(claim_c8(f8, protocol) if f8 is not None and len(f8) else missing))
    return out


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return NOT_MEASURED
    if all(v == "holds" for v in verdicts):
        return "holds"
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return "mixed: " + ", ".join(verdicts)


def write_claims(out_dir: str | Path, profile: str = "") -> Path:
    """``<out_dir>/claims.md`` from ``<out_dir>/tables``; returns its path."""
    out_dir = Path(out_dir)
    claims = evaluate_claims(out_dir)
    lines = [f"# The paper's claims on this run{f' (profile {profile})' if profile else ''}", "",
             "Written by `make reproduce` from the tables in `tables/` (helpers/report/claims.py; the rules are in",
             "docs/claims.md and docs/statistics.md). Side effects are compared per example (the same prompts before",
             "and after): the mean damage over the edit orderings, with an interval from a bootstrap over examples, each",
             "ordering's own damage in brackets; a task takes a side only when every ordering agrees in sign. The",
             "verdicts are about these edit sequences on these examples. A damage is positive when the model got",
             "worse. A task is judged on the paper's metric where the unedited model is above chance on it",
             f"(generation tasks: at least {FLOOR}), otherwise on the gold answer's NLL. \"As edits grow\" is the trend",
             "over the checkpoints: the damage its least-squares line reaches at the last one. Claims about most of the",
             f"8 tasks use Bonferroni-adjusted intervals and need {MAJORITY} tasks. Holds: the interval lies wholly on",
             "the paper's side; does not hold: wholly on the other side, or wholly within the margin of no practical",
             f"effect (task metric ±{MARGIN['value']}, gold NLL ±{MARGIN['gold_nll']} nats per token); otherwise",
             "inconclusive, with the smallest effect this run could have seen.", "",
             "| claim | verdict | the paper | measured here |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | **{c['verdict']}** | {c['paper']} | {c['measured'].replace('|', '/')} |" for c in claims]
    lines += rescue_section(out_dir)
    path = out_dir / "claims.md"
    tmp = path.with_name(".claims.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf8")
    tmp.replace(path)
    return path


__all__ = ["write_claims", "evaluate_claims", "rescue_claims", "judge_measure", "MARGIN", "MAJORITY"]
