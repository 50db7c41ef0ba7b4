"""Paired statistics (helpers.report.stats): intervals on hand-made per-example records."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.evaluation import row_from_records
from helpers.report import stats


def records(gold_nll=None, score=None, task_prompts=1, **extra) -> pd.DataFrame:
    """Per-prompt records as evaluate_examples writes them (one prompt per example unless
    ``task_prompts``)."""
    n = len(gold_nll if gold_nll is not None else score) // task_prompts
    rows = []
    for i in range(n):
        for j in range(task_prompts):
            k = i * task_prompts + j
            rows.append({"example": i, "prompt": j, "kind": "", "output": "",
                         "score": float(score[k]) if score is not None else 0.0, "valid": True,
                         "gold_nll": float(gold_nll[k]) if gold_nll is not None else math.nan,
                         "gold_tokens": 3, "has_gold": gold_nll is not None, "label_logprobs": None,
                         "label_pred": -1, "label_hit": math.nan, "has_labels": False,
                         **{c: v[k] for c, v in extra.items()}})
    return pd.DataFrame(rows)


def test_the_paired_interval_is_narrower_when_prompts_differ_in_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.5, 8.0, 60)          # what an edit does not change
    before = difficulty + rng.normal(0, 0.05, 60)
    after = difficulty + 0.2 + rng.normal(0, 0.05, 60)  # every prompt 0.2 nats worse
    a, b = records(after), records(before)
    paired = stats.paired_damage([a], b, "summarization", measure="gold_nll")
    unpaired = stats.unpaired_damage(a, b, "summarization", measure="gold_nll")
    assert paired.estimate == pytest.approx(0.2, abs=0.03) == unpaired.estimate
    assert paired.half_width < unpaired.half_width / 10
    assert paired.side() == "worse" and unpaired.side() == "unclear"


def test_one_ordering_is_the_paired_bootstrap_of_scipy():
    rng = np.random.default_rng(1)
    before = rng.normal(3, 1, 80)
    after = before + rng.normal(0.1, 0.3, 80)
    ours = stats.paired_damage([records(after)], records(before), "summarization", measure="gold_nll",
                               resamples=20000)
    ref = sps.bootstrap((after, before), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
                        vectorized=True, n_resamples=20000, method="percentile", random_state=np.random.default_rng(2))
    assert ours.estimate == pytest.approx(float(np.mean(after - before)))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)


def test_a_score_that_drops_is_a_positive_damage_and_ner_is_recomputed_from_its_counts():
    # classification: 20 of 40 right before, 10 after (the same 10 still right)
    before = records(score=[1.0] * 20 + [0.0] * 20)
    after = records(score=[1.0] * 10 + [0.0] * 30)
    eff = stats.paired_damage([after], before, "nli")
    assert eff.estimate == pytest.approx(0.25) and eff.side() == "worse"
    # NER under the paper's metric: micro F1 of summed counts, not the mean of per-prompt F1s
    tp, pred, gold = [1, 0, 2, 0] * 5, [1, 1, 2, 0] * 5, [2, 0, 2, 1] * 5
    ner = records(score=[0.0] * 20, task_prompts=4, tp=tp, predicted=pred, gold=gold)
    same = stats.paired_damage([ner], ner, "ner")
    assert same.estimate == 0 and same.low == 0 == same.high
    f1 = stats.measure_of("ner", "paper", "value", stats.example_sums(ner).sum().to_dict())
    assert f1 == pytest.approx(2 * 15 / (20 + 25)) == row_from_records("ner", ner, "paper")["value"]
    assert len(stats.example_sums(ner)) == 5  # 4 prompts per sentence resampled together


def test_orderings_that_disagree_keep_the_example_interval_but_take_no_side():
    rng = np.random.default_rng(3)
    before = rng.normal(4, 1, 50)
    noise = rng.normal(0, 0.05, 50)
    agree = [records(before + 0.3 + noise) for _ in range(3)]
    spread = [records(before + d + noise) for d in (0.1, 0.3, 0.5)]
    split = [records(before + d + noise) for d in (-0.1, 0.3, 0.7)]
    e_agree, e_spread, e_split = (stats.paired_damage(x, records(before), "summarization", measure="gold_nll")
                                  for x in (agree, spread, split))
    assert e_agree.estimate == pytest.approx(e_spread.estimate, abs=1e-9) == pytest.approx(e_split.estimate, abs=1e-9)
    assert e_split.per_ordering == pytest.approx([-0.1 + noise.mean(), 0.3 + noise.mean(), 0.7 + noise.mean()])
    assert e_split.orderings == 3 and e_split.examples == 50
    # the interval over examples speaks about the orderings run: the same draw of examples shifts every ordering
    # alike, so a constant offset between orderings does not widen it
    assert e_split.half_width == pytest.approx(e_agree.half_width, rel=1e-6)
    assert e_agree.side() == e_spread.side() == "worse"
    # beyond zero, but one ordering improved the task: no side is taken
    assert e_split.low > 0 and not e_split.orderings_agree and e_split.side() == "unclear"
    # the random-effects interval counts the orderings as chance: three draws say little about their spread,
    # so it covers them all (Welch–Satterthwaite: about 2 degrees of freedom here)
    low, high = e_split.over_orderings
    assert low < min(e_split.per_ordering) and high > max(e_split.per_ordering)
    assert high - low > 10 * (e_split.high - e_split.low)
    sd = np.std(e_split.per_ordering, ddof=1)
    t = sps.t.ppf(0.975, 2)
    assert (high - low) / 2 == pytest.approx(t * sd / np.sqrt(3), rel=0.05)
    assert stats.paired_damage(agree[:1], records(before), "summarization", measure="gold_nll").over_orderings is None


def test_identical_orderings_share_one_draw_of_examples_and_split_ones_are_not_negligible():
    rng = np.random.default_rng(5)
    before = rng.normal(4, 1, 50)
    after = before + 0.3 + rng.normal(0, 0.2, 50)
    one = stats.paired_damage([records(after)], records(before), "summarization", measure="gold_nll")
    three = stats.paired_damage([records(after)] * 3, records(before), "summarization", measure="gold_nll")
    # one draw of examples for every ordering: three copies of an ordering are that ordering, not more evidence
    assert (three.estimate, three.low, three.high) == pytest.approx((one.estimate, one.low, one.high), abs=1e-12)
    # orderings of -0.4 / 0 / +0.4 nats average to 0 with a narrow interval over examples, but they are no evidence
    # of "no practical effect": not within the ±0.05 margin
    noise = rng.normal(0, 0.01, 50)
    split = stats.paired_damage([records(before + d + noise) for d in (-0.4, 0.0, 0.4)], records(before),
                                "summarization", measure="gold_nll")
    assert -0.05 < split.low and split.high < 0.05
    assert split.side(margin=0.05) == "unclear"
    calm = stats.paired_damage([records(before + d + noise) for d in (-0.01, 0.0, 0.01)], records(before),
                               "summarization", measure="gold_nll")
    assert calm.side(margin=0.05) == "negligible"


def test_a_trend_against_a_reference_other_than_zero_and_uneven_orderings():
    rng = np.random.default_rng(7)
    before = rng.normal(4, 1, 40)
    smallest = records(before + 0.5)  # batch 1 already does 0.5 of damage
    larger = {10: [records(before + 0.5 + 0.01 * 9)], 100: [records(before + 0.5 + 0.01 * 99)]}
    more = stats.damage_trend(larger, {10: [smallest], 100: [smallest]}, "summarization", measure="gold_nll",
                              origin=1)
    assert more.estimate == pytest.approx(0.99, abs=1e-6)  # exactly linear in the batch size beyond batch 1
    with pytest.raises(ValueError, match="same 1 orderings"):
        stats.damage_trend({10: [smallest], 20: [smallest, smallest]}, records(before), "summarization",
                           measure="gold_nll")


def test_the_trend_is_the_slope_of_the_damage_over_checkpoints():
    rng = np.random.default_rng(4)
    before = rng.normal(4, 1, 60)
    after = {c: [records(before + 0.02 * c + rng.normal(0, 0.05, 60))] for c in (10, 20, 30)}
    trend = stats.damage_trend(after, records(before), "summarization", measure="gold_nll")
    assert trend.estimate == pytest.approx(0.6, abs=0.02) and trend.side() == "worse"  # the line at 30 edits
    flat = {c: [records(before + rng.normal(0, 0.05, 60))] for c in (10, 20, 30)}
    none = stats.damage_trend(flat, records(before), "summarization", measure="gold_nll")
    assert none.side(margin=0.05) == "negligible"


def test_records_of_other_examples_cannot_be_paired():
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_damage([records([1.0, 2.0, 3.0])], records([1.0, 2.0]), "summarization", measure="gold_nll")


def test_interval_helpers_from_scipy():
    m, lo, hi = stats.paired_mean_interval([0.1, 0.2, 0.3, 0.2, 0.1, 0.25])
    assert lo < m < hi and lo > 0
    r, lo, hi = stats.ratio_interval([0.9, 1.0, 0.95, 1.0], [1.0, 1.0, 1.0, 1.0])
    assert r == pytest.approx(0.9625) and lo <= r <= hi <= 1.0
    assert stats.bonferroni(0.95, 8) == pytest.approx(1 - 0.05 / 8)
    eff = stats.Effect(0.1, 0.02, 0.18, 0.95, 30, 1)
    assert eff.detectable() == pytest.approx(0.08 * (1.959964 + 0.841621) / 1.959964, rel=1e-4)


def test_power_detectable_and_examples_needed_are_inverse_and_read_a_pilot():
    from helpers.report import power

    assert power.detectable(1.0, 40) == pytest.approx(
        (sps.norm.ppf(1 - 0.05 / 16) + sps.norm.ppf(0.8)) / math.sqrt(40))
    assert power.detectable(1.0, power.examples_needed(1.0, 0.3)) == pytest.approx(0.3)
    assert power.detectable(1.0, 160) == pytest.approx(power.detectable(1.0, 40) / 2)
    rng = np.random.default_rng(6)
    before = rng.normal(3, 1, 40)
    frames = []
    for edits, shift in ((0, 0.0), (10, 0.5)):
        frames.append(records(before + shift + (rng.normal(0, 0.2, 40) if edits else 0)).assign(
            chain="ROME", edits=edits, task="summarization", ordering=0))
    frames = pd.concat(frames, ignore_index=True)
    frames["score"] = 0.01  # at the floor: judged on the gold NLL
    table = power.power_table(frames, ns=(40,))
    row = table.iloc[0]
    assert row.measure == "gold_nll" and row.damage == pytest.approx(0.5, abs=0.1)
    assert row.sd == pytest.approx(0.2, rel=0.3)  # the per-example spread of the paired difference
    assert row.detectable_n40 < row.damage and row.n_needed < 40
