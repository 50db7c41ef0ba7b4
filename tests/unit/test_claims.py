"""The claims report: which measure judges a task, what counts as damage, the verdicts."""
import math

import pandas as pd
import pytest

from helpers.report import claims


def _row(task="nli", value=0.5, chance=0.5, prompts=100, nll=2.0, nll_sd=1.0, **kw):
    return pd.Series({"task": task, "value": value, "chance": chance, "prompts": prompts, "gold_nll": nll,
                      "gold_nll_sd": nll_sd, "n": prompts, **kw})


def test_a_task_at_chance_is_judged_on_gold_nll():
    assert claims.judge_measure(_row(value=0.52, chance=0.5, prompts=100)) == "gold_nll"  # within 2 SE (0.1)
    assert claims.judge_measure(_row(value=0.75, chance=0.5, prompts=100)) == "value"
    assert claims.judge_measure(_row(value=0.02, chance=math.nan)) == "gold_nll"  # generation task at the floor
    assert claims.judge_measure(_row(value=0.30, chance=math.nan)) == "value"


def test_damage_and_its_noise_by_hand():
    d, noise = claims.damage(_row(value=0.8), _row(value=0.6), "value")
    assert d == pytest.approx(0.2)
    assert noise == pytest.approx(2 * math.sqrt(0.8 * 0.2 / 100 + 0.6 * 0.4 / 100))
    d, noise = claims.damage(_row(nll=2.0, nll_sd=1.0), _row(nll=2.5, nll_sd=1.0), "gold_nll")
    assert d == pytest.approx(0.5) and noise == pytest.approx(2 * math.sqrt(2 / 100))


def test_task_changes_flags_only_changes_beyond_the_noise():
    base = pd.DataFrame([_row("a", value=0.8, chance=0.5), _row("b", value=0.5, chance=0.5, nll=2.0)])
    after = pd.DataFrame([_row("a", value=0.78, chance=0.5), _row("b", value=0.5, chance=0.5, nll=3.0)])
    ch = claims.task_changes(after, base).set_index("task")
    assert ch.loc["a", "measure"] == "value" and not ch.loc["a", "worse"]  # 0.02 is within the noise
    assert ch.loc["b", "measure"] == "gold_nll" and ch.loc["b", "worse"]


def test_c5_holds_only_when_manhattan_and_share_both_grow():
    t = pd.DataFrame({"edits": [1, 5, 10], "source": ["mean of 20 single edits", "chain", "chain"],
                      "manhattan": [10.0, 30.0, 50.0], "share_above_0.077": [20.0, 40.0, 60.0],
                      "share_above_0.077_sd": [3.0, float("nan"), float("nan")]})
    text, verdict = claims.claim_c5(t)
    assert verdict == "holds" and "20.0% ± 3.0" in text
    t.loc[2, "manhattan"] = 20.0
    assert claims.claim_c5(t)[1] == "does not hold"


def test_c7_compares_rect_with_the_baselines_on_the_same_edits():
    rows = []
    for case in range(6):
        for reg, rel in (("RECT 40%", 0.9 + 0.01 * case), ("Random 40%", 0.2), ("PCA 40%", 0.1)):
            rows.append({"method": "ROME", "regularizer": reg, "case_id": case, "reliability": rel,
                         "generalization": rel})
    text, verdict = claims.claim_c7(pd.DataFrame(rows))
    assert verdict == "holds" and "4 of 4" in text


def test_write_claims_reports_every_claim_even_when_nothing_was_measured(tmp_path):
    path = claims.write_claims(tmp_path, "smoke")
    text = path.read_text()
    for c in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"):
        assert f"| {c} | **not measured** |" in text


def _side_rows(method, setting, batch, edits, nll, task="nli"):
    return {"method": method, "setting": setting, "batch_size": batch, "how": "none", "k": 0.4,
            "chain": f"{method} b{batch}", "edits": edits, "task": task, "value": 0.5, "chance": 0.5,
            "prompts": 100, "n": 100, "gold_nll": nll, "gold_nll_sd": 0.5}


def test_c3_compares_the_largest_batch_with_the_smallest_and_writes_one_table_row(tmp_path):
    rows = []
    for task in ("nli", "sentiment", "ner", "dialogue", "closed_qa"):
        for batch, nll in ((1, 2.1), (10, 3.0)):
            rows += [_side_rows("MEMIT", "batch-single", batch, 0, 2.0, task),
                     _side_rows("MEMIT", "batch-single", batch, 1, nll, task)]
            rows += [_side_rows("MEND", "batch-single", batch, 0, 2.0, task),
                     _side_rows("MEND", "batch-single", batch, 1, 2.1, task)]
    (text_memit, verdict_memit), (text_mend, verdict_mend) = [c[1:] for c in claims.claim_c3(pd.DataFrame(rows))]
    assert verdict_memit == "holds" and "5 of 5 tasks worse" in text_memit
    assert verdict_mend == "inconclusive at this n"
    (tmp_path / "tables").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "tables" / "side_effects_rows.csv", index=False)
    line = next(l for l in claims.write_claims(tmp_path).read_text().splitlines() if l.startswith("| C3 |"))
    assert line.count(" | ") == 3 and "mixed: holds, inconclusive at this n" in line


def test_c8_judges_rect_against_the_unregularized_chain_at_the_last_point():
    rows = []
    for task in ("nli", "sentiment", "ner"):
        rows.append({**_side_rows("ROME", "instance-sequential", 1, 0, 2.0, task), "how": "none"})
        rows.append({**_side_rows("ROME", "instance-sequential", 1, 10, 4.0, task), "how": "none"})
        rows.append({**_side_rows("ROME", "instance-sequential", 1, 10, 2.2, task), "how": "rect"})
    text, verdict = claims.claim_c8(pd.DataFrame(rows))
    assert verdict == "holds" and "better than unregularized beyond 2 SE on 3 of 3" in text
