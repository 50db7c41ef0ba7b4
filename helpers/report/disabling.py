"""Disabling edits: which single edits of a chain make the model jump, and how much of the spread
between edit orderings they explain (docs/statistics.md, "Disabling edits").

Every chain keeps, after every edit, the held-out text's NLL per token and the edited matrices'
largest norm growth (:func:`helpers.runs.sweep.edit_traces`). An edit's *jump* is how much the
held-out NLL rose with it. The rule that flags a jump, per chain (its orderings pooled, since they
run the same method with the same settings):

- with at least ``MIN_JUMPS`` jumps, a jump is flagged when it exceeds the median jump by more
  than ``Z`` robust standard deviations (1.4826 × the median absolute deviation) **and** by more
  than ``FLOOR`` nats per token (the margin of no practical effect on an NLL, so a steady chain
  whose jumps are all tiny flags nothing);
- with fewer (a one-edit chain such as KN's), a jump is flagged when it exceeds ``COLLAPSE`` nats
  per token, an edit that alone puts the model far outside its unedited range.

:func:`spread_explained` then compares, per chain, the held-out NLL's rise over the whole chain in
each ordering with and without its flagged jumps: the between-ordering SD both ways.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

Z = 5.0
FLOOR = 0.05
MIN_JUMPS = 5
COLLAPSE = 1.0


def jumps(traces: pd.DataFrame) -> pd.DataFrame:
    """One row per edit (edits ≥ 1) of ``traces``: ``jump``, the held-out NLL's rise with that edit,
    and ``norm_jump``, the rise of the largest norm growth."""
    t = traces.sort_values(["chain", "ordering", "edits"])
    g = t.groupby(["chain", "ordering"], sort=False)
    out = t.assign(jump=g.heldout_nll.diff(), norm_jump=g.norm_growth.diff())
    return out[out.edits > 0].reset_index(drop=True)


def flag_edits(traces: pd.DataFrame) -> pd.DataFrame:
    """:func:`jumps` with ``flagged`` (the module's rule) and ``threshold`` (the jump a flag needed)."""
    j = jumps(traces)
    thresholds = {}
    for chain, part in j.groupby("chain", sort=False):
        x = part.jump.to_numpy()
        if len(x) >= MIN_JUMPS:
            median = float(np.median(x))
            scale = 1.4826 * float(np.median(np.abs(x - median)))
            thresholds[chain] = max(median + Z * scale, median + FLOOR)
        else:
            thresholds[chain] = COLLAPSE
    j["threshold"] = j.chain.map(thresholds)
    j["flagged"] = j.jump > j.threshold
    return j


def spread_explained(traces: pd.DataFrame) -> pd.DataFrame:
    """Per chain with at least 2 orderings: each ordering's held-out NLL rise over the chain
    (``rise``), the part in flagged jumps (``flagged_rise``), the flagged edits, and the SD of the
    rise between orderings with and without the flagged jumps."""
    flags = flag_edits(traces)
    out = []
    for chain, part in flags.groupby("chain", sort=False):
        per = part.groupby("ordering").agg(rise=("jump", "sum"),
                                           flagged_rise=("jump", lambda s: float(s[part.loc[s.index, "flagged"]].sum())))
        flagged = part[part.flagged]
        row = {"chain": chain, "method": part.method.iloc[0], "setting": part.setting.iloc[0],
               "orderings": len(per), "edits": int(part.edits.max()), "flagged": len(flagged),
               "flagged_edits": "; ".join(f"ordering {o}: edit {e} (+{d:.2f})"
                                          for o, e, d in zip(flagged.ordering, flagged.edits, flagged.jump)),
               "rise_per_ordering": " / ".join(f"{v:+.3f}" for v in per.rise)}
        if len(per) > 1:
            row["sd_between"] = float(per.rise.std(ddof=1))
            row["sd_between_without_flagged"] = float((per.rise - per.flagged_rise).std(ddof=1))
        out.append(row)
    return pd.DataFrame(out)


__all__ = ["Z", "FLOOR", "MIN_JUMPS", "COLLAPSE", "jumps", "flag_edits", "spread_explained"]
