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


def test_one_ordering_of_a_mean_is_the_studentized_mean_of_the_per_example_differences():
    rng = np.random.default_rng(1)
    before = rng.normal(3, 1, 400)
    after = before + rng.normal(0.1, 0.3, 400)
    sample = stats.damage_sample([records(after)], records(before), "summarization", measure="gold_nll")
    # for a mean, an example's jackknife value is its own change
    assert sample.pseudo[0] == pytest.approx(after - before, rel=1e-9, abs=1e-9)
    eff = stats.paired_damage([records(after)], records(before), "summarization", measure="gold_nll")
    assert eff.estimate == pytest.approx(float(np.mean(after - before)))
    assert eff.se == pytest.approx(float(sps.sem(after - before)), rel=1e-9)
    assert eff.estimate - eff.low == pytest.approx(eff.high - eff.estimate)
    # on 400 normal differences the studentized bootstrap's 95% point is the normal one
    assert eff.critical == pytest.approx(sps.norm.ppf(0.975), abs=0.08)


def test_ner_jackknife_values_are_leave_one_sentence_out_by_hand():
    def ner(seed):
        r = np.random.default_rng(seed)
        gold = r.integers(0, 3, 40)
        return records(score=[0.0] * 40, task_prompts=4, tp=np.minimum(gold, r.integers(0, 3, 40)),
                       predicted=r.integers(0, 3, 40), gold=gold)
    before, after = ner(1), ner(2)
    before["tp"] = np.minimum(before.tp, before.predicted)
    after["tp"] = np.minimum(after.tp, after.predicted)
    sample = stats.damage_sample([after], before, "ner")
    f1 = lambda r: row_from_records("ner", r, "paper")["value"]
    full = f1(before) - f1(after)
    by_hand = [10 * full - 9 * (f1(before[before.example != i]) - f1(after[after.example != i])) for i in range(10)]
    assert sample.pseudo[0] == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
    assert sample.examples == 10  # the sentence is the unit: 10 sentences of 4 prompts


def test_a_family_of_intervals_is_wider_than_one_and_simultaneous():
    rng = np.random.default_rng(9)
    before = rng.normal(3, 1, 300)
    one = [stats.damage_sample([records(before + rng.normal(0.0, 0.3, 300))], records(before), "summarization",
                               measure="gold_nll") for _ in range(8)]
    single = stats.intervals(one[:1])[0]
    family = stats.intervals(one)
    assert all(e.family == 8 and e.critical == family[0].critical for e in family)
    # 8 independent normal comparisons: about the Bonferroni point of 8, well beyond a single interval's
    assert family[0].critical == pytest.approx(sps.norm.ppf(1 - 0.05 / 16), abs=0.15)
    assert family[0].critical > single.critical + 0.5
    assert family[0].alpha == pytest.approx(0.05 / 8)


def test_variance_components_recover_orderings_examples_and_interaction():
    rng = np.random.default_rng(10)
    a = np.array([-1.0, 0.0, 1.0])            # ordering effects: variance 1
    b = rng.normal(0, 2, 400)                  # example effects: variance ~4
    additive = stats.DamageSample(a + 0.5, a[:, None] + b[None, :] + 0.5)
    c = stats.variance_components(additive)
    assert c["orderings"] == pytest.approx(1.0, rel=1e-6) and c["interaction"] == pytest.approx(0.0, abs=1e-9)
    assert c["examples"] == pytest.approx(float(np.var(b, ddof=1)), rel=1e-6)
    # interaction only: the random-effects standard error counts it once (σ²_OE / (S·n)), not twice
    e = rng.normal(0, 1, (3, 400))
    noise = stats.DamageSample(e.mean(1), e)
    se, df = stats.random_effects(noise)
    assert stats.variance_components(noise)["interaction"] == pytest.approx(1.0, rel=0.15)
    assert se == pytest.approx(np.sqrt(1.0 / 1200), rel=0.15) and df >= 1


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
    # so it covers them all (Satterthwaite: about 2 degrees of freedom here)
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


def test_records_of_other_examples_cannot_be_paired():
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_damage([records([1.0, 2.0, 3.0])], records([1.0, 2.0]), "summarization", measure="gold_nll")


def test_interval_helpers_from_scipy():
    m, lo, hi = stats.paired_mean_interval([0.1, 0.2, 0.3, 0.2, 0.1, 0.25])
    assert lo < m < hi and lo > 0
    r, lo, hi = stats.ratio_interval([0.9, 1.0, 0.95, 1.0], [1.0, 1.0, 1.0, 1.0])
    assert r == pytest.approx(0.9625) and lo <= r <= hi <= 1.0
    assert stats.bonferroni(0.95, 8) == pytest.approx(1 - 0.05 / 8)
    eff = stats.Effect(0.1, 0.02, 0.18, 0.95, 30, 1, se=0.04, critical=2.0)
    assert eff.detectable() == pytest.approx(0.04 * (2.0 + 0.841621), rel=1e-4)


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


def test_what_would_decide_a_damage_counts_the_orderings_spread():
    from helpers.report import sensitivity

    z = sps.norm.ppf(1 - 0.05 / 16) + sps.norm.ppf(0.8)  # one of a family of 8, 80% power

    def effect(orderings, examples, interaction):
        return stats.Effect(0.5, 0.0, 1.0, 0.95, 40, 3, family=8,
                            components={"orderings": orderings, "examples": examples, "interaction": interaction})

    # orderings that differ a lot (σ²_O = 0.09): more examples cannot decide it at 3 orderings, more orderings can
    need = sensitivity.needed(effect(0.09, 0.1, 0.1), 0.5)
    assert need["examples"] == math.inf and need["sd_orderings"] == pytest.approx(0.3)
    assert need["orderings"] == next(s for s in range(1, 10000)
                                     if z * math.sqrt(0.09 / s + 0.1 / 40 + 0.1 / (s * 40)) <= 0.5)
    # orderings that agree: examples decide it; the smallest n with z·√(σ²_E/n + σ²_OE/(3n)) ≤ 0.5, by hand
    calm = sensitivity.needed(effect(0.0, 2.0, 0.5), 0.5)
    assert calm["examples"] == next(n for n in range(1, 100000) if z * math.sqrt(2.0 / n + 0.5 / (3 * n)) <= 0.5)
    assert calm["examples"] > 40
