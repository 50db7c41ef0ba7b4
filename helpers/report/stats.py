"""Paired statistics on per-example records: the change an edit makes, with an interval.

Every evaluation reads the same prompts before and after an edit, so the change is measured per
example and then averaged: an example's difficulty, which no edit changes, drops out of the
comparison (docs/statistics.md). A chain run with several edit orderings (``Chain.seed``) gives
one set of records per ordering, on the same examples. With one ordering the interval is the
paired percentile bootstrap over examples (checked against ``scipy.stats.bootstrap`` in the
tests). With several, the estimate is the mean over the orderings, and its interval is the same
bootstrap over examples — one draw of examples for all orderings, since they read the same
examples — so it speaks about the edit sequences that were run. Whether other sequences would do
the same is judged apart: a side is only taken when every ordering's own damage lies on it
(:meth:`Effect.side`), and the random-effects interval, which generalises to new orderings, is
kept beside it (:attr:`Effect.over_orderings`; Student's t with Welch–Satterthwaite degrees of
freedom — with 3 orderings about 2).

A task's measure is a function of column sums over its examples (:func:`measure_of`): the mean
score for most tasks, NER's micro F1 from its entity counts, the gold answer's mean NLL over the
prompts that have one. Resampling examples reweights those sums, so every measure — ratios
included — is recomputed exactly as the aggregate row computes it.

Signs: a *damage* is how much worse a measure got (positive = worse): ``before - after`` for
the scores (higher is better), ``after - before`` for the gold NLL (lower is better).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..evaluation import get_task

MEASURES = ("value", "gold_nll", "label_acc", "valid_rate")
HIGHER_IS_BETTER = {"value": True, "gold_nll": False, "label_acc": True, "valid_rate": True}
LEVEL = 0.95
RESAMPLES = 4000


def example_sums(records: pd.DataFrame) -> pd.DataFrame:
    """Per-prompt records summed per example (index: the example id, sorted), with
    ``prompts`` the number of prompts of each example; what :func:`measure_of` reads."""
    frame = records.copy()
    frame["prompts"] = 1
    numeric = frame.select_dtypes(include=["number", "bool"]).astype(float)
    numeric = numeric.drop(columns=[c for c in ("example", "prompt", "label_pred") if c in numeric], errors="ignore")
    if "gold_nll" in numeric:
        numeric["gold_nll"] = numeric["gold_nll"].fillna(0.0)
    if "label_hit" in numeric:
        numeric["label_hit"] = numeric["label_hit"].fillna(0.0)
    numeric["example"] = frame["example"].to_numpy()
    return numeric.groupby("example").sum().sort_index()


def measure_of(task: str, protocol: str, measure: str, sums: dict):
    """``measure`` of ``task`` from column sums (numbers, or arrays of resampled sums)."""
    if measure == "value":
        return get_task(task).value_from_sums(sums, protocol)
    with np.errstate(invalid="ignore", divide="ignore"):
        if measure == "gold_nll":
            return np.asarray(sums["gold_nll"], dtype=float) / np.asarray(sums["has_gold"], dtype=float)
        if measure == "label_acc":
            return np.asarray(sums["label_hit"], dtype=float) / np.asarray(sums["has_labels"], dtype=float)
        if measure == "valid_rate":
            return np.asarray(sums["valid"], dtype=float) / np.asarray(sums["prompts"], dtype=float)
    raise ValueError(f"unknown measure {measure!r}; one of {MEASURES}")


@dataclass
class Effect:
    """A damage (positive = worse; see the module text) with its interval.

    ``estimate``: the mean over orderings of each ordering's damage on all examples;
    ``low``/``high``: the ``level`` bootstrap percentile interval over examples (for the
    orderings run); ``per_ordering``: each ordering's own damage (the spread over orderings);
    ``over_orderings``: the ``(low, high)`` random-effects interval that also counts the spread
    between orderings as chance (``None`` with one ordering); ``examples``, ``orderings``: the
    sample sizes."""

    estimate: float
    low: float
    high: float
    level: float
    examples: int
    orderings: int
    per_ordering: list[float] = field(default_factory=list)
    over_orderings: tuple[float, float] | None = None

    @property
    def orderings_agree(self) -> bool:
        """Every ordering's own damage (the estimate itself when none are given) on the same side
        of zero as the estimate: False when any is zero or undefined."""
        values = self.per_ordering or [self.estimate]
        return all(np.sign(p) == np.sign(self.estimate) != 0 for p in values)

    @property
    def beyond_zero(self) -> bool:
        """The interval excludes zero (whether or not the orderings agree)."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def detectable(self, power: float = 0.8) -> float:
        """The smallest damage this interval would show beyond zero with probability
        ``power`` (normal approximation: the interval's half-width × (z₁₋α/₂ + z_power) / z₁₋α/₂)."""
        z = sps.norm.ppf(0.5 + self.level / 2)
        return self.half_width * (z + sps.norm.ppf(power)) / z

    def side(self, margin: float = 0.0) -> str:
        """``"negligible"`` (the interval, and every ordering's own damage, lie inside
        ±``margin``: no practical effect, even where the interval excludes zero), else
        ``"worse"`` (the interval wholly above zero, and every ordering's own damage above zero
        too), ``"better"`` (the same below), or ``"unclear"`` — which includes an interval beyond
        zero whose orderings disagree in sign. The agreement asked of the orderings is a screen,
        not a test: the interval's error rate is over examples, for the orderings run."""
        values = self.per_ordering or [self.estimate]
        if margin > 0 and -margin < self.low and self.high < margin and all(abs(p) < margin for p in values):
            return "negligible"
        if self.low > 0 and self.orderings_agree:
            return "worse"
        if self.high < 0 and self.orderings_agree:
            return "better"
        return "unclear"


