"""The rescues' comparison (notebook 05) on hand-made records: the ranking, the verdicts against
each rescue's family, the held-out perplexity as paired records."""

import numpy as np
import pandas as pd
import pytest

from helpers.report import claims, claims_report, rescues, stats
from helpers.report.tables import RESCUE_EDITING, RESCUE_EXAMPLES, RESCUE_WINDOWS, write_records
from tests.unit.test_claims import TASKS, _records

N = 60


def _chain(variant, facts, damage_per_fact, orderings=3, batch=1):
    """Task records of a chain whose every task loses ``damage_per_fact`` of its examples per fact."""
    rng = np.random.default_rng(0)
    base_nll = rng.uniform(1, 6, N)
    frames = []
    for o in range(orderings):
        for f in facts:
            for task in TASKS:
                lost = min(N, int(round(damage_per_fact * f * N * (1 + 0.1 * o))))
                hits = np.r_[np.zeros(lost), np.ones(N - lost)]
                frames.append(_records(hits, base_nll + 0.02 * f * damage_per_fact * 100, variant=variant,
                                       method=variant.split(" + ")[0], ordering=o, edits=f // batch, edited_facts=f,
                                       task=task))
    return pd.concat(frames, ignore_index=True)


def _windows(variant, facts, nll_per_fact, orderings=3):
    return pd.DataFrame([{"variant": variant, "ordering": o, "edited_facts": f, "window": w,
                          "nll_sum": 64 * (3.0 + 0.01 * w + nll_per_fact * f), "tokens": 64}
                         for o in range(orderings) for f in facts for w in range(12)])


def _editing(variant, facts, reliability, orderings=3):
    return pd.DataFrame([{"variant": variant, "ordering": o, "edited_facts": f, "case_id": 100 * o + i,
                          "reliability": reliability - 0.001 * i, "generalization": reliability, "locality": 1.0}
                         for o in range(orderings) for f in facts if f for i in range(f)])


FACTS = (0, 10, 20)
EX = pd.concat([_chain("ROME", FACTS, 0.01), _chain("ROME + RECT 40%", FACTS, 0.0)], ignore_index=True)
WINDOWS = pd.concat([_windows("ROME", FACTS, 0.02), _windows("ROME + RECT 40%", FACTS, 0.0)], ignore_index=True)
EDITING = pd.concat([_editing("ROME", FACTS, 1.0), _editing("ROME + RECT 40%", FACTS, 0.6)], ignore_index=True)


def test_family_of_a_variant():
    assert rescues.family("ROME + RECT 40%") == "ROME" and rescues.family("ROME + PRUNE") == "ROME"
    assert rescues.family("AlphaEdit") == "MEMIT" and rescues.family("R-ROME") == "ROME"
    assert rescues.family("MEMIT") == "MEMIT"


def test_heldout_windows_measure_the_log_perplexity():
    records = rescues.heldout_as_task_records(_windows("ROME", (0,), 0.0, orderings=1))
    sums = stats.example_sums(records).sum()
    value = stats.measure_of("heldout", "paper", "gold_nll", sums.to_dict())
    assert value == pytest.approx(3.0 + 0.01 * 5.5)  # the token-weighted mean NLL


def test_the_ranking_puts_the_undamaged_variant_first():
    table = rescues.ranking(EX, WINDOWS)
    value = table[table.measure == "value"]
    assert set(value.task) == set(TASKS)
    assert (value[value.variant == "ROME + RECT 40%"]["rank"] == 1).all()
    assert (value[value.variant == "ROME"]["rank"] == 2).all() and (value[value.variant == "ROME"].side == "worse").all()
    held = table[table.task == "heldout"]
    assert held.set_index("variant").damage["ROME"] == pytest.approx(0.02 * 20, rel=1e-6)
    summary = rescues.rank_summary(table)
    assert summary.variant.tolist() == ["ROME + RECT 40%", "ROME"] and summary.worse.tolist() == [0, len(TASKS)]


def test_a_rescue_that_preserves_the_tasks_at_a_cost_in_reliability():
    (line,) = claims.rescue_claims(EX, EDITING, WINDOWS)
    assert line["rescue"] == "ROME + RECT 40%" and line["family"] == "ROME" and line["verdict"] == "holds"
    assert line["tasks"].startswith(f"better on {len(TASKS)} of {len(TASKS)}")
    assert line["heldout"].endswith("rescue better")  # the family's held-out NLL grows beyond the rescue's
    assert "— rescue better" in line["detail"] and "— worse" not in line["detail"]
    change, low, high = (float(x) for x in line["reliability"].replace("[", "").replace("]", "").replace(",", "").split())
    assert change == pytest.approx(-0.4) and high < 0
    table = rescues.against_family(EX, EDITING, WINDOWS)
    assert (table[table.task != "heldout"].low > 0).all()  # the family's extra damage: positive everywhere
    assert (table.side == "rescue better").all()
    assert table.reliability_change.iloc[0] == pytest.approx(change)  # the same cost as claims.md's


def test_a_rescue_no_better_than_its_family_does_not_hold():
    same = pd.concat([_chain("MEMIT", FACTS, 0.01), _chain("AlphaEdit", FACTS, 0.01)], ignore_index=True)
    (line,) = claims.rescue_claims(same)
    # the same records, the same damage: every task's difference is exactly 0, inside the margin
    assert line["family"] == "MEMIT" and line["verdict"] == "does not hold"
    assert line["tasks"] == f"better on 0 of {len(TASKS)}, worse on 0, within the margin on {len(TASKS)}"


def test_the_section_is_written_into_claims_md(tmp_path):
    write_records(EX, tmp_path, RESCUE_EXAMPLES)
    write_records(WINDOWS, tmp_path, RESCUE_WINDOWS)
    write_records(EDITING, tmp_path, RESCUE_EDITING)
    text = claims_report.write_claims(tmp_path).read_text()
    assert "## Beyond RECT" in text and "| ROME + RECT 40% | ROME | 20 | **holds** |" in text


def test_rect_against_rome_is_one_computation_in_c8_and_in_the_rescues_tables():
    # the same chains as the paper's C8 sees them (how / k) and as notebook 05 does (variant)
    c8_view = EX.assign(how=np.where(EX.variant == "ROME", "none", "rect"), k=np.where(EX.variant == "ROME", 1.0, 0.4))
    text, _ = claims.claim_c8(c8_view)
    (line,) = claims.rescue_claims(EX)
    table = rescues.against_family(EX, EDITING)
    for task in TASKS:
        row = table[table.task == task].iloc[0]
        shown = f"{row.advantage:+.3f} [{row.low:+.3f}, {row.high:+.3f}]"
        assert shown in text.split(f"{task} (")[1].split(";")[0]
        assert shown in line["detail"].split(f"{task} (")[1].split(";")[0]
