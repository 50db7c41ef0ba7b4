"""The side-effect figure draws what its rows say: a batch edited jointly and the same batch edited
as released are two lines (averaging them would draw a reading nobody ran), and numbers of edits get
whole-number ticks."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from helpers.report.plots import side_effect_lines  # noqa: E402


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
