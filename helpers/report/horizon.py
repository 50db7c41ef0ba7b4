"""The collapse horizon: how many sequential edits a model takes before it breaks, per method and
rescue, from the per-edit traces every chain keeps (:func:`helpers.runs.sweep.edit_traces`).

**Collapse point.** A chain's model has *collapsed* at the first edit after which its held-out
NLL per token exceeds the unedited model's by more than ``rise`` nats (default
:data:`COLLAPSE_RISE` = 1.0: the held-out perplexity multiplied by e; the same size as the
disabling-edit rule's single-edit collapse, :data:`helpers.report.disabling.COLLAPSE`, and on
SmolLM2-135M, whose unedited held-out NLL is about 2.9, far outside the 0.05-nat margin of no
practical effect), or whose weights stopped being finite (the chain's ``collapsed`` flag). A
chain that never collapses is *censored* at its length: its collapse point is only known to lie
beyond it. A horizon chain ends at its collapse (:func:`horizon_chains`, ``until_collapse``): past it
the model is broken and further edits would only measure a broken model; its traces end at the
collapse edit and its checkpoints before it.

**Delay.** A rescue and its plain method edit the same records in the same orderings, so they
compare ordering by ordering: the delay is ``log2`` of the ratio of their collapse points (1: the
rescue doubles the horizon). Its interval over orderings is Student's t at 95 % (scipy) where
neither chain is censored in any ordering; with censoring, the bounds each ordering allows are
reported and the verdict is a sign test over the orderings (one-sided, at 5 %: it needs at least
five orderings, all on one side), each ordering counted where its bounds decide it (:func:`delay`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats as sps

COLLAPSE_RISE = 1.0
LEVEL = 0.95


def log_checkpoints(edits: int, per_doubling: int = 1) -> tuple[int, ...]:
    """0, 1, 2, 4, ... up to ``edits`` (included), ``per_doubling`` points per doubling."""
    if edits < 1:
        raise ValueError(f"a horizon needs at least 1 edit, got {edits}")
    points = {0, edits}
    steps = int(math.floor(math.log2(edits) * per_doubling))
    points |= {max(1, round(2 ** (i / per_doubling))) for i in range(steps + 1)}
    return tuple(sorted(p for p in points if p <= edits))


def horizon_chains(variants: Sequence[Sequence], edits: int | dict, seed: int = 0, orderings: int = 1,
                   tasks_at: Sequence[int] | None = None, until_collapse: float | None = COLLAPSE_RISE) -> list:
    """The horizon's chains (:func:`helpers.runs.grid.rescue_chains`), each with checkpoints on a
    log scale up to its length: ``edits`` one length for every variant, or ``{method: length}``
    (a variant's method, its first entry: ROME's family may run longer than MEMIT's where its
    edits are dearer or its model collapses sooner; every method named). ``tasks_at``: the
    numbers of edits where the chains read the downstream tasks (each a checkpoint of every chain
    that long; default: none). ``until_collapse``: each chain ends at its collapse by this rise
    (default the collapse rule's, :data:`COLLAPSE_RISE`, and no lower: the tables read the rule;
    None: every chain runs to its length). A PRUNE chain runs to its length: its traces read the
    unrestrained edits, its plain method's (PRUNE restrains them when a checkpoint is read)."""
    from ..editing import Prune
    from ..runs.grid import SweepError, rescue_chains

    if until_collapse is not None and until_collapse < COLLAPSE_RISE:
        raise SweepError(f"until_collapse={until_collapse}: a chain ending below the collapse rule "
                         f"({COLLAPSE_RISE} nat) would read as censored; use at least {COLLAPSE_RISE}, or None")
    points = sorted(set(int(t) for t in (tasks_at or ())))
    out = []
    for entry in variants:
        if isinstance(edits, dict):
            if entry[0] not in edits:
                raise SweepError(f"edits gives no length for {entry[0]}: add {entry[0]!r} to {edits}")
            length = int(edits[entry[0]])
        else:
            length = int(edits)
        mine = [t for t in points if t <= length]
        for c in rescue_chains([entry], sorted(set(log_checkpoints(length)) | set(mine)), seed=seed,
                               orderings=orderings):
            ends = None if isinstance(c.regularizer, Prune) else until_collapse
            out.append(replace(c, tasks_at=tuple(mine), until_collapse=ends, draw=c.batch_size * c.edits))
    return sorted(out, key=lambda c: c.seed)  # ordering by ordering, as rescue_chains


