"""``claims.md``: the verdicts of :mod:`.claims`, the rescues' table, the disabling edits and what
would decide each undecided task, written beside a run's tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import disabling, horizon
from .claims import Ledger, evaluate_claims, rescue_claims
from .judge import FLOOR, MARGIN, by_ordering, comparisons, task_judges
from .tables import (EDIT_TRACES, HORIZON, HORIZON_EDITING, HORIZON_EXAMPLES, HORIZON_WINDOWS,
                     RESCUE_EDITING, RESCUE_EXAMPLES, RESCUE_WINDOWS, SIDE_EFFECTS_EXAMPLES, read_records, read_table)


def rescue_section(out_dir: str | Path, protocol: str = "paper", ledger: Ledger | None = None) -> list[str]:
    """The "Beyond RECT" section of claims.md (empty when notebook 05 did not run)."""
    ex = read_records(out_dir, RESCUE_EXAMPLES)
    if ex is None or not len(ex):
        return []
    found = rescue_claims(ex, read_records(out_dir, RESCUE_EDITING), read_records(out_dir, RESCUE_WINDOWS), protocol,
                          ledger)
    lines = ["", "## Beyond RECT: which rescue preserves what, at what cost in editing performance", "",
             "Notebook 05: every rescue against the unregularised chain of its family (ROME for RECT, PRUNE and",
             "r-ROME; MEMIT for AlphaEdit) that edited the same records in the same orderings. *Preserves*: per task,",
             "how much more the family's chain is damaged than the rescue's at the last checkpoint both reach",
             "(positive = the rescue is better; one family of simultaneous 95% intervals per rescue, the same",
             "computation as C8, so RECT's numbers here equal C8's where the records are the same; the verdict's",
             "rules are the claims'). Held-out: the same for the NLL per token of the held-out text (the log of its",
             "perplexity; one interval). Editing: the rescue's reliability, generalization and locality minus the",
             "family's over the same edited records at the last checkpoint (negative = the rescue keeps less of its",
             "edits), 95% intervals.",
             "", "| rescue | vs | facts | preserves the tasks | tasks | held-out NLL advantage | reliability | "
             "generalization | locality |", "|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r['rescue']} | {r['family']} | {r.get('facts', '')} | **{r['verdict']}** | {r['tasks']} | "
                     f"{r.get('heldout', '')} | {r.get('reliability', '')} | {r.get('generalization', '')} | "
                     f"{r.get('locality', '')} |")
    details = [f"- {r['rescue']}: {r['detail']}" for r in found if r.get("detail")]
    return lines + ([""] + details if details else [])


def horizon_section(out_dir: str | Path, protocol: str = "paper", ledger: Ledger | None = None) -> list[str]:
    """The "Collapse horizon" section of claims.md (empty when notebook 06 did not run): per rescue,
    "R delays collapse relative to plain editing" (:func:`helpers.report.horizon.delay`) and "R keeps
    downstream ability at N edits" (the rescues' claim of notebook 05 on the horizon's records)."""
    table = read_table(out_dir, HORIZON)
    if table is None or not len(table):
        return []
    ex = read_records(out_dir, HORIZON_EXAMPLES)
    kept = {}
    if ex is not None and len(ex):
        kept = {r["rescue"]: r for r in rescue_claims(ex, read_records(out_dir, HORIZON_EDITING),
                                                      read_records(out_dir, HORIZON_WINDOWS), protocol, ledger,
                                                      label="horizon")}
    lines = ["", "## The collapse horizon: how long each rescue keeps the model alive", "",
             "Notebook 06: long chains of one fact per edit, every rescue on the records its plain method edits, in",
             "the same orderings. A chain collapses at the first edit after which the held-out text's NLL per token is",
             f"more than {horizon.COLLAPSE_RISE:g} nat above the unedited model's, or its weights stop being finite",
             "(docs/statistics.md, \"The collapse horizon\"); a chain that never does is censored at its length (≥).",
             "*Delays collapse*: log₂ of the rescue's collapse point over its plain chain's, paired by ordering —",
             "Student's t over orderings where no chain is censored, otherwise a one-sided sign test over the",
             "orderings each ordering's bounds decide (it needs five orderings all on one side). *Keeps downstream",
             "ability*: notebook 05's rescue claim at the horizon's fixed number of edits (the tasks' advantage over the",
             "plain chain, simultaneous 95% intervals; holds = better on most tasks).", "",
             "| rescue | vs | collapse point per ordering [95%] (rescue / plain) | delay, log₂ [95%] | delays collapse | "
             "edits | keeps downstream ability | tasks | held-out NLL advantage |", "|---|---|---|---|---|---|---|---|---|"]
    by_chain = table.set_index("chain")
    for r in table.itertuples():
        if not isinstance(getattr(r, "vs", None), str):
            continue
        plain = by_chain.loc[r.vs]
        interval = ("" if r.delay_low != r.delay_low else
                    f" [{r.delay_low:+.2f}, {r.delay_high:+.2f}]".replace("inf", "∞"))
        down = kept.get(getattr(r, "variant", r.chain), {})
        lines.append(f"| {r.chain} | {r.vs} | {_points(r)} / {_points(plain)} | "
                     f"{r.delay_log2:+.2f}{interval} | **{r.verdict}** | {down.get('facts', '')} | "
                     f"**{down.get('verdict', 'not measured')}** | {down.get('tasks', '')} | {down.get('heldout', '')} |")
    details = [f"- {v}: {d['detail']}" for v, d in kept.items() if d.get("detail")]
    return lines + ([""] + details if details else [])


