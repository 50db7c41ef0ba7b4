"""Paired statistics on per-example records: the change an edit makes, with an interval.

Every evaluation reads the same prompts before and after an edit, so the change is measured per
example and then averaged: an example's difficulty, which no edit changes, drops out of the
comparison (docs/statistics.md). A chain run with several edit orderings (``Chain.seed``) gives
one set of records per ordering, on the same examples.

A task's measure is a function of column sums over its examples (:func:`measure_of`): the mean
score for most tasks, NER's micro F1 from its entity counts, the gold answer's mean NLL over the
prompts that have one. The **example** is the unit (NER: the sentence, whose 4 prompts travel
together). A comparison is reduced to a :class:`DamageSample`: each ordering's damage on all
examples, and each example's jackknife pseudo-value of it (``n·θ − (n−1)·θ₋ᵢ``; for a mean, the
example's own change; for a ratio such as F1, its linearised contribution). Damages of two
comparisons subtract example by example (C8: how much more the unregularised chain is damaged than
RECT's), since the jackknife is linear in the damage.

**Intervals** (:func:`intervals`) are over examples, for the orderings run, and *simultaneous* over
the family of comparisons a verdict reads: ``estimate ± c·se``, with ``se`` the jackknife standard
error of the mean over orderings and ``c`` the 95% quantile of the largest studentized deviation
``max_k |T*_k|`` over the family, from a bootstrap of each comparison's examples (the bootstrap-t
max-T of Westfall & Young). The method was chosen by measuring it: on per-example damages shaped
like the committed records (skewed, tied, NER's sentences), the percentile bootstrap at the
Bonferroni level let a claim's family-wise error reach 9–16% and Student's t 6–11%; this one,
with the orderings' agreement screen of :meth:`Effect.side`, stays at or below 5%
(:mod:`.coverage`, ``tests/unit/test_coverage.py``).

Orderings are judged apart (:meth:`Effect.side`: a side only when every ordering's own damage lies
on it) and described by their **variance components** (:func:`variance_components`: between
orderings, between examples, and their interaction, from the two-way table of pseudo-values), which
give the random-effects interval (:attr:`Effect.over_orderings`: what new orderings would do) and
the orderings and examples a decision would need (:mod:`.power`).

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
    ``low``/``high``: ``estimate ± critical·se``, simultaneous at ``level`` over the family it
    was computed with (:func:`intervals`), over examples, for the orderings run; ``se``: the
    jackknife standard error over examples of the mean over orderings; ``family``: how many
    intervals shared the level; ``per_ordering``: each ordering's own damage; ``components``:
    the variance components (:func:`variance_components`); ``over_orderings``: the random-effects
    interval at the same per-interval error (``None`` with one ordering); ``examples``,
    ``orderings``: the sample sizes."""

    estimate: float
    low: float
    high: float
    level: float
    examples: int
    orderings: int
    per_ordering: list[float] = field(default_factory=list)
    over_orderings: tuple[float, float] | None = None
    se: float = float("nan")
    critical: float = float("nan")
    family: int = 1
    components: dict[str, float] = field(default_factory=dict)
    over_se: float = float("nan")
    over_df: float = float("nan")

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

    @property
    def alpha(self) -> float:
        """The error this one interval may spend: the family's ``1 − level`` shared by its members."""
        return (1 - self.level) / max(self.family, 1)

    def detectable(self, power: float = 0.8) -> float:
        """The smallest damage this interval (over examples, these orderings) shows beyond zero
        with probability ``power``: ``se·(critical + z_power)``. It ignores the orderings'
        agreement and spread; :func:`helpers.report.sensitivity.needed` counts both."""
        return self.se * (self.critical + sps.norm.ppf(power))

    def side(self, margin: float = 0.0) -> str:
        """``"negligible"`` (the interval, and every ordering's own damage, lie inside
        ±``margin``: no practical effect, even where the interval excludes zero), else
        ``"worse"`` (the interval wholly above zero, and every ordering's own damage above zero
        too), ``"better"`` (the same below), or ``"unclear"`` — which includes an interval beyond
        zero whose orderings disagree in sign. The margin is tested first."""
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


