"""Sliders for JupyterLab (ipywidgets), drawn from cached updates: nothing here edits again.

Each view is a thin shell around a plain function that computes what it shows
(:func:`edits_frame`, :func:`metrics_at`), so the numbers behind a slider are unit-tested.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..editing.weight_stats import downsample, weight_change_stats
from . import horizon


def edits_frame(cumulative: dict, edits: int, parameter: str | None = None, max_shape=(160, 160),
                reduce: str = "max") -> tuple[str, torch.Tensor, dict]:
    """``(parameter, |ΔW| downsampled, stats)`` after ``edits`` sequential edits, from the
    cumulative updates of :func:`helpers.runs.experiments.weight_change`. The stats need the
    weights, which are not cached: only ``manhattan``, ``frobenius`` and ``changed`` here."""
    if edits not in cumulative:
        raise KeyError(f"no cached update after {edits} edits: have {sorted(cumulative)}")
    deltas = cumulative[edits]
    name = parameter or next(iter(deltas))
    d = deltas[name].double()
    stats = {"manhattan": float(d.abs().sum()), "frobenius": float(d.norm()), "changed": float((d != 0).float().mean())}
    return name, downsample(deltas[name], max_shape, reduce), stats


def metrics_at(model, tok, requests, updates: list[dict], references: list, regularizer) -> pd.DataFrame:
    """Editing metrics of each request's cached raw update under ``regularizer`` (applied,
    measured, undone): one row per request. ``references``: each request's
    :func:`helpers.editing_metrics` on the unedited model."""
    from ..editing import apply_update
    from ..editing.performance import editing_metrics

    rows = []
    for req, upd, ref in zip(requests, updates, references):
        res = apply_update(model, upd, regularizer)
        try:
            rows.append(editing_metrics(model, tok, [req], reference=ref).iloc[0])
        finally:
            res.restore()
    return pd.DataFrame(rows)


def weight_change_readout(name: str, edits: int, stats: dict) -> str:
    """The numbers shown beside the heat map (plain text, so a browser test can read them)."""
    return (f"after {edits} edit{'s' if edits != 1 else ''} · {name}: Σ|ΔW| = {stats['manhattan']:.1f} · "
            f"‖ΔW‖ = {stats['frobenius']:.3f} · changed {100 * stats['changed']:.1f} %")


def weight_change_view(cumulative: dict, reduce: str = "max", extend=None, step: int = 5):
    """A slider over the number of sequential edits redrawing the |ΔW| heat map (Fig. 5) and
    its numbers, from ``cumulative`` (no new edit). ``extend(total) -> cumulative``, if given,
    backs a button that makes ``step`` more edits (new computation, with a progress bar)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    counts = sorted(cumulative)
    slider = widgets.IntSlider(value=counts[0], min=counts[0], max=counts[-1], description="edits")
    readout = widgets.HTML()
    readout.add_class("edithurt-readout")
    out = widgets.Output()

    def draw(_=None):
        name, image, stats = edits_frame(cumulative, slider.value, reduce=reduce)
        readout.value = weight_change_readout(name, slider.value, stats)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
            im = ax.imshow(image.numpy(), cmap="rocket_r" if "rocket_r" in plt.colormaps() else "magma_r",
                           aspect="auto", vmin=0)
            fig.colorbar(im, ax=ax, label=f"block {reduce} of |ΔW|")
            ax.set(title=f"{name}\nafter {slider.value} edits: Σ|ΔW| = {stats['manhattan']:.1f}", xticks=[], yticks=[])
            plt.show()

    slider.observe(draw, names="value")
    draw()
    rows = [slider]
    if extend is not None:
        button = widgets.Button(description=f"+{step} edits (new computation)", layout=widgets.Layout(width="auto"))
        progress = widgets.Output()

        def more(_):
            button.disabled = True
            try:
                with progress:  # the edits' tqdm bar shows here while they run
                    progress.clear_output()
                    cumulative.update(extend(max(cumulative) + step))
                slider.max = max(cumulative)
                slider.value = slider.max
            finally:
                button.disabled = False

        button.on_click(more)
        rows = [widgets.HBox([slider, button]), progress]
    return widgets.VBox([*rows, readout, out])


def ablation_readout(how: str, k: float, df: pd.DataFrame) -> str:
    """Mean reliability, generalization and locality of a regulariser setting, as text."""
    means = df[["reliability", "generalization", "locality"]].mean()
    return (f"{how} k = {k:.2f} (n = {len(df)} edits): reliability {means.reliability:.3f} · "
            f"generalization {means.generalization:.3f} · locality {means.locality:.3f}")