def downstream_chains(chains: Sequence, at: int) -> list:
    """The chains that read the tasks after ``at`` edits on the records of each of ``chains`` (the
    horizon's): each the same method, regulariser and ordering, at 0 and ``at`` edits, drawing its
    records as its horizon chain does (so the rows the horizon chain read at ``at`` are these; a
    chain that collapsed before ``at`` is edited on to it here). Chains shorter than ``at``: none."""
    return [replace(c, checkpoints=(0, at), tasks_at=None, until_collapse=None,
                    draw=c.draw or c.batch_size * c.edits)
            for c in chains if c.edits >= at]


def collapse_points(traces: pd.DataFrame, rise: float = COLLAPSE_RISE) -> pd.DataFrame:
    """One row per (chain, ordering) of ``traces``: ``collapse`` (the first edit past the rule,
    or the chain's length where none is), ``censored`` (no collapse within the chain), the
    unedited and final held-out NLL, and the largest norm growth reached (for a chain that ended
    at its collapse: at its collapse edit)."""
    out = []
    for (chain, ordering), part in traces.groupby(["chain", "ordering"], sort=False):
        part = part.sort_values("edits")
        base = float(part[part.edits == 0].heldout_nll.iloc[0])
        edited = part[part.edits > 0]
        gone = edited["collapsed"].fillna(False).astype(bool) if "collapsed" in edited else False
        flagged = edited[(edited.heldout_nll - base > rise) | gone]
        censored = flagged.empty
        out.append({"chain": chain, "method": part.method.iloc[0], "variant": part.variant.iloc[0],
                    "ordering": ordering, "collapse": int(edited.edits.max() if censored else flagged.edits.min()),
                    "censored": censored, "unedited_nll": base, "final_nll": float(edited.heldout_nll.iloc[-1]),
                    "max_norm_growth": float(edited.norm_growth.max())})
    return pd.DataFrame(out)


@dataclass
class Delay:
    """One rescue against its plain chain: per ordering ``log2`` of the collapse points' ratio
    (``per_ordering``; where a chain is censored, ``low``/``high`` bound it), the estimate and its
    interval (NaN where censoring leaves none), and the verdict: ``"delays"``, ``"hastens"``,
    ``"no difference"`` (the interval within ±``margin``) or ``"inconclusive"``."""

    rescue: str
    plain: str
    per_ordering: list[float]
    low: list[float]
    high: list[float]
    estimate: float
    interval: tuple[float, float]
    verdict: str


def delay(points: pd.DataFrame, rescue: str, plain: str, level: float = LEVEL, margin: float = 0.0) -> Delay:
    """The rescue chain ``rescue``'s delay of collapse over ``plain``'s (chain labels of
    :func:`collapse_points`), paired by ordering. A censored chain bounds its ordering's ratio
    from one side: a censored rescue against a collapsed plain chain gives at least its ratio;
    both censored give nothing (±∞). With no censoring, the t-interval of the mean log ratio
    over orderings decides; with censoring, "delays" needs every ordering's lower bound above 0
    and "hastens" every upper bound below 0."""
    r = points[points.chain == rescue].set_index("ordering")
    p = points[points.chain == plain].set_index("ordering")
    common = sorted(set(r.index) & set(p.index))
    if not common:
        raise ValueError(f"{rescue} and {plain} share no ordering")
    ratios, lows, highs = [], [], []
    for o in common:
        x = math.log2(r.loc[o, "collapse"] / p.loc[o, "collapse"])
        # a censored chain collapses later than it shows: the rescue's raises the ratio, the plain one's lowers it
        lo = -math.inf if p.loc[o, "censored"] else x
        hi = math.inf if r.loc[o, "censored"] else x
        ratios.append(x)
        lows.append(lo)
        highs.append(hi)
    censored = any(math.isinf(v) for v in lows + highs)
    estimate = float(np.mean(ratios))
    if not censored and len(ratios) > 1:
        se = float(np.std(ratios, ddof=1)) / math.sqrt(len(ratios))
        half = float(sps.t.ppf(0.5 + level / 2, len(ratios) - 1)) * se
        interval = (estimate - half, estimate + half)
    else:  # no interval of the mean: the orderings' bounds
        interval = (min(lows), max(highs)) if censored else (math.nan, math.nan)
    if not censored and len(ratios) > 1:
        lo, hi = interval
        verdict = ("delays" if lo > margin else "hastens" if hi < -margin
                   else "no difference" if margin > 0 and -margin <= lo and hi <= margin else "inconclusive")
    else:
        # censored: a sign test over the orderings, each counted where its bounds decide its side
        n = len(ratios)
        later = sum(v > margin for v in lows)
        earlier = sum(v < -margin for v in highs)
        alpha = 1 - level
        verdict = ("delays" if sps.binomtest(later, n, 0.5, alternative="greater").pvalue < alpha else
                   "hastens" if sps.binomtest(earlier, n, 0.5, alternative="greater").pvalue < alpha else
                   "inconclusive")
    return Delay(rescue, plain, ratios, lows, highs, estimate, interval, verdict)


