"""Figures in the paper's layout (seaborn). Each function returns a matplotlib Figure."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
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
    from ..editing.weight_stats import downsample

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
                    errorbar="sd", ax=ax, palette="deep", err_kws={"linewidth": 1}, legend=ax is axes[0][0])
        n = df[df.method == method].case_id.nunique()
        ax.set(ylim=(0, 1.05), xlabel="", ylabel="score", title=f"{method} (n = {n} edits, ± sd)")
    _legend_outside(fig, axes[0][0])  # beside the panels, not over the bars
    fig.suptitle(title)
    return fig


def _value_name(value) -> str:
    """How a column's value reads in a legend: a batch reading by its name (``"chunks"``: as released)."""
    from ..editing import BATCH_EDIT_NAMES

    return "one fact at a time" if value is None or value != value else BATCH_EDIT_NAMES.get(value, str(value))


def _same(column: pd.Series, value) -> pd.Series:
    """``column == value``, where a missing value matches a missing one."""
    return column.isna() if value is None or value != value else column == value


def _edit_ticks(ax) -> None:
    """Whole numbers of edits on round values (0, 10, 20, ...; not 0.2 or 6, 12, 18)."""
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _plain_labels(axis) -> None:
    """Label a log ``axis`` (``ax.xaxis`` or ``ax.yaxis``) in plain numbers at its major ticks only
    (1, 10, 50; not 10⁰, 10¹, nor a crowd of minor labels)."""
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _log_y(ax) -> None:
    """A log y axis labelled in plain numbers: 0.8, 1, 1.2 where it spans less than a decade (the
    collapse signals; matplotlib's default there is a lone 9 × 10⁻¹), 1, 10, 100 where it spans more.
    Call it once the data are drawn."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high < 10 * low:
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    _plain_labels(ax.yaxis)


MEASURE_LABELS = {"value": "task metric (paper)", "gold_nll": "gold answer NLL per token (↓ better)",
                  "label_acc": "label accuracy (most likely label)"}


def side_effect_lines(df: pd.DataFrame, x: str = "edits", measure: str = "value", hue: str = "chain",
                      title: str = "Downstream performance as edits accumulate",
                      bands: pd.DataFrame | None = None, style: str | None = None,
                      own_scale: bool = False) -> plt.Figure:
    """Paper Fig. 3/4/8: one panel per task, ``measure`` (a column of
    :func:`helpers.runs.sweep.side_effects` rows; the mean over a chain's orderings) against
    ``x`` (``edits``, ``edited_facts`` or ``batch_size``), one line per ``hue``; the unedited
    model as a dashed grey line. ``style``: a second column that splits each ``hue`` into lines
    of their own, told apart by their dash (e.g. ``"batch_edit"``: a batch edited jointly or as
    released; without it those rows would be averaged into one line). ``bands``
    (:func:`helpers.report.stats.bands` of the rows' records, by ``hue``, ``style``, ``x`` and
    ``task``): each line's 95% interval, shaded. With ``x="batch_size"`` only the edited points
    are drawn (each batch size is its own edit), at ticks on the batch sizes; numbers of edits get
    whole-number ticks. ``own_scale``: each ``hue`` gets its own row(s) of panels, on its own
    y scale (MEND's damage is a hundred times MEMIT's, which on a shared scale reads as flat)."""
    sns.set_theme(style="whitegrid", context="notebook")
    tasks = list(dict.fromkeys(df.task))
    base = df[df.edits == 0].groupby("task", sort=False)[measure].mean()
    data = df[df.edits > 0] if x == "batch_size" else df
    split = [hue] if style is None else [hue, style]
    lines = data.groupby([*split, x, "task"], sort=False, dropna=False)[measure].mean().reset_index()
    lines = lines.dropna(subset=[measure])
    names = list(dict.fromkeys(data[hue]))
    colours = dict(zip(names, sns.color_palette("deep", len(names))))
    marks = dict(zip(names, "osD^vP*Xph" * (len(names) // 10 + 1)))
    kinds = list(dict.fromkeys(data[style])) if style is not None else [None]
    dashes = dict(zip(kinds, ["-", "--", ":", "-."] * (len(kinds) // 4 + 1)))
    cols = min(4, len(tasks))
    block = -(-len(tasks) // cols) * cols  # the panels of one group, padded to whole rows
    groups = names if own_scale else [None]
    slots = [(group, task) for group in groups for task in [*tasks, *[None] * (block - len(tasks))]]
    rows = len(slots) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.5, 3.0 * rows), constrained_layout=True,
                             squeeze=False)
    for ax, (group, task) in zip(axes.flat, slots):
        if task is None:
            ax.set_visible(False)
            continue
        for name in names if group is None else [group]:
            for kind in kinds:
                line = lines[(lines.task == task) & (lines[hue] == name)]
                if style is not None:
                    line = line[_same(line[style], kind)]
                line = line.sort_values(x)
                if line.empty:
                    continue
                label = str(name) if style is None else f"{name} ({_value_name(kind)})"
                ax.plot(line[x], line[measure], marker=marks[name], color=colours[name], linestyle=dashes[kind],
                        label=label, markersize=5)
                if bands is not None:
                    band = bands[(bands.task == task) & (bands[hue] == name)]
                    if style is not None:
                        band = band[_same(band[style], kind)]
                    band = band.dropna(subset=["low", "high"])
                    if x == "batch_size" and "edits" in band:
                        band = band[band.edits > 0]
                    band = band[band[x].isin(line[x])].sort_values(x)
                    # lighter where a method's readings overlap, so the bands under each other stay readable
                    ax.fill_between(band[x], band.low, band.high, color=colours[name], alpha=0.18 / len(kinds) ** 0.5,
                                    linewidth=0)
        if task in base.index and base[task] == base[task]:
            ax.axhline(base[task], color="grey", linestyle="--", linewidth=1, label="unedited")
        part = data[data.task == task]
        metric = part.metric.iloc[0] if measure == "value" and "metric" in part and len(part) else measure
        ax.set(title=f"{task} ({metric})" if group is None else f"{group}\n{task} ({metric})",
               xlabel=x.replace("_", " "), ylabel="")
        sizes = sorted(v for v in lines[lines.task == task][x].unique() if v > 0) if x == "batch_size" else []
        if sizes:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sizes))  # 1, 10, 50: not 10⁰, 10¹
            _plain_labels(ax.xaxis)
        elif x in ("edits", "edited_facts"):
            _edit_ticks(ax)
    _legend_outside(fig, *axes.flat[::block])  # each group's first panel: every group's lines in one legend
    shaded = ", shaded: 95% interval over examples" if bands is not None else ""
    fig.suptitle(f"{title}\n{MEASURE_LABELS.get(measure, measure)}{shaded}")
    return fig


def measure_lines(df: pd.DataFrame, measures: Sequence[str], x: str = "edited_facts", hue: str = "variant",
                  intervals: pd.DataFrame | None = None, log_scale: Sequence[str] = (),
                  title: str = "As edits accumulate") -> plt.Figure:
    """One panel per column of ``measures`` (e.g. 05's editing performance or collapse signals)
    against ``x``, one line per ``hue`` (the mean over orderings), the thin lines each
    ordering's own where a chain ran several. ``intervals`` (columns ``hue``, ``x``,
    ``measure``, ``low``, ``high``): shaded 95% intervals. ``log_scale``: measures drawn on a
    log axis (condition numbers)."""
    sns.set_theme(style="whitegrid", context="notebook")
    names = list(dict.fromkeys(df[hue]))
    colours = dict(zip(names, sns.color_palette("deep", len(names))))
    marks = dict(zip(names, "osD^vP*Xph" * (len(names) // 10 + 1)))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.0 * len(measures) + 1.8, 3.4), constrained_layout=True,
                             squeeze=False)
    for ax, measure in zip(axes[0], measures):
        for name in names:
            part = df[df[hue] == name].dropna(subset=[measure])
            mean = part.groupby(x)[measure].mean().sort_index()
            ax.plot(mean.index, mean.to_numpy(), marker=marks[name], color=colours[name], label=str(name), markersize=5)
            if "ordering" in part and part.ordering.nunique() > 1:
                for _, one in part.groupby("ordering"):
                    one = one.sort_values(x)
                    ax.plot(one[x], one[measure], color=colours[name], alpha=0.3, linewidth=0.8)
            if intervals is not None:
                band = intervals[(intervals[hue] == name) & (intervals.measure == measure)].sort_values(x)
                ax.fill_between(band[x], band.low, band.high, color=colours[name], alpha=0.18, linewidth=0)
        if measure in log_scale:
            _log_y(ax)
        ax.set(title=measure.replace("_", " "), xlabel=x.replace("_", " "), ylabel="")
    _legend_outside(fig, axes[0][0])
    fig.suptitle(title)
    return fig


def k_sweep_lines(df: pd.DataFrame, metrics=("reliability", "generalization", "locality"),
                  title: str = "Regularizers over k") -> plt.Figure:
    """Editing metrics against ``k`` (the fraction kept), one line per regulariser (``how``),
    one panel per (method, metric); mean ± sd over the edits; the unregularised edit dashed."""
    sns.set_theme(style="whitegrid", context="notebook")
    methods = list(dict.fromkeys(df.method))
    fig, axes = plt.subplots(len(methods), len(metrics), figsize=(4.2 * len(metrics) + 1.5, 3.2 * len(methods)),
                             constrained_layout=True, squeeze=False)
    for row, method in zip(axes, methods):
        part = df[df.method == method]
        for ax, metric in zip(row, metrics):
            sns.lineplot(part[part.how != "none"], x="k", y=metric, hue="how", style="how", markers=True,
                         dashes=False, errorbar="sd", ax=ax, legend=ax is axes.flat[0])
            none = part[part.how == "none"][metric]
            if len(none):
                ax.axhline(none.mean(), color="grey", linestyle="--", linewidth=1, label="unregularized")
            n = part.case_id.nunique()
            ax.set(title=f"{method}: {metric} (n = {n})", xlabel="k (fraction kept)", ylabel="", ylim=(0, 1.05))
    _legend_outside(fig, axes.flat[0])
    fig.suptitle(title)
    return fig


def _legend_outside(fig, ax, *more) -> None:
    """Move ``ax``'s legend (drawn on the first panel only) to the figure's right edge; with ``more``
    axes, their lines join it, each label once (panels that show different lines)."""
    handles, labels = ax.get_legend_handles_labels()
    if more:
        seen = {}
        for a in (ax, *more):
            for handle, label in zip(*a.get_legend_handles_labels()):
                seen.setdefault(label, handle)
        handles, labels = list(seen.values()), list(seen)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def horizon_lines(frame: pd.DataFrame, measures: Sequence[str], hue: str = "variant",
                  title: str = "The collapse horizon", log_y: Sequence[str] = (), row: str | None = None) -> plt.Figure:
    """One panel per column of ``measures`` against the number of edits on a log axis (edits ≥ 1,
    ticks at the powers of two the checkpoints sit on; the unedited value, where there is one, a
    dashed grey line): per ``hue`` the mean over edit orderings, shaded between the orderings' lowest
    and highest (their range: three orderings give no interval worth the name). ``row``: a column
    whose values get a row of panels each, on their own y scale (a family whose norm grows by 0.5 %
    would be a flat line on the scale of one that grows by 30 %). ``frame``: the per-edit traces or
    the retention table. Where some orderings' chains have ended (at their collapse), the line
    goes on dotted, over the orderings still running."""
    sns.set_theme(style="whitegrid", context="notebook")
    names = list(dict.fromkeys(frame[hue]))
    colours = dict(zip(names, sns.color_palette("deep", len(names))))
    groups = list(dict.fromkeys(frame[row])) if row is not None else [None]
    ended = False  # some orderings' chains ended before others (at their collapse)
    fig, axes = plt.subplots(len(groups), len(measures), figsize=(4.6 * len(measures) + 1.5, 3.3 * len(groups) + 0.3),
                             constrained_layout=True, squeeze=False)
    for group, panels in zip(groups, axes):
        rows = frame if group is None else frame[frame[row] == group]
        for ax, measure in zip(panels, measures):
            data = rows.dropna(subset=[measure])
            base = data[data.edits == 0][measure]
            if len(base):
                ax.axhline(float(base.mean()), color="grey", linestyle="--", linewidth=1, label="unedited")
            for name in names:
                part = data[(data[hue] == name) & (data.edits > 0)]
                if part.empty:
                    continue
                g = part.groupby("edits")[measure]
                mean, low, high, count = g.mean(), g.min(), g.max(), g.size()  # size: ended chains, not NaN
                every = count.to_numpy() == count.max()
                # solid while every ordering runs; dotted from the last such point on
                cut = int(np.argmin(every)) if not every.all() else len(every)
                ended |= cut < len(every)
                ax.plot(mean.index[:cut], mean.values[:cut], color=colours[name], label=str(name), linewidth=1.5)
                if cut < len(every):
                    ax.plot(mean.index[max(cut - 1, 0):], mean.values[max(cut - 1, 0):], color=colours[name],
                            linewidth=1.5, linestyle=":")
                ax.fill_between(mean.index, low.values, high.values, color=colours[name], alpha=0.18, linewidth=0)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
            _plain_labels(ax.xaxis)
            if measure in log_y:
                _log_y(ax)
            shown = measure.replace("_", " ")
            ax.set(xlabel="edits (log scale)", ylabel="", title=shown if group is None else f"{group}: {shown}")
    _legend_outside(fig, *axes[:, 0])  # every row's lines in one legend
    fig.suptitle(f"{title}\n(lines: mean over edit orderings; shaded: their range"
                 + ("; dotted: some orderings' chains have collapsed and ended)" if ended else ")"))
    return fig


def edit_traces(flags: pd.DataFrame, title: str = "Held-out NLL after every edit") -> plt.Figure:
    """One panel per sequential chain: the held-out text's NLL per token after every edit, one
    line per edit ordering, the flagged edits (:func:`helpers.report.disabling.flag_edits`)
    marked with a red ×, a collapse (``collapsed``: weights no longer finite) with a dotted line.
    ``flags`` holds edits ≥ 1; the line starts at the unedited value."""
    sns.set_theme(style="whitegrid", context="notebook")
    chains = list(dict.fromkeys(flags.chain))
    fig, axes = plt.subplots(1, max(len(chains), 1), figsize=(4.2 * max(len(chains), 1), 3.6),
                             constrained_layout=True, squeeze=False)
    for ax, chain in zip(axes[0], chains):
        part = flags[flags.chain == chain]
        for ordering, line in part.groupby("ordering"):
            start = line.heldout_nll.iloc[0] - line.jump.iloc[0]
            xs, ys = [0, *line.edits], [start, *line.heldout_nll]
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=f"ordering {ordering}")
            hit = line[line.flagged]
            ax.scatter(hit.edits, hit.heldout_nll, marker="x", s=80, color="red", zorder=5)
            if "collapsed" in line and line.collapsed.astype(bool).any():  # from here on: the floor, ln V
                at = int(line[line.collapsed.astype(bool)].edits.min())
                ax.axvline(at, color="black", linestyle=":", linewidth=1)
                ax.annotate(f"collapsed ({ordering})", (at, ax.get_ylim()[1]), fontsize=7, rotation=90,
                            va="top", ha="right")
        ax.set(title=chain, xlabel="edits", ylabel="held-out NLL per token")
        _edit_ticks(ax)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title} (red ×: a flagged jump; dotted: the model collapsed, NaN weights, scored ln V from there)")
    return fig
