"""How often a claim's intervals take a side when there is nothing to find: the family-wise error,
measured by simulation (docs/statistics.md, "Measured coverage").

The null is built from the comparisons themselves: each ordering's per-example damages
(:class:`helpers.report.stats.DamageSample` pseudo-values) shifted so that their mean is zero, so
the simulated damages keep the shapes of the real ones — their skew, their ties, NER's sentences —
and only the effect is removed. A simulated run draws each comparison's examples with replacement
(the same draw for all its orderings, which read the same examples), computes the family's
intervals by a ``method``, and judges each comparison as :meth:`helpers.report.stats.Effect.side`
does (a side only when the interval excludes zero and every ordering agrees). The family-wise
error is the share of runs in which any comparison took a side.

Methods: ``"simultaneous"`` — what the claims use (:func:`helpers.report.stats.intervals`: the
bootstrap max-T critical value over the family); ``"percentile"`` — the percentile bootstrap at the
Bonferroni level (what the claims used before); ``"t"`` — Student's t at the Bonferroni level.
Every simulated run uses one bank of bootstrap draws per comparison (common random numbers), which
makes the simulation fast and does not bias it: the draws are independent of the simulated data.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .stats import LEVEL, DamageSample, resample_weights, studentized

METHODS = ("simultaneous", "percentile", "t")


@dataclass
class FamilyError:
    """``rate``: the family-wise error (any comparison taking a side), with its Monte Carlo
    standard error ``mc_se`` over ``runs`` simulated runs; ``per_comparison``: each comparison's
    own rate of taking a side; ``nominal``: the promised ``1 − level``."""

    method: str
    rate: float
    mc_se: float
    runs: int
    nominal: float
    per_comparison: list[float]

    @property
    def keeps_promise(self) -> bool:
        """The rate is at most the nominal error, within two Monte Carlo standard errors."""
        return self.rate <= self.nominal + 2 * self.mc_se


def null_pseudo(sample: DamageSample) -> np.ndarray:
    """[S, n] the sample's pseudo-values with each ordering's mean removed: no damage, same shapes."""
    return sample.pseudo - sample.pseudo.mean(1, keepdims=True)


def family_error(samples: Sequence[DamageSample], method: str = "simultaneous", *, level: float = LEVEL,
                 runs: int = 2000, resamples: int = 2000, seed: int = 0) -> FamilyError:
    """The family-wise error of ``method`` on null data shaped like ``samples`` (module text)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    samples = list(samples)
    k = len(samples)
    alpha = 1 - level
    rng = np.random.default_rng(seed)
    boot = resamples if method != "percentile" else max(resamples, int(np.ceil(25 / (alpha / (2 * k)))))
    sided = np.zeros((runs, k), bool)
    worst = np.zeros((runs, boot))
    stats_ = []
    for j, sample in enumerate(samples):
        p = null_pseudo(sample)
        s, n = p.shape
        draw = rng.integers(0, n, size=(runs, n))
        x = p[:, draw]  # [S, runs, n]
        per = x.mean(2)  # [S, runs]
        d = x.mean(0)  # [runs, n]
        m = d.mean(1)
        se = d.std(1, ddof=1) / np.sqrt(n)
        agree = (np.sign(per) == np.sign(m)).all(0) & (m != 0)
        w = resample_weights(n, boot, rng)  # [n, B]: one bank for every run
        centred = d - m[:, None]
        if method == "simultaneous":
            worst = np.maximum(worst, studentized(centred, w))
            stats_.append((m, se, agree))
        elif method == "percentile":
            low, high = np.quantile(m[:, None] + centred @ w, [alpha / (2 * k), 1 - alpha / (2 * k)], axis=1)
            sided[:, j] = ((low > 0) | (high < 0)) & agree
        else:
            q = sps.t.ppf(1 - alpha / (2 * k), n - 1)
            sided[:, j] = ((m - q * se > 0) | (m + q * se < 0)) & agree
    if method == "simultaneous":
        c = np.quantile(worst, level, axis=1)
        for j, (m, se, agree) in enumerate(stats_):
            sided[:, j] = (np.abs(m) > c * se) & agree
    rate = float(sided.any(1).mean())
    return FamilyError(method, rate, float(np.sqrt(max(rate * (1 - rate), alpha * level) / runs)), runs, alpha,
                       [float(r) for r in sided.mean(0)])


__all__ = ["METHODS", "FamilyError", "null_pseudo", "family_error"]
