"""The collapse horizon's arithmetic on hand-made traces (helpers/report/horizon.py): where a chain
collapses, censoring, the paired delay and its verdicts."""
import math

import pandas as pd
import pytest

from helpers.report import horizon


def _traces(chain, ordering, nlls, collapsed=None, method="ROME"):
    rows = [{"chain": chain, "method": method, "variant": chain, "ordering": ordering, "edits": i,
             "heldout_nll": v, "norm_growth": 1.0 + 0.1 * i,
             "collapsed": bool(collapsed is not None and i >= collapsed)} for i, v in enumerate(nlls)]
    return pd.DataFrame(rows)


def test_log_checkpoints_double_and_end_at_the_length():
    assert horizon.log_checkpoints(20) == (0, 1, 2, 4, 8, 16, 20)
    assert horizon.log_checkpoints(16) == (0, 1, 2, 4, 8, 16)
    assert horizon.log_checkpoints(8, per_doubling=2) == (0, 1, 2, 3, 4, 6, 8)
    with pytest.raises(ValueError):
        horizon.log_checkpoints(0)


def test_a_chain_collapses_at_the_first_edit_past_the_rise_or_the_nan_flag():
    t = pd.concat([_traces("A", 0, [3.0, 3.1, 3.5, 4.2, 9.0]),  # 4.2 - 3.0 > 1 at edit 3
                   _traces("A", 1, [3.0, 3.1, 3.2, 3.3, 3.4]),  # never: censored at 4
                   _traces("A", 2, [3.0, 3.1, 3.1, 3.1, 3.1], collapsed=2)])  # NaN weights at edit 2
    p = horizon.collapse_points(t).set_index("ordering")
    assert p.collapse.tolist() == [3, 4, 2] and p.censored.tolist() == [False, True, False]
    assert p.loc[0, "max_norm_growth"] == pytest.approx(1.4)
    # a rise of exactly the threshold is not past it
    assert horizon.collapse_points(_traces("B", 0, [3.0, 4.0]), rise=1.0).censored.iloc[0]


def test_the_delay_is_the_paired_log_ratio_with_a_t_interval():
    rows = []
    for o, (plain, rescue) in enumerate([(4, 16), (8, 16), (4, 32)]):
        rows += [{"chain": "P", "ordering": o, "collapse": plain, "censored": False},
                 {"chain": "R", "ordering": o, "collapse": rescue, "censored": False}]
    d = horizon.delay(pd.DataFrame(rows), "R", "P")
    assert d.per_ordering == [2.0, 1.0, 3.0] and d.estimate == pytest.approx(2.0)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) × sd 1 / √3
    assert d.interval == pytest.approx((2.0 - half, 2.0 + half))
    assert d.verdict == "inconclusive"  # three orderings this spread: the interval reaches below 0
    tight = pd.DataFrame([{"chain": c, "ordering": o, "collapse": v, "censored": False}
                          for o, (a, b) in enumerate([(4, 16), (8, 32), (4, 17)]) for c, v in (("P", a), ("R", b))])
    assert horizon.delay(tight, "R", "P").verdict == "delays"
    assert horizon.delay(tight, "P", "R").verdict == "hastens"

def test_censoring_bounds_the_delay_and_a_sign_test_decides():
    def points(n, plain_censored=False):
        rows = []
        for o in range(n):
            rows += [{"chain": "P", "ordering": o, "collapse": 8, "censored": plain_censored},
                     {"chain": "R", "ordering": o, "collapse": 64, "censored": True}]  # never collapsed
        return pd.DataFrame(rows)

    three = horizon.delay(points(3), "R", "P")
    assert three.low == [3.0] * 3 and all(math.isinf(h) for h in three.high)
    assert three.verdict == "inconclusive"  # 3 of 3 later: sign test p = 1/8
    assert horizon.delay(points(5), "R", "P").verdict == "delays"  # 5 of 5: p = 1/32
    assert horizon.delay(points(5, plain_censored=True), "R", "P").verdict == "inconclusive"  # both censored


