"""The slider views, driven as a browser would drive them (widget values, button clicks)."""
import matplotlib
import pytest
import torch

from helpers.report.sliders import edits_frame, weight_change_readout, weight_change_view

matplotlib.use("Agg")


def _cumulative(counts):
    gen = torch.Generator().manual_seed(0)
    return {c: {"w": torch.randn(8, 6, generator=gen) * c} for c in counts}


def _readout(view):
    return next(w for w in view.children if "edithurt-readout" in getattr(w, "_dom_classes", ()))


def test_moving_the_edits_slider_shows_that_points_numbers():
    cumulative = _cumulative([1, 2, 3])
    view = weight_change_view(cumulative)
    slider = view.children[0]
    for n in (1, 3, 2):
        slider.value = n
        name, _, stats = edits_frame(cumulative, n)
        assert _readout(view).value == weight_change_readout(name, n, stats)
        assert f"Σ|ΔW| = {cumulative[n]['w'].abs().sum():.1f}" in _readout(view).value


def test_the_button_computes_more_edits_and_the_slider_reaches_them():
    cumulative = _cumulative([1, 2])
    asked = []

    def extend(total):
        asked.append(total)
        return _cumulative(range(1, total + 1))

    view = weight_change_view(cumulative, extend=extend, step=3)
    slider, button = view.children[0].children
    button.click()
    assert asked == [5] and slider.max == 5 and slider.value == 5
    assert "after 5 edits" in _readout(view).value and not button.disabled


def test_a_count_without_a_cached_update_is_named():
    with pytest.raises(KeyError, match=r"after 4 edits: have \[1, 2\]"):
        edits_frame(_cumulative([1, 2]), 4)


def _traces():
    import pandas as pd

    rows = []
    for chain, slope in (("ROME", 0.3), ("ROME + RECT 40%", 0.05)):
        for ordering in (0, 1):
            for e in range(6):
                rows.append({"chain": chain, "ordering": ordering, "edits": e, "method": "ROME",
                             "variant": chain, "heldout_nll": 3.0 + slope * e * (1 + ordering),
                             "norm_growth": 1 + 0.1 * slope * e, "top_singular_growth": 1 + slope * e})
    return pd.DataFrame(rows)


def test_the_horizon_slider_reads_each_chain_at_its_number_of_edits():
    from helpers.report.sliders import horizon_at, horizon_readout, horizon_view

    traces = _traces()
    at = horizon_at(traces, 4).set_index("chain")
    # ROME: 3 + 0.3·4 = 4.2 and 3 + 0.3·4·2 = 5.4 → mean 4.8, range 4.2–5.4; past +1 nat in both orderings by 4
    assert at.loc["ROME", "heldout_nll"] == pytest.approx(4.8)
    assert (at.loc["ROME", "heldout_nll_low"], at.loc["ROME", "heldout_nll_high"]) == pytest.approx((4.2, 5.4))
    assert at.loc["ROME", "collapsed"] == 2 and at.loc["ROME + RECT 40%", "collapsed"] == 0
    # after 2 edits ROME's first ordering (3.6) is not yet past the rule, its second (4.2) is
    assert horizon_at(traces, 2).set_index("chain").loc["ROME", "collapsed"] == 1
    view = horizon_view(traces)
    slider = view.children[0]
    for n in (1, 5, 3):
        slider.value = n
        assert _readout(view).value == horizon_readout(n, horizon_at(traces, n))
        assert _readout(view).value.startswith(f"after {n} edit")
    with pytest.raises(KeyError, match="no trace after 9 edits"):
        horizon_at(traces, 9)
    # ROME's second ordering ended at its collapse (edit 2): it counts as collapsed, the means are the first's
    ended = traces[~((traces.chain == "ROME") & (traces.ordering == 1) & (traces.edits > 2))]
    at = horizon_at(ended, 4).set_index("chain")
    assert at.loc["ROME", "collapsed"] == 2 and at.loc["ROME", "orderings"] == 2 and at.loc["ROME", "running"] == 1
    assert at.loc["ROME", "heldout_nll"] == pytest.approx(4.2)
    both = ended[~((ended.chain == "ROME") & (ended.edits > 4))]  # and the first at its collapse, edit 4
    at = horizon_at(both, 5).set_index("chain")
    assert at.loc["ROME", "running"] == 0 and "ROME: ended, collapsed in 2/2" in horizon_readout(5, at.reset_index())
