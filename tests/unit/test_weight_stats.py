"""Weight-change statistics, Table 1 assembly, downsampling, summaries: hand-made examples."""
import math

import pandas as pd
import pytest
import torch

from helpers.report.sliders import edits_frame
from helpers.report.tables import mean_sd
from helpers.editing.weight_stats import downsample, table1, weight_change_stats


def test_weight_change_stats_on_a_hand_made_example():
    before = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    after = torch.tensor([[1.5, -2.0], [0.25, 4.5]])  # ΔW = .5, 0, .25, .5; δ = .5, 0, inf, .125
    s = weight_change_stats(before, after, thresholds=(0.1, 0.2))
    assert s["manhattan"] == pytest.approx(1.25)
    assert s["frobenius"] == pytest.approx(math.sqrt(0.25 + 0.0625 + 0.25))
    assert s["changed"] == 0.75
    assert s["share_above_0.1"] == 0.75 and s["share_above_0.2"] == 0.5


def test_unchanged_weights_have_no_change():
    w = torch.randn(5, 7)
    s = weight_change_stats(w, w.clone())
    assert s["manhattan"] == 0 and s["share_above_0.077"] == 0 and s["share_above_0.171"] == 0


def test_downsample_keeps_the_block_max_or_mean():
    m = torch.zeros(4, 6)
    m[0, 0] = -3.0
    m[3, 5] = 2.0
    small = downsample(m, (2, 2), "max")
    assert small.tolist() == [[3.0, 0.0], [0.0, 2.0]]
    assert downsample(m, (2, 2), "mean").tolist() == [[pytest.approx(3 / 6), 0.0], [0.0, pytest.approx(2 / 6)]]
    assert downsample(torch.ones(3, 3), (10, 10)).shape == (3, 3)  # small matrices stay as they are
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        downsample(m, (2, 2), "median")


def test_table1_averages_single_edits_and_reads_the_chain():
    rows = pd.DataFrame([
        {"setting": "single", "edits": 1, "manhattan": 2.0, "share_above_0.077": 0.1, "share_above_0.171": 0.05},
        {"setting": "single", "edits": 1, "manhattan": 4.0, "share_above_0.077": 0.3, "share_above_0.171": 0.15},
        {"setting": "sequential", "edits": 1, "manhattan": 9.0, "share_above_0.077": 0.9, "share_above_0.171": 0.9},
        {"setting": "sequential", "edits": 5, "manhattan": 10.0, "share_above_0.077": 0.5, "share_above_0.171": 0.25},
    ])
    t = table1(rows, counts=(1, 5)).set_index("edits")
    assert t.loc[1, "manhattan"] == 3.0 and t.loc[1, "share_above_0.077"] == pytest.approx(20.0)
    assert t.loc[1, "manhattan_sd"] == pytest.approx(math.sqrt(2))
    assert t.loc[5, "share_above_0.171"] == 25.0
    assert t.loc[1, "paper_manhattan"] == 9079.2 and t.loc[5, "paper_share_above_0.077"] == pytest.approx(49.2)


def test_mean_sd_by_group():
    df = pd.DataFrame({"m": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]})
    out = mean_sd(df, "m", ["x"]).set_index("m")
    assert out.loc["a", "x"] == 2.0 and out.loc["a", "x_sd"] == pytest.approx(math.sqrt(2)) and out.loc["a", "n"] == 2
    assert math.isnan(out.loc["b", "x_sd"])


def test_edits_frame_reads_the_cached_cumulative_update():
    cum = {1: {"w": torch.tensor([[1.0, -1.0]])}, 2: {"w": torch.tensor([[2.0, 0.0]])}}
    name, image, stats = edits_frame(cum, 2)
    assert name == "w" and stats["manhattan"] == 2.0 and stats["changed"] == 0.5
    with pytest.raises(KeyError, match=r"after 3 edits: have \[1, 2\]"):
        edits_frame(cum, 3)