def plain_chains(points: pd.DataFrame) -> dict[str, str]:
    """``{rescue chain: the plain chain of its family}`` among the chains of ``points`` (a rescue's
    family: :func:`helpers.report.rescues.family`; ROME + RECT and r-ROME -> ROME, AlphaEdit,
    ENCORE and NAS -> MEMIT)."""
    from .rescues import family

    by_variant = dict(zip(points.variant, points.chain))
    return {chain: by_variant[family(variant)] for variant, chain in by_variant.items()
            if family(variant) != variant and family(variant) in by_variant}


def collapse_interval(part: pd.DataFrame, level: float = LEVEL) -> tuple[float, float]:
    """A chain's collapse point over its orderings (the rows of :func:`collapse_points` for one
    chain): with none censored, the 95 % Student's t interval of the mean of log₂(collapse point),
    mapped back (an interval of the geometric mean: collapse points are ratios apart, as the delay
    is); with any censored, no upper bound — ``(smallest point, ∞)``, the horizon lies at least
    that far; one ordering: ``(NaN, NaN)``."""
    if part.censored.any():
        return float(part.collapse.min()), math.inf
    if len(part) < 2:
        return math.nan, math.nan
    logs = np.log2(part.collapse.to_numpy(float))
    low, high = sps.t.interval(level, len(logs) - 1, loc=logs.mean(), scale=sps.sem(logs)) if logs.std() > 0 else (
        logs.mean(), logs.mean())
    return float(2 ** low), float(2 ** high)


def horizon_table(points: pd.DataFrame, plain_of: dict[str, str] | None = None) -> pd.DataFrame:
    """One line per chain: its collapse point over orderings (median, each ordering's, how many
    censored, and the interval of :func:`collapse_interval`) and, for a rescue (``plain_of``: chain
    label -> its plain chain's label; default :func:`plain_chains`), its delay."""
    plain_of = plain_chains(points) if plain_of is None else plain_of
    rows = []
    for chain, part in points.groupby("chain", sort=False):
        shown = [f"≥{c}" if z else str(c) for c, z in zip(part.collapse, part.censored)]
        low, high = collapse_interval(part)
        row = {"chain": chain, "variant": part.variant.iloc[0], "orderings": len(part),
               "collapse_median": float(part.collapse.median()),
               "collapse_low": low, "collapse_high": high,
               "collapse_per_ordering": " / ".join(shown), "censored": int(part.censored.sum()),
               "max_norm_growth": float(part.max_norm_growth.max())}
        if chain in plain_of:
            d = delay(points, chain, plain_of[chain])
            row.update({"vs": plain_of[chain], "delay_log2": d.estimate, "delay_low": d.interval[0],
                        "delay_high": d.interval[1], "verdict": d.verdict})
        rows.append(row)
    return pd.DataFrame(rows)


def retention(editing: pd.DataFrame) -> pd.DataFrame:
    """From the checkpoints' editing records (:func:`helpers.runs.sweep.checkpoint_measures` with
    ``records=True``): per (chain, ordering, edits) the latest edit's efficacy (its reliability),
    the retention of every earlier edit (their mean reliability) and the generalisation (the mean
    over all edited records)."""
    out = []
    for (chain, ordering, edits), part in editing.groupby(["chain", "ordering", "edits"], sort=False):
        part = part.reset_index(drop=True)
        earlier = part.iloc[:-1]
        out.append({"chain": chain, "ordering": ordering, "edits": edits, "efficacy": float(part.reliability.iloc[-1]),
                    "retention": float(earlier.reliability.mean()) if len(earlier) else math.nan,
                    "generalization": float(part.generalization.mean())})
    return pd.DataFrame(out)


def bands(frame: pd.DataFrame, measure: str, by: Sequence[str] = ("chain", "edits")) -> pd.DataFrame:
    """Per ``by`` group: the mean of ``measure`` over orderings and its range (min, max): the band
    a figure draws over edit orderings (three orderings give no interval worth the name)."""
    g = frame.groupby(list(by), sort=False)[measure]
    return pd.concat([g.mean().rename("mean"), g.min().rename("low"), g.max().rename("high")], axis=1).reset_index()


__all__ = ["COLLAPSE_RISE", "log_checkpoints", "horizon_chains", "downstream_chains", "collapse_points", "Delay", "delay", "plain_chains",
           "collapse_interval", "horizon_table", "retention", "bands"]