def test_claims_md_states_each_rescues_delay_and_its_verdict(tmp_path):
    from helpers.report import tables
    from helpers.report.claims_report import horizon_section

    t = pd.concat([_traces("ROME", o, [3.0, 3.2, 3.6, 4.3, 5.0]) for o in range(3)]
                  + [_traces("ROME + RECT", o, [3.0, 3.0, 3.1, 3.1, 3.2]) for o in range(3)])
    t["variant"] = t.chain.map({"ROME": "ROME", "ROME + RECT": "ROME+rect0.4"})
    points = horizon.collapse_points(t)
    tables.write_table(points, tmp_path, tables.HORIZON_COLLAPSE)
    tables.write_table(horizon.horizon_table(points, {"ROME + RECT": "ROME"}), tmp_path, tables.HORIZON)
    lines = horizon_section(tmp_path)
    row = next(x for x in lines if x.startswith("| ROME + RECT |"))
    # ROME collapses at edit 3 in every ordering, the rescue never (censored at 4): at least log2(4/3)
    assert "≥4 / ≥4 / ≥4 [≥4] / 3 / 3 / 3 [3–3]" in row and "+0.42" in row
    assert "**inconclusive**" in row  # three orderings: the sign test cannot go below 1/8
    assert "**not measured**" in row  # no downstream records were written
    assert horizon_section(tmp_path / "empty") == []


def test_a_chains_collapse_interval_is_the_t_interval_of_its_log_points_or_a_lower_bound():
    from scipy import stats as sps

    part = pd.DataFrame({"collapse": [32, 64, 128], "censored": [False] * 3})
    low, high = horizon.collapse_interval(part)
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # log2 points 5, 6, 7: mean 6, sd 1
    assert (low, high) == pytest.approx((2 ** (6 - half), 2 ** (6 + half)))
    assert horizon.collapse_interval(part.assign(censored=[False, True, False])) == (32.0, math.inf)
    assert horizon.collapse_interval(pd.DataFrame({"collapse": [40] * 3, "censored": [False] * 3})) == pytest.approx((40, 40))


def test_horizon_lines_gives_each_family_a_row_on_its_own_scale():
    import matplotlib.pyplot as plt

    from helpers.report import plots

    rows = [{"variant": v, "family": f, "ordering": o, "edits": e, "norm_growth": 1 + scale * e}
            for v, f, scale in (("ROME", "ROME", 0.01), ("ROME + RECT 40%", "ROME", 0.009), ("MEMIT", "MEMIT", 1e-4),
                                ("NAS", "MEMIT", 2e-4))
            for o in range(3) for e in (1, 2, 4, 8, 16)]
    fig = plots.horizon_lines(pd.DataFrame(rows), ["norm_growth"], row="family")
    top, bottom = fig.axes[0], fig.axes[1]
    assert top.get_title().startswith("ROME") and bottom.get_title().startswith("MEMIT")
    assert bottom.get_ylim()[1] < 1.01 < top.get_ylim()[1]  # MEMIT's 0.3 % is not flattened by ROME's 16 %
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ROME", "ROME + RECT 40%", "MEMIT", "NAS"]
    labels = [t.get_text() for t in top.get_xticklabels() + top.get_xticklabels(minor=True) if t.get_text()]
    assert {"1", "2", "4", "8", "16"} <= set(labels)  # plain numbers at the checkpoints' powers of two, nothing else
    assert all(math.log2(float(x)).is_integer() for x in labels)
    plt.close(fig)


def test_horizon_lines_go_on_dotted_where_some_orderings_have_ended():
    import matplotlib.pyplot as plt

    from helpers.report import plots

    ends = {0: 16, 1: 8, 2: 16}  # ordering 1's chain collapsed and ended at 8 edits
    rows = [{"variant": "ROME", "ordering": o, "edits": e, "norm_growth": 1 + 0.01 * e}
            for o, end in ends.items() for e in (1, 2, 4, 8, 16) if e <= end]
    fig = plots.horizon_lines(pd.DataFrame(rows), ["norm_growth"])
    solid, dotted = [line for line in fig.axes[0].get_lines() if line.get_label() != "unedited"]
    assert list(solid.get_xdata()) == [1, 2, 4, 8] and solid.get_linestyle() == "-"
    assert list(dotted.get_xdata()) == [8, 16] and dotted.get_linestyle() == ":"  # joined at the last full point
    assert "dotted" in fig._suptitle.get_text()
    plt.close(fig)

    full = plots.horizon_lines(pd.DataFrame([r for r in rows if r["ordering"] != 1]), ["norm_growth"])
    assert [line.get_linestyle() for line in full.axes[0].get_lines()] == ["-"]
    assert "dotted" not in full._suptitle.get_text()
    plt.close(full)