def _measure(task: str, protocol: str, measure: str, columns: list[str]):
    """``measure`` as a function of summed columns: ``[..., columns]`` sums -> ``[...]`` values."""
    def value(sums):
        return np.asarray(measure_of(task, protocol, measure, dict(zip(columns, np.moveaxis(sums, -1, 0)))), float)

    return value


def _jackknife(value, m: np.ndarray) -> tuple[float, np.ndarray]:
    """(θ on all examples, each example's pseudo-value ``n·θ − (n−1)·θ₋ᵢ``) of the measure
    ``value`` over one ordering's ``[examples, columns]`` matrix of per-example sums."""
    n = m.shape[0]
    total = m.sum(0)
    full = float(value(total))
    leave_one_out = value(total[None, :] - m)  # [n]
    return full, n * full - (n - 1) * leave_one_out


@dataclass
class DamageSample:
    """One comparison, reduced to what its interval needs: ``per_ordering`` [S], each ordering's
    damage on all examples, and ``pseudo`` [S, n], each example's jackknife pseudo-value of it
    (the same examples, in the same order, for every ordering). Subtracting two samples of the
    same examples and orderings gives the difference of the damages, example by example."""

    per_ordering: np.ndarray
    pseudo: np.ndarray

    def __sub__(self, other: "DamageSample") -> "DamageSample":
        if self.pseudo.shape != other.pseudo.shape:
            raise ValueError(f"cannot compare damages over {self.pseudo.shape} and {other.pseudo.shape} "
                             "(orderings, examples): pair the same orderings on the same task sample")
        return DamageSample(self.per_ordering - other.per_ordering, self.pseudo - other.pseudo)

    @property
    def estimate(self) -> float:
        return float(np.mean(self.per_ordering))

    @property
    def examples(self) -> int:
        return int(self.pseudo.shape[1])

    @property
    def orderings(self) -> int:
        return int(self.pseudo.shape[0])

    @property
    def per_example(self) -> np.ndarray:
        """[n] each example's pseudo-value averaged over the orderings."""
        return self.pseudo.mean(0)

    @property
    def se(self) -> float:
        """The jackknife standard error over examples of the mean over orderings."""
        d = self.per_example
        return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def damage_sample(after: Sequence[pd.DataFrame], before: Sequence[pd.DataFrame] | pd.DataFrame, task: str,
                  protocol: str = "paper", measure: str = "value") -> DamageSample:
    """How much worse ``measure`` is in ``after`` than in ``before``, per ordering and example.

    ``after``: per-prompt records, one frame per edit ordering, all on the same examples.
    ``before``: one frame (the unedited model: the same for every ordering) or one per
    ordering, paired with ``after`` by position (e.g. the unregularised chain that edited the
    same records)."""
    after = list(after)
    befores = [before] * len(after) if isinstance(before, pd.DataFrame) else list(before)
    if len(befores) == 1:
        befores = befores * len(after)  # one unedited model for every ordering
    if len(befores) != len(after) or not after:
        raise ValueError(f"{len(after)} orderings after but {len(befores)} before")
    if measure not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown measure {measure!r}; one of {MEASURES}")
    mats = _aligned(after + befores)
    value = _measure(task, protocol, measure, list(mats[0].columns))
    sign = -1.0 if HIGHER_IS_BETTER[measure] else 1.0
    per, pseudo = [], []
    for a, b in zip(mats[: len(after)], mats[len(after):]):
        va, pa = _jackknife(value, a.to_numpy())
        vb, pb = _jackknife(value, b.to_numpy())
        per.append(sign * (va - vb))
        pseudo.append(sign * (pa - pb))
    return DamageSample(np.array(per), np.array(pseudo))


