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
