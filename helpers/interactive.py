"""Sliders for JupyterLab (ipywidgets), drawn from cached updates: nothing here edits again.

Each view is a thin shell around a plain function that computes what it shows
(:func:`edits_frame`, :func:`metrics_at`), so the numbers behind a slider are unit-tested.
"""
from __future__ import annotations

import pandas as pd
import torch

from .weight_stats import downsample, weight_change_stats


def edits_frame(cumulative: dict, edits: int, parameter: str | None = None, max_shape=(160, 160),
                reduce: str = "max") -> tuple[str, torch.Tensor, dict]:
    """``(parameter, |ΔW| downsampled, stats)`` after ``edits`` sequential edits, from the
    cumulative updates of :func:`helpers.experiments.weight_change`. The stats need the
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
    from .editing import apply_update
    from .metrics import editing_metrics

    rows = []
    for req, upd, ref in zip(requests, updates, references):
        res = apply_update(model, upd, regularizer)
        try:
            rows.append(editing_metrics(model, tok, [req], reference=ref).iloc[0])
        finally:
            res.restore()
    return pd.DataFrame(rows)


def weight_change_view(cumulative: dict, reduce: str = "max"):
    """A slider over the number of sequential edits redrawing the |ΔW| heat map (Fig. 5)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    counts = sorted(cumulative)
    slider = widgets.IntSlider(value=counts[0], min=counts[0], max=counts[-1], description="edits")
    out = widgets.Output()

    def draw(_=None):
        name, image, stats = edits_frame(cumulative, slider.value, reduce=reduce)
        with out:
            out.clear_output()
            fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
            im = ax.imshow(image.numpy(), cmap="rocket_r" if "rocket_r" in plt.colormaps() else "magma_r",
                           aspect="auto", vmin=0)
            fig.colorbar(im, ax=ax, label=f"block {reduce} of |ΔW|")
            ax.set(title=f"{name}\nafter {slider.value} edits: Σ|ΔW| = {stats['manhattan']:.1f}", xticks=[], yticks=[])
            plt.show()

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])


def rect_k_view(model, tok, requests, updates, references, how: str = "rect"):
    """A slider over ``k`` re-applying ``how`` to the cached updates and re-measuring reliability,
    generalization and locality (mean over the requests)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .regularize import Regularizer

    slider = widgets.FloatSlider(value=0.4, min=0.05, max=1.0, step=0.05, description="k (kept)",
                                 continuous_update=False, readout_format=".2f")
    out = widgets.Output()

    def draw(_=None):
        df = metrics_at(model, tok, requests, updates, references, Regularizer(how, slider.value))
        means = df[["reliability", "generalization", "locality"]].mean()
        with out:
            out.clear_output()
            fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
            ax.bar(means.index, means.values, color=["#4c72b0", "#55a868", "#c44e52"])
            for i, v in enumerate(means.values):
                ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
            ax.set(ylim=(0, 1.1), title=f"{how} k = {slider.value:.2f} (n = {len(df)} edits)")
            plt.show()

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])


__all__ = ["edits_frame", "metrics_at", "weight_change_view", "rect_k_view", "weight_change_stats"]