def variance_components(sample: DamageSample) -> dict[str, float]:
    """The two-way random-effects decomposition of the pseudo-values [S orderings, n examples]
    (one value per cell, so the ordering × example interaction is the residual):
    ``orderings`` σ²_O, ``examples`` σ²_E and ``interaction`` σ²_OE (method of moments, negative
    estimates set to 0), with the mean squares they come from. The variance of the estimate
    over new orderings and examples is σ²_O/S + σ²_E/n + σ²_OE/(S·n)."""
    y = sample.pseudo
    s, n = y.shape
    grand = y.mean()
    ms_o = n * ((y.mean(1) - grand) ** 2).sum() / (s - 1) if s > 1 else float("nan")
    ms_e = s * ((y.mean(0) - grand) ** 2).sum() / (n - 1) if n > 1 else float("nan")
    if s > 1 and n > 1:
        resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + grand
        ms_oe = (resid ** 2).sum() / ((s - 1) * (n - 1))
    else:
        ms_oe = float("nan")
    if s == 1:  # one ordering: the examples' spread holds the interaction too
        return {"orderings": float("nan"), "examples": float(ms_e / s), "interaction": float("nan"),
                "ms_orderings": float("nan"), "ms_examples": float(ms_e), "ms_interaction": float("nan")}
    return {"orderings": float(max((ms_o - ms_oe) / n, 0.0)), "examples": float(max((ms_e - ms_oe) / s, 0.0)),
            "interaction": float(max(ms_oe, 0.0)), "ms_orderings": float(ms_o), "ms_examples": float(ms_e),
            "ms_interaction": float(ms_oe)}


def random_effects(sample: DamageSample) -> tuple[float, float]:
    """(standard error, degrees of freedom) of the estimate as a mean over *new* orderings and
    examples: se² = (MS_O + MS_E − MS_OE)/(S·n), the unbiased estimate of σ²_O/S + σ²_E/n +
    σ²_OE/(S·n) (each term counted once), with Satterthwaite's degrees of freedom."""
    c = variance_components(sample)
    s, n = sample.pseudo.shape
    if s < 2 or n < 2:
        return float("nan"), float("nan")
    mo, me, moe = c["ms_orderings"], c["ms_examples"], c["ms_interaction"]
    v = max(mo + me - moe, me)  # never narrower than the interval over examples for the orderings run
    se = float(np.sqrt(v / (s * n)))
    den = mo ** 2 / (s - 1) + me ** 2 / (n - 1) + moe ** 2 / ((s - 1) * (n - 1))
    df = float(v ** 2 / den) if den > 0 else float("inf")
    return se, max(df, 1.0)


def studentized(centred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """|T*| of resampled means: ``centred`` [runs, n] per-example values minus their mean,
    ``weights`` [n, B] each resample's share of every example (multinomial counts / n);
    returns [runs, B] |mean*| / se*. A resample whose values are all equal (no spread, up to
    rounding) counts 0: its T is undefined, and such resamples only arise from ties."""
    mean = centred @ weights
    second = (centred ** 2) @ weights
    n = centred.shape[-1]
    var = (second - mean ** 2) * n / (n - 1)
    spread = var > 1e-9 * np.maximum(second, np.finfo(float).tiny)  # below: cancellation, not spread
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread, np.abs(mean) / np.sqrt(np.where(spread, var, 1.0) / n), 0.0)


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[n, resamples] each bootstrap resample's share of every example (counts / n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).T / n


def _studentized_max(samples: Sequence[DamageSample], resamples: int, seed: int) -> np.ndarray:
    """[resamples] the largest |T*| over the family (:func:`studentized`), each comparison's
    examples resampled independently (different tasks read different examples)."""
    rng = np.random.default_rng(seed)
    worst = np.zeros(resamples)
    for sample in samples:
        d = sample.per_example
        if len(d) < 2:
            continue
        worst = np.maximum(worst, studentized((d - d.mean())[None, :], resample_weights(len(d), resamples, rng))[0])
    return worst


