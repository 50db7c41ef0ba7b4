"""The paper's claims C1–C8 (docs/claims.md) checked against what a ``make reproduce`` run measured.

:func:`write_claims` reads the tables the notebooks wrote under ``figures/<profile>/tables``
(named in :mod:`.tables`) and writes ``claims.md`` beside them: per claim, what the paper says, what this run measured
(numbers, spread, sample sizes) and a verdict — holds, does not hold, or inconclusive at this
n. Nothing here is tuned: the rules are fixed below and stated in the report.

Which measure judges a task: the paper's metric where the unedited model is above chance on it
(more than two standard errors above the chance level; for the generation tasks, which have no
chance level, a value of at least ``FLOOR``); otherwise the gold answer's NLL (docs/protocol.md), since
a drop from the floor cannot be seen. A change counts as damage when it exceeds two standard
errors of the difference (binomial for the metric, the prompts' NLL spread for ``gold_nll``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .tables import FIG8_ROWS, RECT_ABLATION_ROWS, SIDE_EFFECTS_ROWS, WEIGHT_CHANGE_TABLE1, read_table

FLOOR = 0.05  # a generation metric below this is at the floor: judged on gold_nll
MAJORITY = 5  # tasks out of 8 that must move for a "most tasks" claim to hold

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


# ---------------------------------------------------------------------------- per task
def judge_measure(base: pd.Series) -> str:
    """``"value"`` or ``"gold_nll"``: how a task whose unedited row is ``base`` is judged."""
    p, n, chance = base["value"], max(int(base["prompts"]), 1), base.get("chance", math.nan)
    if chance is None or chance != chance:
        chance = 0.0
    above = p > chance + 2 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return "value" if above and p >= FLOOR else "gold_nll"


def damage(base: pd.Series, after: pd.Series, measure: str) -> tuple[float, float]:
    """``(damage, two standard errors)``: how much worse ``after`` is than ``base`` on
    ``measure`` (positive = worse), and the noise level it must exceed."""
    n0, n1 = max(int(base["prompts"]), 1), max(int(after["prompts"]), 1)
    if measure == "value":
        p0, p1 = base["value"], after["value"]
        se = math.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
        return p0 - p1, 2 * se
    s0, s1 = base.get("gold_nll_sd", math.nan), after.get("gold_nll_sd", math.nan)
    # no spread recorded: no change can be told from noise
    se = math.sqrt((s0 ** 2) / n0 + (s1 ** 2) / n1) if s0 == s0 and s1 == s1 else math.inf
    return after["gold_nll"] - base["gold_nll"], 2 * se


def task_changes(rows: pd.DataFrame, base_rows: pd.DataFrame, unedited: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per task of ``rows`` (one checkpoint) against ``base_rows`` (default: the
    unedited model): measure (chosen on the ``unedited`` rows, default ``base_rows``), before,
    after, damage, noise, and whether it is worse or better beyond the noise."""
    out = []
    base = base_rows.set_index("task")
    judge = (base_rows if unedited is None else unedited).drop_duplicates("task").set_index("task")
    for _, r in rows.iterrows():
        b = base.loc[r.task]
        measure = judge_measure(judge.loc[r.task])
        d, noise = damage(b, r, measure)
        out.append({"task": r.task, "measure": measure, "before": b[measure], "after": r[measure],
                    "damage": d, "noise": noise, "worse": d > noise, "better": -d > noise})
    return pd.DataFrame(out)


def _fmt_changes(ch: pd.DataFrame) -> str:
    return "; ".join(f"{r.task} {'NLL' if r.measure == 'gold_nll' else 'metric'} {r.before:.3f}→{r.after:.3f}"
                     f"{' (worse)' if r.worse else ' (better)' if r.better else ''}" for r in ch.itertuples())


def _majority_verdict(worse: int, total: int, better: int = 0) -> str:
    """Most tasks worse beyond the noise: holds; most better: does not hold; else too few
    tasks moved beyond the noise to tell at this n."""
    need = min(MAJORITY, total)
    if worse >= need:
        return "holds"
    if better >= need:
        return "does not hold"
    return "inconclusive at this n"


# ---------------------------------------------------------------------------- claims
def _sequential(df: pd.DataFrame, setting: str, methods) -> list[tuple[str, str, str]]:
    out = []
    part = df[(df.setting == setting) & (df.how == "none")]
    for chain in dict.fromkeys(part.chain):
        c = part[part.chain == chain]
        if c.method.iloc[0] not in methods or c.edits.max() == 0:
            continue
        last = c.edits.max()
        ch = task_changes(c[c.edits == last], c[c.edits == 0])
        out.append((chain, f"{chain}, after {last} edits, n = {int(c.n.iloc[0])} per task: {int(ch.worse.sum())} of "
                    f"{len(ch)} tasks worse than unedited beyond 2 SE, {int(ch.better.sum())} better. {_fmt_changes(ch)}",
                    _majority_verdict(int(ch.worse.sum()), len(ch), int(ch.better.sum()))))
    return out