def rect_k_view(model, tok, inputs: dict, how: str = "rect", k: float = 0.4):
    """A slider over ``k`` (and choices of method and regulariser) re-applying the regulariser
    to cached updates and re-measuring reliability, generalization and locality (mean over the
    requests). ``inputs``: ``{method: (requests, updates, references)}`` as from
    :func:`helpers.runs.experiments.ablation_inputs`. Nothing is edited again."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from ..editing.regularize import HOW, Regularizer

    method = widgets.Dropdown(options=list(inputs), description="method")
    regularizer = widgets.Dropdown(options=[h for h in HOW if h != "none"], value=how, description="regularizer")
    slider = widgets.FloatSlider(value=k, min=0.05, max=1.0, step=0.05, description="k (kept)",
                                 continuous_update=False, readout_format=".2f")
    readout = widgets.HTML()
    readout.add_class("edithurt-readout")
    out = widgets.Output()

    def draw(_=None):
        requests, updates, references = inputs[method.value]
        df = metrics_at(model, tok, requests, updates, references, Regularizer(regularizer.value, slider.value))
        readout.value = f"{method.value} + " + ablation_readout(regularizer.value, slider.value, df)
        means = df[["reliability", "generalization", "locality"]].mean()
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
            ax.bar(means.index, means.values, color=["#4c72b0", "#55a868", "#c44e52"])
            for i, v in enumerate(means.values):
                ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
            ax.set(ylim=(0, 1.1), title=f"{method.value} + {regularizer.value} k = {slider.value:.2f} (n = {len(df)} edits)")
            plt.show()

    for w in (method, regularizer, slider):
        w.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([method, regularizer]), slider, readout, out])


def horizon_at(traces: pd.DataFrame, edits: int, measures=("heldout_nll", "norm_growth", "top_singular_growth"),
               points: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per chain of the collapse horizon's ``traces`` (:func:`helpers.runs.sweep.edit_traces`): each
    of ``measures`` after ``edits`` edits, its mean over the edit orderings and their range, and how
    many orderings are collapsed by then (the held-out NLL past the collapse rule, or the weights
    not finite: :func:`helpers.report.horizon.collapse_points`, read from ``traces`` unless given).
    A chain that ended at its collapse counts as collapsed from there on; the measures are over
    the orderings still running (``running``; NaN where none is)."""
    if edits not in set(traces.edits):
        raise KeyError(f"no trace after {edits} edits: the chains run 0 to {int(traces.edits.max())}")
    at = traces[traces.edits == edits]
    rows = []
    points = horizon.collapse_points(traces) if points is None else points
    for chain, every in points.groupby("chain", sort=False):
        part = at[at.chain == chain]
        row = {"chain": chain, "orderings": len(every), "running": len(part),
               "collapsed": int(((~every.censored.astype(bool)) & (every.collapse <= edits)).sum())}
        if part.empty and row["collapsed"] < len(every):
            continue  # past the chain's length (a chain all of whose orderings ended at their collapse stays)
        for m in measures:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = part[m].mean(), part[m].min(), part[m].max()
        rows.append(row)
    return pd.DataFrame(rows)


def horizon_readout(edits: int, frame: pd.DataFrame) -> str:
    """The chains' held-out NLL and norm growth after ``edits`` edits, as text."""
    parts = [f"{r.chain}: ended, collapsed in {r.collapsed}/{r.orderings}" if r.running == 0 else
             f"{r.chain}: NLL {r.heldout_nll:.2f} · ‖W‖/‖W₀‖ {r.norm_growth:.3f}"
             + (f" · collapsed in {r.collapsed}/{r.orderings}" if r.collapsed else "") for r in frame.itertuples()]
    return f"after {edits} edit{'s' if edits != 1 else ''} — " + " | ".join(parts)


def horizon_view(traces: pd.DataFrame):
    """A slider over the number of sequential edits showing, per chain of the collapse horizon, the
    held-out NLL and the norm growth reached by then (bars: mean over orderings; whiskers: their
    range), from the stored traces (no new edit)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    counts = sorted(int(e) for e in set(traces.edits))
    slider = widgets.SelectionSlider(options=counts, value=counts[-1], description="edits", continuous_update=False)
    readout = widgets.HTML()
    readout.add_class("edithurt-readout")
    out = widgets.Output()
    base = float(traces[traces.edits == 0].heldout_nll.mean()) if 0 in counts else None
    points = horizon.collapse_points(traces)  # once, not at every move of the slider

    def draw(_=None):
        frame = horizon_at(traces, slider.value, points=points)
        readout.value = horizon_readout(slider.value, frame)
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 + 0.45 * len(frame)), constrained_layout=True)
            for ax, m, label in zip(axes, ("heldout_nll", "norm_growth"), ("held-out NLL (nats/token)", "‖W‖/‖W₀‖")):
                y = range(len(frame))
                err = [frame[m] - frame[f"{m}_low"], frame[f"{m}_high"] - frame[m]]
                ax.barh(y, frame[m], xerr=err, color="#4c72b0", alpha=0.8)
                ax.set(yticks=list(y), yticklabels=frame.chain if ax is axes[0] else [], xlabel=label)
                if m == "heldout_nll" and base is not None:
                    ax.axvline(base, color="k", lw=0.8, ls=":")
                    ax.axvline(base + horizon.COLLAPSE_RISE, color="red", lw=0.8, ls="--")  # the collapse rule
                ax.invert_yaxis()
            fig.suptitle(f"after {slider.value} edits (dotted: unedited; dashed: collapse rule)")
            plt.show()

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, readout, out])


__all__ = ["horizon_at", "horizon_readout", "horizon_view", "edits_frame", "metrics_at", "weight_change_view", "weight_change_readout", "rect_k_view",
           "ablation_readout", "weight_change_stats"]
