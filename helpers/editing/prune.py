"""PRUNE (Ma et al., ICLR 2025, "Perturbation-Restrained Sequential Model Editing"): bound the
accumulated update of a sequence of edits so the edited matrix's condition number stays bounded.

For an edited matrix with original value ``W₀`` and accumulated update ``ΔW = W - W₀``:
``σ_max`` is ``W₀``'s largest singular value; every singular value ``σ ≥ σ_max`` of ``ΔW`` becomes

    F(σ) = σ_max + log_b(σ / σ_max)          (``reduce="log"``: b = e; "log2", "log1_5", "log1_2")
    F(σ) = (σ + σ_max) / 2                    (``reduce="linear"``)

the others stay, and ``ΔW' = U diag(F(σ)) Vᵀ`` over ``ΔW``'s numerical rank. No singular value
of ``ΔW'`` then exceeds ``σ_max`` by more than ``log_b(σ/σ_max)``.

As the reference (mjy1111/PRUNE, ``easyeditor/editors/bi_editor_loadw.py``, ``read_weights``):
the edits accumulate unrestrained, and the model is *evaluated* with ``W₀ + ΔW'`` — each next
edit starts from the unrestrained weights (the reference saves them and restrains a fresh copy
for evaluation): ``Prune(when="evaluation")``, the default. ``when="every_edit"`` is this
package's option, not the reference's: the restrained weights are written after every edit, so
the next edit starts from them. The rank is numpy's ``matrix_rank`` cut at float32 precision
(the reference decomposes float32 arrays); the decomposition itself is done in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import EdithurtError, unknown

REDUCE = {"log": math.e, "log2": 2.0, "log1_5": 1.5, "log1_2": 1.2, "linear": None}
WHEN = ("evaluation", "every_edit")


class PruneError(EdithurtError, ValueError):
    """PRUNE asked for with impossible settings."""


def restrained_values(s: torch.Tensor, s_max: float, reduce: str = "log") -> torch.Tensor:
    """``F(σ)`` for the singular values ``s`` at least ``s_max``; the others unchanged."""
    if reduce not in REDUCE:
        raise unknown("PRUNE reduce", reduce, list(REDUCE))
    over = s >= s_max
    if REDUCE[reduce] is None:
        f = (s + s_max) / 2
    else:
        f = s_max + torch.log(s / s_max) / math.log(REDUCE[reduce])
    return torch.where(over, f, s)


def restrain(delta: torch.Tensor, original: torch.Tensor, reduce: str = "log") -> torch.Tensor:
    """The restrained accumulated update ``ΔW'`` (shape and dtype of ``delta``; both tensors in
    the same layout: singular values do not depend on it)."""
    if delta.shape != original.shape:
        raise PruneError(f"the update has shape {tuple(delta.shape)} but the original weight "
                         f"{tuple(original.shape)}: pass both in the same layout")
    d = delta.double()
    s_max = float(torch.linalg.matrix_norm(original.double(), ord=2))
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return delta.clone()
    # numpy's matrix_rank tolerance for a float32 matrix: σ₁ · max(m, n) · eps(float32)
    rank = int((s > s[0] * max(d.shape) * torch.finfo(torch.float32).eps).sum())
    f = restrained_values(s[:rank], s_max, reduce)
    return ((u[:, :rank] * f) @ vh[:rank]).to(delta.dtype)


@dataclass(frozen=True, eq=False)
class Prune:
    """PRUNE for a sequence of edits. In a sweep (``Chain(..., regularizer=Prune())``) every
    checkpoint is evaluated with the restrained weights. With :func:`helpers.edit`:
    ``edit(..., regularizer=prune)`` for each edit of a sequence (the object remembers each
    parameter's value before its first edit), then ``view = prune.restrained(model)`` before
    evaluating and ``view.restore()`` after (``when="evaluation"``, the reference); with
    ``when="every_edit"`` each edit already writes the restrained weights. Use one object per
    sequence (:meth:`reset` to start another)."""

    reduce: str = "log"
    when: str = "evaluation"
    originals: dict = field(default_factory=dict, repr=False, compare=False)

    how = "prune"
    k = None
    takes_name = True  # helpers.editing.apply_update passes each parameter's name

    def __post_init__(self):
        if self.reduce not in REDUCE:
            raise unknown("PRUNE reduce", self.reduce, list(REDUCE))
        if self.when not in WHEN:
            raise unknown("PRUNE when", self.when, WHEN)

    @property
    def label(self) -> str:
        extra = [] if self.reduce == "log" else [self.reduce]
        extra += [] if self.when == "evaluation" else ["every edit"]
        return "PRUNE" + (f" ({', '.join(extra)})" if extra else "")

    def reset(self, originals: dict[str, torch.Tensor] | None = None) -> None:
        """Start a new sequence; ``originals``: ``{parameter name: value before the sequence}``
        ``[out, in]``, when the model is no longer at it (a sequence resumed from stored weights)."""
        self.originals.clear()
        self.originals.update({n: w.detach().clone() for n, w in (originals or {}).items()})

    def __call__(self, delta: torch.Tensor, weight: torch.Tensor, name: str | None = None) -> torch.Tensor:
        if name is None:
            raise PruneError("PRUNE restrains the update accumulated over a sequence and needs each parameter's "
                             "name: pass it as edit(..., regularizer=Prune()), not called on its own")
        original = self.originals.setdefault(name, weight.detach().clone())
        if self.when == "evaluation":
            return delta
        accumulated = weight + delta - original
        return original + restrain(accumulated, original, self.reduce) - weight

    def restrained(self, model, originals: dict[str, torch.Tensor] | None = None):
        """Put ``W₀ + ΔW'`` into ``model`` for each parameter edited since the sequence began
        (``originals``: ``{name: W₀}`` in the parameter's own layout; default: what this object
        remembered, ``[out, in]``). Returns an ``EditResult`` whose ``restore()`` puts the
        unrestrained weights back. With ``when="every_edit"`` the weights are already
        restrained and nothing changes."""
        from . import set_parameters
        from .modules import from_param_layout, get_module, to_param_layout

        params = dict(model.named_parameters())
        values = {}
        if self.when == "evaluation":
            given = originals is not None
            for name, w0 in (originals if given else self.originals).items():
                module = get_module(model, name.rsplit(".", 1)[0])
                w = from_param_layout(params[name].detach(), module)
                w0 = from_param_layout(w0, module) if given else w0
                w0 = w0.to(device=w.device)
                new = w0.double() + restrain(w.double() - w0.double(), w0, self.reduce)
                values[name] = to_param_layout(new.to(w.dtype), module)
        result = set_parameters(model, values)
        result.method = "PRUNE"
        return result


__all__ = ["Prune", "PruneError", "REDUCE", "restrain", "restrained_values"]