def claim_c2(df: pd.DataFrame) -> tuple[str, str]:
    c = df[(df.method == "KN") & (df.how == "none") & (df.setting == "instance-sequential")]
    if c.empty or 1 not in set(c.edits):
        return "no KN chain in this run", "not measured"
    ch = task_changes(c[c.edits == 1], c[c.edits == 0])
    metric_tasks = ch[ch.measure == "value"]
    collapsed = int((metric_tasks.after <= 0.2 * metric_tasks.before).sum())
    text = (f"after one KN edit (n = {int(c.n.iloc[0])} per task): {int(ch.worse.sum())} of {len(ch)} tasks worse beyond 2 SE; "
            f"of the {len(metric_tasks)} tasks judged on the paper's metric, {collapsed} fell to ≤ 20% of the unedited "
            f"value. {_fmt_changes(ch)}")
    if len(ch) and ch.worse.all() and collapsed == len(metric_tasks):
        return text, "holds"
    return text, "does not hold" if ch.worse.sum() < len(ch) / 2 else "inconclusive at this n"


def claim_c3(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    out = []
    part = df[(df.setting == "batch-single") & (df.how == "none")]
    for method in dict.fromkeys(part.method):
        c = part[part.method == method]
        sizes = sorted(set(c.batch_size))
        if len(sizes) < 2:
            continue
        base = c[c.edits == 0].drop_duplicates("task")  # every batch size's chain has the same unedited rows
        small = c[(c.batch_size == sizes[0]) & (c.edits == 1)]
        large = c[(c.batch_size == sizes[-1]) & (c.edits == 1)]
        ch = task_changes(large, base)
        # the claim is that damage grows with the batch: the largest batch against the smallest
        grew = task_changes(large, small, unedited=base)
        out.append((method, f"{method} batch {sizes[-1]} vs batch {sizes[0]} (n = {int(c.n.iloc[0])}): {int(grew.worse.sum())} "
                    f"of {len(grew)} tasks worse beyond 2 SE, {int(grew.better.sum())} better; vs unedited "
                    f"{int(ch.worse.sum())} worse. {_fmt_changes(ch)}",
                    _majority_verdict(int(grew.worse.sum()), len(grew), int(grew.better.sum()))))
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
        return text, "inconclusive at this n"
    return text, "holds" if grows else "does not hold"


def _paired(rows: pd.DataFrame, method: str, a: str, b: str, metric: str) -> tuple[float, float, float, int]:
    """Mean of ``a`` and ``b`` regularisers' ``metric`` on the same edits, and 2 SE of the
    paired difference."""
    x = rows[(rows.method == method) & (rows.regularizer == a)].set_index("case_id")[metric]
    y = rows[(rows.method == method) & (rows.regularizer == b)].set_index("case_id")[metric]
    common = x.index.intersection(y.index)
    d = (x[common] - y[common])
    se = 2 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return float(x[common].mean()), float(y[common].mean()), se, len(common)


def claim_c6(rows: pd.DataFrame) -> tuple[str, str]:
    """RECT 40% keeps >= 94% of reliability and generalization, locality not worse (beyond
    the paired noise), and RECT 20% hurts reliability (beyond the paired noise)."""
    parts, verdicts = [], []
    for method in dict.fromkeys(rows.method):
        kept = []
        for metric in ("reliability", "generalization"):
            r, u, _, n = _paired(rows, method, "RECT 40%", "Unregularized", metric)
            kept.append(r / u if u else math.nan)
        lr, lu, lse, n = _paired(rows, method, "RECT 40%", "Unregularized", "locality")
        r20, u20, se20, _ = _paired(rows, method, "RECT 20%", "Unregularized", "reliability")
        keeps = all(k >= 0.94 for k in kept)
        locality_ok = not lu - lr > lse
        hurts = u20 - r20 > se20
        verdicts.append("holds" if keeps and locality_ok and hurts else
                        "does not hold" if not keeps or lu - lr > lse else "inconclusive at this n")
        parts.append(f"{method} (n = {n} edits): RECT 40% keeps {kept[0]:.1%} of reliability and {kept[1]:.1%} of "
                     f"generalization (paper: ≥ 94%); locality {lu:.3f} → {lr:.3f} (paired 2 SE {lse:.3f}); RECT 20% "
                     f"reliability {r20:.3f} vs {u20:.3f} unregularized (paired 2 SE {se20:.3f}"
                     f"{', hurts' if hurts else ', not beyond the noise'})")
    return "; ".join(parts), _combine(verdicts)


def claim_c7(rows: pd.DataFrame) -> tuple[str, str]:
    parts, wins, losses, total = [], 0, 0, 0
    for method in dict.fromkeys(rows.method):
        for other in ("Random 40%", "PCA 40%"):
            for metric in ("reliability", "generalization"):
                r, o, se, n = _paired(rows, method, "RECT 40%", other, metric)
                total += 1
                wins += r - o > se
                losses += o - r > se
                parts.append(f"{method} {metric}: RECT {r:.3f} vs {other} {o:.3f} (2 SE {se:.3f}, n = {n})")
    verdict = "holds" if wins == total else "does not hold" if losses else "inconclusive at this n"
    return f"RECT ahead beyond 2 SE in {wins} of {total} comparisons. " + "; ".join(parts), verdict


def claim_c8(df: pd.DataFrame) -> tuple[str, str]:
    """At the last checkpoint, per task: is the RECT 40% chain less damaged than the
    unregularised one beyond the noise of their difference?"""
    last = df.edits.max()
    none = df[(df.how == "none") & (df.edits == last)]
    rect = df[(df.how == "rect") & (df.k.round(2) == 0.4) & (df.edits == last)]
    base = df[df.edits == 0].drop_duplicates("task")
    if none.empty or rect.empty:
        return "no unregularized and RECT 40% chains in this run", "not measured"
    ch = task_changes(none, rect, unedited=base)  # "worse": the unregularized model is worse than RECT's
    parts = [f"{r.task} ({'NLL' if r.measure == 'gold_nll' else 'metric'}) unedited {b:.3f}, unregularized "
             f"{r.after:.3f}, RECT 40% {r.before:.3f}" for r, b in
             zip(ch.itertuples(), base.set_index("task").loc[ch.task].apply(lambda x: x[judge_measure(x)], axis=1))]
    better, worse = int(ch.worse.sum()), int(ch.better.sum())
    verdict = "holds" if better > len(ch) / 2 else "does not hold" if worse > len(ch) / 2 else "inconclusive at this n"
    return (f"after {last} edits (n = {int(base.n.iloc[0])} per task): RECT 40% better than unregularized beyond 2 SE on "
            f"{better} of {len(ch)} tasks, worse on {worse}. " + "; ".join(parts)), verdict


# ---------------------------------------------------------------------------- report
def evaluate_claims(out_dir: str | Path) -> list[dict]:
    """One dict per claim: ``claim``, ``paper``, ``measured``, ``verdict``, from the tables a
    run wrote to ``out_dir``."""
    side, t1, abl, f8 = (read_table(out_dir, SIDE_EFFECTS_ROWS), read_table(out_dir, WEIGHT_CHANGE_TABLE1),
                         read_table(out_dir, RECT_ABLATION_ROWS), read_table(out_dir, FIG8_ROWS))
    out = []

    def add(claim, measured, verdict):
        out.append({"claim": claim, "paper": PAPER[claim], "measured": measured, "verdict": verdict})

    missing = ("not measured in this run", "not measured")
    if side is not None:
        seq = _sequential(side, "instance-sequential", ("ROME", "KN"))
        add("C1", "<br>".join(s for _, s, _ in seq) or missing[0], _combine([v for _, _, v in seq]))
        add("C2", *claim_c2(side))
        c3 = claim_c3(side)
        add("C3", "<br>".join(s for _, s, _ in c3) or missing[0], _combine([v for _, _, v in c3]))
        c4 = _sequential(side, "batch-sequential", ("MEMIT", "MEND"))
        add("C4", "<br>".join(s for _, s, _ in c4) or missing[0], _combine([v for _, _, v in c4]))
    else:
        for c in ("C1", "C2", "C3", "C4"):
            add(c, *missing)
    add("C5", *(claim_c5(t1) if t1 is not None and len(t1) else missing))
    add("C6", *(claim_c6(abl) if abl is not None else missing))
    add("C7", *(claim_c7(abl) if abl is not None else missing))
    add("C8", *(claim_c8(f8) if f8 is not None else missing))
    return out


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return "not measured"
    if all(v == "holds" for v in verdicts):
        return "holds"
    if all(v == "does not hold" for v in verdicts):
        return "does not hold"
    return "mixed: " + ", ".join(verdicts)


def write_claims(out_dir: str | Path, profile: str = "") -> Path:
    """``<out_dir>/claims.md`` from ``<out_dir>/tables``; returns its path."""
    out_dir = Path(out_dir)
    claims = evaluate_claims(out_dir)
    lines = [f"# The paper's claims on this run{f' (profile {profile})' if profile else ''}", "",
             "Written by `make reproduce` from the tables in `tables/` (helpers/report/claims.py; the rules are in",
             "docs/claims.md). A task is judged on the",
             "paper's metric where the unedited model is above chance on it (more than 2 SE above chance; generation",
             f"tasks: at least {FLOOR}), otherwise on the gold answer's NLL (docs/protocol.md). A change counts when it",
             "exceeds 2 standard errors of the difference. 'Holds' for a most-tasks claim needs "
             f"{MAJORITY} of 8 tasks.", "",
             "| claim | verdict | the paper | measured here |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | **{c['verdict']}** | {c['paper']} | {c['measured'].replace('|', '/')} |" for c in claims]
    path = out_dir / "claims.md"
    tmp = path.with_name(".claims.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf8")
    tmp.replace(path)
    return path


__all__ = ["write_claims", "evaluate_claims", "judge_measure", "damage", "task_changes"]