def comparison_sides(who: str) -> dict[str, str]:
    """:meth:`Effect.side` in words, for a comparison of two chains whose value is how much more
    the other chain is damaged (positive = ``who`` is better): ``"worse"`` -> ``"<who> better"``."""
    return {"worse": f"{who} better", "better": f"{who} worse", "negligible": "within the margin",
            "unclear": "unclear"}


def _aligned(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    sums = [example_sums(f) for f in frames]
    ids = sums[0].index
    for s in sums[1:]:
        if not s.index.equals(ids):
            raise ValueError("paired records must cover the same examples (the same task sample: n and seed); "
                             f"got {len(ids)} and {len(s.index)} examples, {len(ids.symmetric_difference(s.index))} "
                             "not in both")
    columns = sorted(set().union(*(s.columns for s in sums)))
    return [s.reindex(columns=columns, fill_value=0.0) for s in sums]


def _resampled(mats: list[np.ndarray], weights: np.ndarray) -> list[np.ndarray]:
    """Column sums of each ordering's [examples, columns] matrix under each row of example
    ``weights`` [resamples, examples]: per ordering, [resamples, columns]."""
    return [weights @ m for m in mats]


def _measure(task: str, protocol: str, measure: str, columns: list[str]):
    """``measure`` as a function of summed columns: ``[..., columns]`` sums -> ``[...]`` values."""
    def value(sums):
        return np.asarray(measure_of(task, protocol, measure, dict(zip(columns, np.moveaxis(sums, -1, 0)))), float)

    return value


def _resamples(level: float, resamples: int) -> int:
    """Enough resamples for the tails of a ``level`` percentile interval (about 50 beyond each end)."""
    return max(resamples, int(np.ceil(50 / ((1 - level) / 2))))


def _interval(per_ordering: np.ndarray, boot: np.ndarray, level: float) -> tuple[float, float, float]:
    """(estimate, low, high): the mean of each ordering's value on all examples (``[S]``) and
    the percentile interval of their mean on resampled examples (``boot [R, S]``, one draw of
    examples for all orderings)."""
    alpha = 1 - level
    low, high = np.nanquantile(np.nanmean(boot, axis=1), [alpha / 2, 1 - alpha / 2])
    return float(np.nanmean(per_ordering)), float(low), float(high)


def _over_orderings(per_ordering: np.ndarray, boot: np.ndarray, level: float) -> tuple[float, float] | None:
    """The random-effects interval (``None`` with one ordering): standard error² = the bootstrap
    variance over examples of the mean over orderings + the variance between the orderings'
    values / their number; Student's t quantile with Welch–Satterthwaite degrees of freedom."""
    s = int(np.isfinite(per_ordering).sum())
    if s < 2:
        return None
    est = float(np.nanmean(per_ordering))
    v_examples = float(np.nanvar(np.nanmean(boot, axis=1), ddof=1))
    v_orderings = float(np.nanvar(per_ordering, ddof=1)) / s
    se = np.sqrt(v_examples + v_orderings)
    df = (v_examples + v_orderings) ** 2 / (v_orderings ** 2 / (s - 1)) if v_orderings > 0 else np.inf
    q = float(sps.t.ppf(1 - (1 - level) / 2, df))
    return est - q * se, est + q * se


def _effect(per_ordering: np.ndarray, boot: np.ndarray, level: float, examples: int) -> Effect:
    est, low, high = _interval(per_ordering, boot, level)
    return Effect(est, low, high, level, examples, len(per_ordering), [float(x) for x in per_ordering],
                  _over_orderings(per_ordering, boot, level))


def _example_weights(n: int, level: float, resamples: int, seed: int) -> np.ndarray:
    """``[R, n]`` multinomial counts: each row a draw of ``n`` examples with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=_resamples(level, resamples)).astype(float)


def paired_damage(after: Sequence[pd.DataFrame], before: Sequence[pd.DataFrame] | pd.DataFrame, task: str,
                  protocol: str = "paper", measure: str = "value", *, level: float = LEVEL,
                  resamples: int = RESAMPLES, seed: int = 0) -> Effect:
    """How much worse ``measure`` is in ``after`` than in ``before``, paired by example.

    ``after``: per-prompt records, one frame per edit ordering, all on the same examples.
    ``before``: one frame (the unedited model: the same for every ordering) or one per
    ordering, paired with ``after`` by position (e.g. the unregularised chain that edited the
    same records). The interval is over examples, for these orderings (the module text)."""
    after = list(after)
    befores = [before] * len(after) if isinstance(before, pd.DataFrame) else list(before)
    if len(befores) == 1:
        befores = befores * len(after)  # one unedited model for every ordering
    if len(befores) != len(after) or not after:
        raise ValueError(f"{len(after)} orderings after but {len(befores)} before")
    mats = _aligned(after + befores)
    columns = list(mats[0].columns)
    a = [m.to_numpy() for m in mats[: len(after)]]
    b = [m.to_numpy() for m in mats[len(after):]]
    sign = -1.0 if HIGHER_IS_BETTER[measure] else 1.0
    value = _measure(task, protocol, measure, columns)

    def damage(sums_a, sums_b):
        return sign * (value(sums_a) - value(sums_b))

    per = [float(damage(x.sum(0), y.sum(0))) for x, y in zip(a, b)]
    n = a[0].shape[0]
    w = _example_weights(n, level, resamples, seed)  # [R, N]
    d = np.stack([damage(wa, wb) for wa, wb in zip(_resampled(a, w), _resampled(b, w))], axis=1)  # [R, S]
    return _effect(np.array(per), d, level, n)


def damage_trend(after: dict[float, Sequence[pd.DataFrame]],
                 before: Sequence[pd.DataFrame] | pd.DataFrame | dict[float, Sequence[pd.DataFrame]], task: str,
                 protocol: str = "paper", measure: str = "value", *, origin: float = 0.0, level: float = LEVEL,
                 resamples: int = RESAMPLES, seed: int = 0) -> Effect:
    """The damage as it grows over checkpoints: a least-squares line through each ordering's
    damages, fitted through zero at ``origin`` (where the damage is 0 by construction: the
    unedited model, or the smallest batch C3 compares with), read at the last checkpoint — the
    damage the trend reaches there, with its interval.

    ``after``: {checkpoint: one frame per ordering} (a checkpoint is a number of edits, or a
    batch size). ``before``: the unedited records (one frame, or one per ordering), or
    {checkpoint: frames} to compare with checkpoint by checkpoint (the unregularised chain
    against RECT's; the smallest batch against each larger one). Orderings pair by position;
    the same draw of examples serves every checkpoint, so the interval keeps the pairing."""
    points = sorted(p for p in after if p != origin)
    if not points:
        raise ValueError(f"no checkpoint beyond the origin {origin}")
    s = len(after[points[0]])
    if isinstance(before, dict):
        base = {p: list(before[p]) for p in points}
    else:
        frames = [before] if isinstance(before, pd.DataFrame) else list(before)
        base = {p: frames * s if len(frames) == 1 else frames for p in points}
    uneven = [p for p in points if len(after[p]) != s or len(base[p]) != s]
    if uneven:
        raise ValueError(f"every checkpoint needs the same {s} orderings on both sides; checkpoint(s) {uneven} have "
                         f"{[len(after[p]) for p in uneven]} after and {[len(base[p]) for p in uneven]} before")
    flat = [f for p in points for f in after[p]] + [f for p in points for f in base[p]]
    aligned = _aligned(flat)
    columns = list(aligned[0].columns)
    mats = [m.to_numpy() for m in aligned]
    k = len(points) * s
    a = {p: mats[i * s:(i + 1) * s] for i, p in enumerate(points)}
    b = {p: mats[k + i * s:k + (i + 1) * s] for i, p in enumerate(points)}
    sign = -1.0 if HIGHER_IS_BETTER[measure] else 1.0
    u = np.array([float(p) - origin for p in points])
    reach = u * u[-1] / (u ** 2).sum()  # fitted value at the last point = reach · damages

    value = _measure(task, protocol, measure, columns)

    def reached(weights):  # -> [R, S]
        out = []
        for o in range(s):
            ys = np.stack([sign * (value(weights @ a[p][o]) - value(weights @ b[p][o])) for p in points])
            out.append(np.tensordot(reach, ys, axes=1))
        return np.stack(out, axis=-1)

    n = mats[0].shape[0]
    per_ordering = reached(np.ones((1, n)))[0]
    return _effect(per_ordering, reached(_example_weights(n, level, resamples, seed)), level, n)


def level_interval(records: Sequence[pd.DataFrame], task: str, protocol: str = "paper", measure: str = "value", *,
                   level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high) of ``measure`` itself at one point (one frame per ordering): the
    mean over the orderings, with its interval over examples — the band around a side-effect
    line."""
    mats = _aligned(list(records))
    columns = list(mats[0].columns)
    m = [x.to_numpy() for x in mats]

    value = _measure(task, protocol, measure, columns)

    per = np.array([value(x.sum(0)) for x in m])
    w = _example_weights(m[0].shape[0], level, resamples, seed)
    return _interval(per, np.stack([value(w @ x) for x in m], axis=1), level)


def bands(records: pd.DataFrame, measure: str = "value", by: Sequence[str] = ("chain", "edits", "task"),
          protocol: str = "paper", level: float = LEVEL, resamples: int = 2000) -> pd.DataFrame:
    """The interval of ``measure`` at every point of a sweep's per-prompt ``records``
    (:func:`helpers.runs.sweep.side_effect_records`): one line per group of ``by`` with
    ``estimate``, ``low``, ``high`` (:func:`level_interval`: the mean over the group's
    orderings, its interval over examples) — the bands of :func:`helpers.report.plots.side_effect_lines`."""
    by = list(by) + (["edits"] if "edits" not in by and "edits" in records else [])  # one point per checkpoint
    out = []
    for key, part in records.groupby(by, sort=False):
        frames = [g for _, g in part.groupby("ordering")] if "ordering" in part else [part]
        est, low, high = level_interval(frames, part.task.iloc[0], protocol, measure, level=level, resamples=resamples)
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "estimate": est, "low": low,
                    "high": high})
    return pd.DataFrame(out)