def intervals(samples: Sequence[DamageSample], level: float = LEVEL, resamples: int = RESAMPLES,
              seed: int = 0) -> list[Effect]:
    """One :class:`Effect` per sample, the intervals simultaneous at ``level`` over them all
    (the module text): ``estimate ± c·se``, ``c`` the ``level`` quantile of the bootstrap's
    largest studentized deviation over the family. With one sample this is the symmetric
    studentized (bootstrap-t) interval."""
    samples = list(samples)
    if not samples:
        return []
    c = float(np.quantile(_studentized_max(samples, resamples, seed), level))
    out = []
    for sample in samples:
        est, se = sample.estimate, sample.se
        half = c * se if np.isfinite(se) else float("nan")
        over, over_se, over_df = None, float("nan"), float("nan")
        if sample.orderings > 1:
            over_se, over_df = random_effects(sample)
            q = float(sps.t.ppf(1 - (1 - level) / (2 * len(samples)), over_df))
            over = (est - q * over_se, est + q * over_se)
        out.append(Effect(est, est - half, est + half, level, sample.examples, sample.orderings,
                          [float(x) for x in sample.per_ordering], over, se, c, len(samples),
                          variance_components(sample), over_se, over_df))
    return out


def paired_damage(after: Sequence[pd.DataFrame], before: Sequence[pd.DataFrame] | pd.DataFrame, task: str,
                  protocol: str = "paper", measure: str = "value", *, level: float = LEVEL,
                  resamples: int = RESAMPLES, seed: int = 0) -> Effect:
    """How much worse ``measure`` is in ``after`` than in ``before``, paired by example: one
    comparison's interval (:func:`damage_sample`, :func:`intervals`). A claim that reads several
    comparisons passes them all to :func:`intervals` at once."""
    return intervals([damage_sample(after, before, task, protocol, measure)], level, resamples, seed)[0]


def level_interval(records: Sequence[pd.DataFrame], task: str, protocol: str = "paper", measure: str = "value", *,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(estimate, low, high) of ``measure`` itself at one point (one frame per ordering): the
    mean over the orderings, with Student's t interval over the examples' jackknife values —
    the band around a side-effect line (descriptive: one point at a time)."""
    mats = _aligned(list(records))
    value = _measure(task, protocol, measure, list(mats[0].columns))
    fulls, pseudo = zip(*(_jackknife(value, m.to_numpy()) for m in mats))
    d = np.mean(pseudo, axis=0)
    est = float(np.mean(fulls))
    n = len(d)
    if n < 2 or not np.isfinite(d).all():
        return est, est, est
    half = float(sps.t.ppf(1 - (1 - level) / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return est, est - half, est + half


def bands(records: pd.DataFrame, measure: str = "value", by: Sequence[str] = ("chain", "edits", "task"),
          protocol: str = "paper", level: float = LEVEL) -> pd.DataFrame:
    """The interval of ``measure`` at every point of a sweep's per-prompt ``records``
    (:func:`helpers.runs.sweep.side_effect_records`): one line per group of ``by`` with
    ``estimate``, ``low``, ``high`` (:func:`level_interval`) — the bands of
    :func:`helpers.report.plots.side_effect_lines`."""
    by = list(by) + (["edits"] if "edits" not in by and "edits" in records else [])  # one point per checkpoint
    out = []
    for key, part in records.groupby(by, sort=False):
        frames = [g for _, g in part.groupby("ordering")] if "ordering" in part else [part]
        est, low, high = level_interval(frames, part.task.iloc[0], protocol, measure, level=level)
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "estimate": est, "low": low,
                    "high": high})
    return pd.DataFrame(out)


def unpaired_damage(after: pd.DataFrame, before: pd.DataFrame, task: str, protocol: str = "paper",
                    measure: str = "value", *, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = 0) -> Effect:
    """The same damage with the two sets of records resampled independently (as if different
    examples had been read before and after; percentile bootstrap): what an unpaired comparison
    of two means can tell, for comparison with :func:`paired_damage`."""
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


def _resamples(level: float, resamples: int) -> int:
    """Enough resamples for the tails of a ``level`` percentile interval (about 50 beyond each end)."""
    return max(resamples, int(np.ceil(50 / ((1 - level) / 2))))


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
