"""Figures in the paper's layout (seaborn). Each function returns a matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def baseline_bars(df: pd.DataFrame, title: str = "Unedited model") -> plt.Figure:
    """Left: each task's headline metric per protocol, chance levels as black ticks. Right:
    the gold answer's NLL (lower is better), which still moves when the metric is at chance."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), constrained_layout=True)
    sns.barplot(df, x="task", y="value", hue="protocol", ax=ax1, palette="deep")
    chance = df.drop_duplicates("task")
    ax1.scatter(chance.task, chance.chance, marker="_", s=600, color="black", zorder=5, label="chance")
    ax1.set(ylabel="headline metric", xlabel="", ylim=(0, 1), title=f"{title}: task metrics")
    ax1.legend(loc="upper right", fontsize=9)
    sns.barplot(df[df.protocol == df.protocol.iloc[0]], x="task", y="gold_nll", ax=ax2, color="#8172b3")
    ax2.set(ylabel="gold answer NLL per token", xlabel="", title=f"{title}: gold-answer NLL")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
    return fig


def weight_change_heatmaps(deltas: dict, max_shape=(160, 160), reduce: str = "max", title: str = "|ΔW|") -> plt.Figure:
    """One heat map of ``|ΔW|`` per entry of ``deltas`` (label → ``[out, in]`` tensor), on a
    shared colour scale, each matrix shrunk by blocks to at most ``max_shape`` taking the block
    ``max`` (default; sparse large changes stay visible) or ``mean`` (paper Fig. 5)."""
    from .weight_stats import downsample

    sns.set_theme(style="white", context="notebook")
    small = {k: downsample(v, max_shape, reduce).numpy() for k, v in deltas.items()}
    top = max(float(m.max()) for m in small.values()) or 1.0
    fig, axes = plt.subplots(1, len(small), figsize=(3.4 * len(small) + 0.8, 3.6), constrained_layout=True,
                             squeeze=False)
    for i, (ax, (label, m)) in enumerate(zip(axes[0], small.items())):
        sns.heatmap(m, ax=ax, vmin=0, vmax=top, cmap="rocket_r", cbar=i == len(small) - 1,
                    xticklabels=False, yticklabels=False, cbar_kws={"label": f"block {reduce} of |ΔW|"})
        ax.set(title=str(label), xlabel="in", ylabel="out" if i == 0 else "")
    fig.suptitle(title)
    return fig


def regularizer_bars(df: pd.DataFrame, metrics=("reliability", "generalization", "locality"),
                     title: str = "Editing performance under regularization") -> plt.Figure:
    """Paper Fig. 7: one panel per method, bars per metric and regulariser (mean over the
    edited records, error bars one standard deviation)."""
    sns.set_theme(style="whitegrid", context="notebook")
    methods = list(dict.fromkeys(df.method))
    long = df.melt(id_vars=["method", "regularizer", "case_id"], value_vars=list(metrics), var_name="metric")
    order = list(dict.fromkeys(df.regularizer))
    fig, axes = plt.subplots(1, len(methods), figsize=(7.5 * len(methods), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.barplot(long[long.method == method], x="metric", y="value", hue="regularizer", hue_order=order,
                    errorbar="sd", ax=ax, palette="deep", err_kws={"linewidth": 1})
        n = df[df.method == method].case_id.nunique()
        ax.set(ylim=(0, 1.05), xlabel="", ylabel="score", title=f"{method} (n = {n} edits, ± sd)")
        ax.legend(fontsize=8, ncol=2, loc="lower left")
    fig.suptitle(title)
    return fig
