"""The claims' intervals keep their promise: on per-example damages shaped like the real ones, with
the effect removed, a claim's family takes a wrong side in at most 5% of runs (within Monte Carlo
error) — and the percentile bootstrap at the Bonferroni level, which the claims used before, does
not (helpers.report.coverage)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.report import coverage, judge, stats
from tests.unit.test_stats import records

N, ORDERINGS = 40, 3  # the cpu profile's examples per task and edit orderings


def _skewed(rng, shape: float) -> stats.DamageSample:
    """Most examples move a little, a few a lot: the examples' shared damage has the quantiles of a
    gamma distribution (skewness 2/√shape; the committed records reach 2.5, e.g. the sentiment NLL after
    50 ROME edits), each ordering adding its own normal noise."""
    shared = sps.gamma.ppf((np.arange(N) + 0.5) / N, shape)
    pseudo = shared + rng.normal(0, 0.3 * np.sqrt(shape), (ORDERINGS, N))
    return stats.DamageSample(pseudo.mean(1), pseudo)


def _tied(rng) -> stats.DamageSample:
    """An accuracy's change: -1, 0 or +1 per example, mostly 0."""
    pseudo = rng.choice([-1.0, 0.0, 1.0], p=[0.05, 0.8, 0.15], size=(ORDERINGS, N))
    return stats.DamageSample(pseudo.mean(1), pseudo)


def _ner(rng) -> stats.DamageSample:
    """NER's F1 through the package's own path: 4 prompts per sentence, entity counts, a ratio."""
    def sentences(seed):
        r = np.random.default_rng(seed)
        gold = r.integers(0, 3, 4 * N)
        predicted = np.where(r.random(4 * N) < 0.1, r.integers(0, 6, 4 * N), r.integers(0, 2, 4 * N))
        return records(score=[0.0] * 4 * N, task_prompts=4, tp=np.minimum(gold, predicted), predicted=predicted,
                       gold=gold)
    before = sentences(int(rng.integers(1 << 30)))
    after = [sentences(int(rng.integers(1 << 30))) for _ in range(ORDERINGS)]
    return stats.damage_sample(after, before, "ner")


def _family(seed: int) -> list[stats.DamageSample]:
    """16 comparisons, as C1 (two methods × 8 tasks) reads: skewed, tied and NER-shaped."""
    rng = np.random.default_rng(seed)
    return ([_skewed(rng, k) for k in (0.7, 0.9, 1.2, 1.6, 2.5, 4.0, 8.0, 16.0)] + [_tied(rng) for _ in range(4)]
            + [_ner(rng) for _ in range(4)])


def test_the_simultaneous_intervals_keep_the_family_wise_error_and_the_percentile_ones_do_not():
    family = _family(0)
    assert 1.5 < max(sps.skew(s.per_example) for s in family) < 2.6  # as skewed as the records (up to 2.5)
    ours = coverage.family_error(family, "simultaneous", runs=2000, seed=1)
    assert ours.keeps_promise, f"family-wise error {ours.rate:.3f} ± {ours.mc_se:.3f} > 0.05"
    before = coverage.family_error(family, "percentile", runs=600, seed=1)
    assert not before.keeps_promise and before.rate > 2 * ours.rate


def test_the_committed_records_of_c1_keep_it_too():
    path = Path(__file__).resolve().parents[2] / "figures" / "cpu" / "tables" / "side_effects_examples.parquet"
    if not path.exists():
        pytest.skip("no committed cpu records")
    ex = pd.read_parquet(path)
    family = []
    for method in ("ROME", "KN"):
        chain = ex[(ex.method == method) & (ex.setting == "instance-sequential") & (ex.how == "none")]
        unedited = judge.by_ordering(chain[chain.edits == 0])[0]
        last = chain[chain.edits == chain.edits.max()]
        family += [c.sample for c in judge.comparisons(last, unedited, judge.task_judges(unedited), method,
                                                       paired_orderings=False)]
    assert len(family) == 16
    ours = coverage.family_error(family, "simultaneous", runs=2000, seed=2)
    assert ours.keeps_promise, f"family-wise error {ours.rate:.3f} ± {ours.mc_se:.3f} > 0.05"
    assert not coverage.family_error(family, "t", runs=2000, seed=2).keeps_promise  # Student's t at Bonferroni: no


def test_a_null_keeps_the_shapes_and_removes_the_effect():
    sample = _skewed(np.random.default_rng(3), 1.0)
    null = coverage.null_pseudo(sample)
    assert np.allclose(null.mean(1), 0.0) and np.allclose(np.diff(np.sort(null, axis=1), axis=1),
                                                           np.diff(np.sort(sample.pseudo, axis=1), axis=1))
    with pytest.raises(ValueError, match="unknown method"):
        coverage.family_error([sample], "bca")