def _points(row) -> str:
    """"49 / 57 / 60 [49–62]": a chain's collapse point per ordering and its interval
    (:func:`helpers.report.horizon.collapse_interval`; "≥N" where censored)."""
    low, high = getattr(row, "collapse_low", np.nan), getattr(row, "collapse_high", np.nan)
    if low != low:
        return row.collapse_per_ordering
    span = f"≥{low:.0f}" if np.isinf(high) else f"{low:.0f}–{high:.0f}"
    return f"{row.collapse_per_ordering} [{span}]"


# ---------------------------------------------------------------------------- disabling edits
def disabling_section(out_dir: str | Path, protocol: str = "paper") -> list[str]:
    """The "Disabling edits" section of claims.md (empty without notebook 01's edit traces)."""
    traces = read_table(out_dir, EDIT_TRACES)
    if traces is None or not len(traces):
        return []
    traces = traces[traces.setting != "batch-single"]  # one edit each: nothing sequential to trace
    if not len(traces):
        return []
    flags = disabling.flag_edits(traces)
    spread = disabling.spread_explained(traces)
    side = read_records(out_dir, SIDE_EFFECTS_EXAMPLES)
    lines = ["", "## Disabling edits: single edits that make the model jump", "",
             "After every edit of every chain the package reads the held-out text's NLL per token; an edit is flagged",
             f"when its jump exceeds the chain's median jump by more than {disabling.Z:g} robust SDs and by more than",
             f"{disabling.FLOOR} nats (one-edit chains: a jump above {disabling.COLLAPSE:g} nat; docs/statistics.md). Per chain: the",
             "flagged edits, the held-out NLL's rise over the chain in each ordering, and its SD between orderings with",
             "and without the flagged jumps — how much of the spread between orderings those single edits carry. The",
             "last column compares the tasks' damage at the chain's end in the orderings that hold a flagged edit with",
             "the others (mean over the tasks judged on the gold NLL, nats per token).", "",
             "| chain | orderings | edits | flagged edits | held-out NLL rise per ordering | SD between orderings | "
             "SD without the flagged jumps | task NLL damage: orderings with a flag / without |",
             "|---|---|---|---|---|---|---|---|"]
    for r in spread.itertuples():
        sd = f"{r.sd_between:.3f}" if hasattr(r, "sd_between") and r.sd_between == r.sd_between else ""
        sd0 = (f"{r.sd_between_without_flagged:.3f}" if hasattr(r, "sd_between_without_flagged")
               and r.sd_between_without_flagged == r.sd_between_without_flagged else "")
        lines.append(f"| {r.chain} | {r.orderings} | {r.edits} | {r.flagged_edits or 'none'} | {r.rise_per_ordering} | "
                     f"{sd} | {sd0} | {_flagged_task_damage(side, flags, r.chain, protocol)} |")
    return lines


