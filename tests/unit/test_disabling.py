"""Disabling edits (helpers.report.disabling): the flag rule and the spread it explains, on hand-made traces."""
import numpy as np
import pandas as pd
import pytest

from helpers.report import claims_report, disabling
from helpers.report.tables import EDIT_TRACES, write_table


def _traces(jumps_by_ordering: dict[int, list[float]], chain="ROME", start=3.0) -> pd.DataFrame:
    rows = []
    for o, jumps in jumps_by_ordering.items():
        nll = start
        rows.append({"chain": chain, "method": chain, "setting": "instance-sequential", "ordering": o, "edits": 0,
                     "heldout_nll": nll, "norm_growth": 1.0})
        for e, j in enumerate(jumps, 1):
            nll += j
            rows.append({"chain": chain, "method": chain, "setting": "instance-sequential", "ordering": o, "edits": e,
                         "heldout_nll": nll, "norm_growth": 1.0 + 0.01 * e})
    return pd.DataFrame(rows)


def test_one_edit_that_jumps_is_flagged_and_carries_the_spread_between_orderings():
    rng = np.random.default_rng(0)
    steady = {o: list(0.01 + rng.normal(0, 0.005, 20)) for o in range(3)}
    steady[1][12] = 1.5  # ordering 1's 13th edit breaks the model
    flags = disabling.flag_edits(_traces(steady))
    hit = flags[flags.flagged]
    assert list(zip(hit.ordering, hit.edits)) == [(1, 13)]
    assert hit.jump.iloc[0] == pytest.approx(1.5)
    spread = disabling.spread_explained(_traces(steady)).iloc[0]
    assert spread.flagged == 1 and "ordering 1: edit 13 (+1.50)" in spread.flagged_edits
    assert spread.sd_between > 0.8 and spread.sd_between_without_flagged < 0.05


def test_a_steady_chain_flags_nothing_and_a_one_edit_chain_needs_a_collapse():
    rng = np.random.default_rng(1)
    assert not disabling.flag_edits(_traces({o: list(0.02 + rng.normal(0, 0.01, 30)) for o in range(3)})).flagged.any()
    # tiny jumps, tinier spread: a jump 5 robust SDs out but below the 0.05-nat floor is no flag
    assert not disabling.flag_edits(_traces({0: [0.001] * 10 + [0.03]})).flagged.any()
    kn = disabling.flag_edits(_traces({0: [8.0], 1: [0.2], 2: [0.1]}, chain="KN"))
    assert kn.flagged.tolist() == [True, False, False]


def test_claims_md_holds_the_section_when_notebook_01_wrote_traces(tmp_path):
    write_table(_traces({0: [0.01] * 9 + [2.0], 1: [0.01] * 10, 2: [0.012] * 10}), tmp_path, EDIT_TRACES)
    text = claims_report.write_claims(tmp_path).read_text()
    assert "## Disabling edits" in text and "ordering 0: edit 10 (+2.00)" in text
