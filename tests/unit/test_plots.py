"""The side-effect figure draws what its rows say: a batch edited jointly and the same batch edited
as released are two lines (averaging them would draw a reading nobody ran), and numbers of edits get
whole-number ticks."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.report.plots import measure_lines, side_effect_lines  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")  # pyplot keeps every figure open until closed: the suite would hold dozens


def _rows():
    rows = []
    for reading, values in (("joint", {1: 0.5, 10: 0.4}), ("chunks", {1: 0.5, 10: 0.1})):
        rows.append({"method": "MEMIT", "batch_edit": reading, "batch_size": 1, "edits": 0, "task": "nli",
                     "metric": "accuracy", "value": 0.5})
        for size, value in values.items():
            rows.append({"method": "MEMIT", "batch_edit": reading, "batch_size": size, "edits": 1, "task": "nli",
                         "metric": "accuracy", "value": value})
    return pd.DataFrame(rows)


def _lines(fig):
    return {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()
            if not line.get_label().startswith("_") and line.get_label() != "unedited"}


def test_each_reading_of_a_batch_is_its_own_line():
    fig = side_effect_lines(_rows(), x="batch_size", hue="method", style="batch_edit")
    lines = _lines(fig)
    assert lines == {"MEMIT (joint)": [0.5, 0.4], "MEMIT (as released)": [0.5, 0.1]}
    dashes = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert dashes["MEMIT (joint)"] != dashes["MEMIT (as released)"]
    # without the split the two readings are averaged: the reason for style=
    assert _lines(side_effect_lines(_rows(), x="batch_size", hue="method")) == {"MEMIT": [0.5, 0.25]}


def test_numbers_of_edits_get_whole_number_ticks():
    df = pd.DataFrame([{"chain": "KN", "edits": e, "task": "nli", "metric": "accuracy", "value": v}
                       for e, v in ((0, 0.5), (1, 0.2))])
    fig = side_effect_lines(df)
    ticks = [t for t in fig.axes[0].get_xticks() if -0.5 <= t <= 1.5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_edit_ticks_fall_on_round_numbers():
    # the checkpoints 0, 10, 25, 50: ticks every 10 (not 6, 12, 18, ...)
    df = pd.DataFrame([{"chain": "ROME", "edits": e, "task": "nli", "metric": "accuracy", "value": 0.5}
                       for e in (0, 10, 25, 50)])
    ticks = [t for t in side_effect_lines(df).axes[0].get_xticks() if 0 <= t <= 50]
    assert len(ticks) >= 3 and all(t % 10 == 0 for t in ticks), ticks


def test_log_axes_are_labelled_in_plain_numbers():
    # condition growth spans less than a decade (0.8 to 1.3): matplotlib's default labels it 9 × 10⁻¹
    df = pd.DataFrame({"variant": ["ROME"] * 3, "edited_facts": [0, 25, 50], "condition_growth": [1.0, 0.85, 1.3]})
    fig = measure_lines(df, ["condition_growth"], log_scale=["condition_growth"])
    fig.canvas.draw()
    axis = fig.axes[0].yaxis
    low, high = fig.axes[0].get_ylim()
    labels = [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels()
              if t.get_text() and low <= t.get_position()[1] <= high]
    assert labels, "the log axis has no labels"
    assert not any("times" in text or "^" in text for text in labels), labels
    assert len(labels) >= 3 and "1" in labels, labels


def test_own_scale_gives_each_method_its_panels_and_batch_ticks():
    # MEND's damage dwarfs MEMIT's: on a shared scale MEMIT's line reads as flat
    rows = []
    for method, values in (("MEMIT", {1: 2.0, 10: 2.1, 50: 2.2}), ("MEND", {1: 2.0, 10: 10.0, 50: 50.0})):
        rows.append({"method": method, "batch_size": 1, "edits": 0, "task": "nli", "metric": "nll", "value": 2.0})
        rows += [{"method": method, "batch_size": b, "edits": 1, "task": "nli", "metric": "nll", "value": v}
                 for b, v in values.items()]
    fig = side_effect_lines(pd.DataFrame(rows), x="batch_size", hue="method", own_scale=True)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in shown] == ["MEMIT\nnli (nll)", "MEND\nnli (nll)"]
    assert shown[0].get_ylim()[1] < 3 < 40 < shown[1].get_ylim()[1]
    fig.canvas.draw()
    assert [t.get_text() for t in shown[0].get_xticklabels()] == ["1", "10", "50"]
    shared = side_effect_lines(pd.DataFrame(rows), x="batch_size", hue="method")
    assert len([ax for ax in shared.axes if ax.get_visible() and ax.get_title()]) == 1
