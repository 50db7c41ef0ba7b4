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