def _flagged_task_damage(side: pd.DataFrame | None, flags: pd.DataFrame, chain: str, protocol: str) -> str:
    """"+1.20 / +0.05": the mean gold-NLL damage over the NLL-judged tasks at the chain's last
    checkpoint, in the orderings holding a flagged edit and in the others (empty when either is none)."""
    if side is None or chain not in set(side.chain):
        return ""
    hit = set(flags[(flags.chain == chain) & flags.flagged].ordering)
    c = side[side.chain == chain]
    if not hit or not set(c.ordering) - hit or 0 not in set(c.edits):
        return ""
    unedited = by_ordering(c[c.edits == 0])[0]
    nll = {t: m for t, m in task_judges(unedited, protocol).items() if m == "gold_nll"}
    if not nll:
        return ""
    found = comparisons(c[c.edits == c.edits.max()], unedited, nll, chain, protocol, paired_orderings=False)
    orderings = sorted(set(c[c.edits == c.edits.max()].ordering))
    per = np.mean([x.sample.per_ordering for x in found], axis=0)  # [orderings]
    with_flag = [p for o, p in zip(orderings, per) if o in hit]
    without = [p for o, p in zip(orderings, per) if o not in hit]
    return f"{np.mean(with_flag):+.3f} / {np.mean(without):+.3f}"


def write_claims(out_dir: str | Path, profile: str = "") -> Path:
    """``<out_dir>/claims.md`` from ``<out_dir>/tables``; returns its path."""
    out_dir = Path(out_dir)
    ledger = Ledger()
    claims = evaluate_claims(out_dir, ledger=ledger)
    rescue_lines = rescue_section(out_dir, ledger=ledger)
    lines = [f"# The paper's claims on this run{f' (profile {profile})' if profile else ''}", "",
             "Written by `make reproduce` from the tables in `tables/` (helpers/report/claims.py; the rules are in",
             "docs/claims.md and docs/statistics.md). Side effects are compared per example (the same prompts before",
             "and after; NER: per sentence): the mean damage over the edit orderings, each ordering's own damage in",
             "brackets. A damage is positive when the model got worse. A claim's verdict reads a family of",
             "comparisons (every task of every method it names), and their intervals are simultaneous at 95% over",
             "the family (a studentized bootstrap over examples, its critical value the largest deviation over the",
             "family), so that the chance of any task counted on a wrong side stays at 5% (measured by simulation:",
             "docs/statistics.md). A task takes a side only when every ordering agrees in sign. The verdicts are about",
             "these edit sequences on these examples. A task is judged on the paper's metric where the unedited model",
             f"is above chance on it (generation tasks: at least {FLOOR}), otherwise on the gold answer's NLL. \"As edits",
             "grow\" is read as the damage at the last checkpoint (the verdict); its growth since the first checkpoint is",
             "reported with its own simultaneous intervals. Claims about most tasks need 5 of 8. Holds: enough tasks",
             "lie wholly on the paper's side; does not hold: so many lie on the other side, or wholly within the",
             f"margin of no practical effect (task metric ±{MARGIN['value']}, gold NLL ±{MARGIN['gold_nll']} nats per",
             "token), that it cannot; otherwise inconclusive, with what would decide it (the last table).", "",
             "| claim | verdict | the paper | measured here |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | **{c['verdict']}** | {c['paper']} | {c['measured'].replace('|', '/')} |" for c in claims]
    lines += rescue_lines
    lines += horizon_section(out_dir, ledger=ledger)
    lines += disabling_section(out_dir)
    lines += ledger.lines()
    lines += ledger.coverage_lines()
    path = out_dir / "claims.md"
    tmp = path.with_name(".claims.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf8")
    tmp.replace(path)
    return path


__all__ = ["write_claims", "rescue_section", "horizon_section", "disabling_section"]
