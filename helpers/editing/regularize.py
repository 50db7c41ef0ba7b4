"""RECT and its baselines: keep only part of an editing update (paper §5).

``regularize(delta, weight, how, k)`` returns the update to add instead of ``delta``; ``k`` is
the fraction of ``delta``'s elements that stay non-zero (the paper's "top-k%": 0.8, 0.6, 0.4,
0.2; 0.4 recommended).

- ``rect``: the elements with the largest relative change ``δ = |ΔW / W|``. Where ``W = 0``,
  ``δ = +inf`` if ``ΔW ≠ 0`` (any change to a zero weight is infinitely large relative to it)
  and ``0`` if ``ΔW = 0``; ties are broken by position (the lower flat index is kept), so the
  result is deterministic. Exactly ``round(k · numel)`` elements are kept, their values
  unchanged.
- ``random``: a seeded random ``round(k · numel)`` of the elements.
- ``pca`` (the released code's definition, the default PCA): PCA is fitted on the update seen
  as ``[in, out]`` — rows the input features, as GPT-2's ``Conv1D`` weight the authors worked
  on — with ``n_components = round(k · out)``, and the component scores are written into the
  first ``n_components`` columns, the rest zero: exactly ``k`` of the elements are non-zero,
  but they are no longer the update's own values nor in their places; it moves information,
  it does not select it.
- ``pca_lowrank``: this package's variant, the reading of the paper's sentence ("compresses the
  most important editing information in ΔW ... via PCA") as a low-rank reconstruction: column
  means plus the top ``round(k · out)`` principal components, mapped back to ``ΔW``'s shape.
  It keeps the update's meaning, but not a fraction of its elements (a rank-1 ROME update is
  reproduced exactly for any ``k``), which is why it is not the default.
- ``none``: ``delta`` unchanged.

Tensors are ``[out, in]`` (this package's convention; ``helpers.editing.modules.from_param_layout``
turns a ``Conv1D`` weight into it). Any dtype and device; the ranking is done in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EdithurtError, unknown

HOW = ("none", "rect", "random", "pca", "pca_lowrank")


class RegularizerError(EdithurtError, ValueError):
    """A regulariser asked for with impossible settings."""


def kept_count(numel: int, k: float) -> int:
    """How many elements a fraction ``k`` keeps: ``round(k · numel)``."""
    return int(round(k * numel))


def relative_change(delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``δ = |ΔW / W|`` in float32, ``+inf`` where ``W = 0 ≠ ΔW``, ``0`` where ``ΔW = 0``."""
    d = delta.float().abs()
    w = weight.float().abs()
    ratio = d / w
    return torch.where(d == 0, torch.zeros_like(d), torch.where(w == 0, torch.full_like(d, float("inf")), ratio))


def check_settings(how: str, k) -> float:
    """``k`` as a float, after checking ``how`` and ``0 < k <= 1``."""
    if how not in HOW:
        raise unknown("regularizer", how, HOW)
    try:
        value = float(k) if not isinstance(k, (str, bool)) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 < value <= 1:
        raise RegularizerError(f"k is the fraction of the update kept and must be in (0, 1]; got {k!r} "
                               "(the paper's top-40% is k=0.4)")
    return value


def regularize(delta: torch.Tensor, weight: torch.Tensor, how: str = "rect", k: float = 0.4,
               seed: int = 0) -> torch.Tensor:
    """The part of ``delta`` (``[out, in]``) that ``how`` keeps at fraction ``k`` (``0 < k ≤ 1``)."""
    k = check_settings(how, k)
    if delta.shape != weight.shape:
        raise RegularizerError(f"the update has shape {tuple(delta.shape)} but the weight {tuple(weight.shape)}: "
                               "pass both in the same layout")
    if how == "none" or k == 1 and how in ("rect", "random"):
        return delta.clone()
    if how in ("pca", "pca_lowrank"):
        return _pca(delta, k, lowrank=how == "pca_lowrank")
    keep = kept_count(delta.numel(), k)
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    if keep:
        if how == "rect":
            mask[_top_indices(relative_change(delta, weight).flatten(), keep)] = True
        else:
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            mask[torch.randperm(delta.numel(), generator=gen)[:keep].to(delta.device)] = True
    return torch.where(mask.view(delta.shape), delta, torch.zeros_like(delta))


