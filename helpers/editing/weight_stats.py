"""How much an edit changes a weight matrix (paper §4.4, Table 1, Fig. 5)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .regularize import relative_change

PAPER_THRESHOLDS = (0.077, 0.171)


def weight_change_stats(w_before: torch.Tensor, w_after: torch.Tensor,
                        thresholds: Sequence[float] = PAPER_THRESHOLDS) -> dict:
    """For ``ΔW = w_after − w_before`` and ``δ = |ΔW / w_before|`` (``+inf`` where a zero weight
    changed, as in RECT): ``manhattan`` = Σ|ΔW|, ``frobenius`` = ‖ΔW‖, ``changed`` = share of
    elements with ΔW ≠ 0, and ``share_above_<t>`` = share of elements with δ > t for each
    threshold (the paper's 0.077 and 0.171). Shares are fractions (the paper prints percent)."""
    if w_before.shape != w_after.shape:
        raise ValueError(f"shapes differ: {tuple(w_before.shape)} before, {tuple(w_after.shape)} after")
    delta = w_after.double() - w_before.double()
    score = relative_change(delta, w_before)
    n = delta.numel()
    out = {"manhattan": float(delta.abs().sum()), "frobenius": float(delta.norm()),
           "changed": float((delta != 0).sum()) / n, "numel": n}
    for t in thresholds:
        out[f"share_above_{t:g}"] = float((score > t).sum()) / n
    return out


def accumulated_change(model, results) -> tuple[dict, dict]:
    """``({parameter: ΔW [out, in]}, {parameter: weight_change_stats})`` of the parameters that
    the :class:`~helpers.editing.EditResult`\ s ``results`` (applied in this order) changed,
    against their values before the first of them."""
    from .modules import from_param_layout, get_module

    first: dict = {}
    for r in results:
        for name, w in r.originals.items():
            first.setdefault(name, w)
    params = dict(model.named_parameters())
    delta, stats = {}, {}
    for name, w in first.items():
        module = get_module(model, name.rsplit(".", 1)[0])
        w0, w1 = from_param_layout(w, module), from_param_layout(params[name].detach(), module)
        delta[name] = (w1 - w0).clone()
        stats[name] = weight_change_stats(w0, w1)
    return delta, stats


def matrix_signals(w_before: torch.Tensor, w_after: torch.Tensor) -> dict:
    """Collapse signals of one edited matrix (any layout): ``norm_growth`` = ‖W‖/‖W₀‖
    (Frobenius), ``top_singular_growth`` = σ_max(W)/σ_max(W₀), ``condition`` = σ_max(W)/σ_min(W)
    and ``condition_growth`` = that over W₀'s (σ_min over the smaller dimension's singular
    values). A disabling edit shows as a jump in the norm and the condition number."""
    s0 = torch.linalg.svdvals(w_before.double())
    s1 = torch.linalg.svdvals(w_after.double())
    cond0, cond1 = float(s0[0] / s0[-1]), float(s1[0] / s1[-1])
    return {"norm_growth": float(w_after.double().norm() / w_before.double().norm()),
            "top_singular_growth": float(s1[0] / s0[0]), "condition": cond1, "condition_growth": cond1 / cond0}


def downsample(matrix: torch.Tensor, max_shape: tuple[int, int] = (200, 200), reduce: str = "max") -> torch.Tensor:
    """``|matrix|`` shrunk to at most ``max_shape`` by blocks, each block's ``max`` (default: a
    single large change stays visible) or ``mean`` (the average magnitude)."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    x = matrix.detach().float().abs()[None, None]
    rows, cols = matrix.shape
    kernel = (max(1, -(-rows // max_shape[0])), max(1, -(-cols // max_shape[1])))
    pool = torch.nn.functional.max_pool2d if reduce == "max" else torch.nn.functional.avg_pool2d
    return pool(x, kernel, stride=kernel, ceil_mode=True)[0, 0]


# Paper Table 1: ROME on GPT-2 XL (layer 17 c_proj, 6400×1600); the single-edit row is the mean
# of 100 random ZsRE edits.
PAPER_TABLE1 = {1: (9079.2, 0.200, 0.100), 5: (27072.2, 0.492, 0.289), 10: (52245.3, 0.674, 0.462),
                15: (63247.5, 0.728, 0.522)}


def table1(rows, counts=(1, 5, 10, 15), thresholds=PAPER_THRESHOLDS):
    """Table 1 from :func:`helpers.runs.experiments.weight_change` rows: the single-edit row as the
    mean ± sd over the single edits, the others from the sequential chain, next to the paper's
    GPT-2 XL values. Shares in percent."""
    import pandas as pd

    cols = ["manhattan"] + [f"share_above_{t:g}" for t in thresholds]
    out = []
    for c in counts:
        part = rows[(rows.setting == "single")] if c == 1 else rows[(rows.setting == "sequential") & (rows.edits == c)]
        if part.empty:
            continue
        rec = {"edits": c, "source": f"mean of {len(part)} single edits" if c == 1 else "sequential chain"}
        for col in cols:
            scale = 1 if col == "manhattan" else 100
            rec[col] = part[col].mean() * scale
            rec[f"{col}_sd"] = part[col].std(ddof=1) * scale if len(part) > 1 else float("nan")
        paper = PAPER_TABLE1.get(c)
        if paper:
            rec["paper_manhattan"] = paper[0]
            for t, v in zip(thresholds, paper[1:]):
                rec[f"paper_share_above_{t:g}"] = v * 100
        out.append(rec)
    return pd.DataFrame(out)