def unpaired_damage(after: pd.DataFrame, before: pd.DataFrame, task: str, protocol: str = "paper",
                    measure: str = "value", *, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = 0) -> Effect:
    """The same damage with the two sets of records resampled independently (as if different
    examples had been read before and after): what an unpaired comparison of two means can
    tell, for comparison with :func:`paired_damage`."""
    ma, mb = _aligned([after, before])
    columns = list(ma.columns)
    sign = -1.0 if HIGHER_IS_BETTER[measure] else 1.0

    value = _measure(task, protocol, measure, columns)

    a, b = ma.to_numpy(), mb.to_numpy()
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    wa = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    wb = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    boot = sign * (value(wa @ a) - value(wb @ b))
    alpha = 1 - level
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
    est = float(sign * (value(a.sum(0)) - value(b.sum(0))))
    return Effect(est, float(low), float(high), level, n, 1, [est])


def bonferroni(level: float, comparisons: int) -> float:
    """The per-comparison level that keeps the chance of any false "beyond zero" among
    ``comparisons`` intervals at most ``1 - level``."""
    return 1 - (1 - level) / max(comparisons, 1)


def paired_mean_interval(differences, level: float = LEVEL, resamples: int = RESAMPLES,
                         seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of per-item paired differences (e.g. one edit's reliability with RECT
    minus without), by ``scipy.stats.bootstrap`` (percentile)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or np.all(d == d[0]):
        m = float(d.mean()) if len(d) else float("nan")
        return m, m, m
    res = sps.bootstrap((d,), np.mean, confidence_level=level, n_resamples=_resamples(level, resamples),
                        method="percentile",
                        random_state=np.random.default_rng(seed))
    return float(d.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(numerator, denominator, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio of means, low, high) of two paired per-item series (e.g. reliability with RECT
    over reliability without, over the same edits), by ``scipy.stats.bootstrap`` (percentile)."""
    x, y = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    est = float(x.mean() / y.mean()) if len(x) and y.mean() else float("nan")
    if len(x) < 2:
        return est, est, est
    res = sps.bootstrap((x, y), lambda a, b, axis=-1: a.mean(axis) / b.mean(axis), paired=True, vectorized=True,
                        confidence_level=level, n_resamples=_resamples(level, resamples), method="percentile",
                        random_state=np.random.default_rng(seed))
    return est, float(res.confidence_interval.low), float(res.confidence_interval.high)