def _top_indices(score: torch.Tensor, keep: int) -> torch.Tensor:
    """Flat indices of the ``keep`` largest scores; among equal scores, the lowest indices."""
    n = score.numel()
    if keep >= n:
        return torch.arange(n, device=score.device)
    # the keep-th largest value, then everything above it and the first of those equal to it
    threshold = torch.kthvalue(score.cpu() if score.device.type == "mps" else score, n - keep + 1).values
    above = (score > threshold).nonzero().flatten()
    ties = (score == threshold).nonzero().flatten()[: keep - above.numel()]
    return torch.cat([above, ties])


def _pca(delta: torch.Tensor, k: float, lowrank: bool) -> torch.Tensor:
    # float64 input is computed in float64; anything else in float32 (an update's top
    # components do not need more, and float32 is twice as fast on a CPU)
    dtype = torch.float64 if delta.dtype == torch.float64 else torch.float32
    x = delta.T.to(dtype)  # [in, out]: samples are input features, variables the outputs
    rows, cols = x.shape
    n = kept_count(cols, k)
    if n == 0:
        raise RegularizerError(f"k={k} keeps no principal component of an update with {cols} output columns")
    mean = x.mean(0, keepdim=True)
    centred = x - mean
    # principal axes from the smaller of the two Gram matrices (exact; much cheaper than an SVD)
    if cols <= rows:
        vals, vecs = torch.linalg.eigh(centred.T @ centred)  # [cols, cols], ascending
        axes = vecs[:, torch.argsort(vals, descending=True)[:n]]  # [out, n]
        flip = _sign_convention(axes)
        axes = axes * flip
        scores = centred @ axes  # [in, n]
    else:
        vals, vecs = torch.linalg.eigh(centred @ centred.T)  # [rows, rows]
        order = torch.argsort(vals, descending=True)[:n]
        u, s = vecs[:, order], vals[order].clamp(min=0).sqrt()
        axes = (centred.T @ u) / torch.where(s > 0, s, torch.ones_like(s))  # [out, n]
        flip = _sign_convention(axes)
        axes = axes * flip
        scores = u * (s * flip)  # = centred @ axes, since centred centredᵀ u = u s²
    if lowrank:
        out = scores @ axes.T + mean
    else:
        out = torch.zeros_like(x)
        out[:, : scores.shape[1]] = scores
    return out.T.to(delta.dtype).contiguous()


def _sign_convention(axes: torch.Tensor) -> torch.Tensor:
    """``[1, n]`` signs making each axis's largest entry positive (a component's sign is
    arbitrary; recent scikit-learn, which the released code calls, makes the same choice)."""
    return torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))


@dataclass(frozen=True)
class Regularizer:
    """A regulariser for ``helpers.edit(..., regularizer=Regularizer("rect", k=0.4))``:
    called with each update and its weight (``[out, in]``), returns the update to add."""

    how: str = "rect"
    k: float = 0.4
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "k", check_settings(self.how, self.k))

    def __call__(self, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        seed = self.seed
        if self.how == "random":
            # a different mask for each matrix of one edit (MEMIT's layers share a shape), the
            # same for the same matrix and seed: the seed is mixed with the weight's checksum
            seed = hash((self.seed, tuple(weight.shape), float(weight.double().sum()))) % (2**63)
        return regularize(delta, weight, self.how, self.k, seed)

    @property
    def label(self) -> str:
        """The paper's name: "Unregularized", "RECT 40%", "Random 40%", "PCA 40%"."""
        names = {"none": "Unregularized", "rect": "RECT", "random": "Random", "pca": "PCA", "pca_lowrank": "PCA-lowrank"}
        return names[self.how] if self.how == "none" else f"{names[self.how]} {round(self.k * 100)}%"


__all__ = ["regularize", "Regularizer", "relative_change", "kept_count", "HOW", "RegularizerError"]
