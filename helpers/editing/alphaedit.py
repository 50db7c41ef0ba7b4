"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's update confined to the null space of the keys
that should keep their outputs.

Everything up to the solve is MEMIT's (:mod:`.memit`): each request's target ``z`` of the last
edited block, its key averaged over the template groups, the residual spread over the layers.
The solve differs. With ``P`` the projection onto the span of the eigenvectors of the key second
moment ``C₀ = E[k kᵀ]`` whose eigenvalues are below ``nullspace_threshold`` (directions
ordinary text hardly uses), each layer's update is

    ΔW = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + L2 · I)⁻¹          ([out, in])

with ``K`` this edit's keys, ``R`` their residuals and ``K_p`` the keys of the edits made
earlier in the same sequence. ``ΔW = ΔW P``: an update has no component along the preserved
keys, so ``ΔW k₀ ≈ 0`` for ordinary text's keys (up to the eigenvalues below the threshold).
``C₀`` enters only through ``P`` (``mom2_update_weight`` is not used, as in the reference).

As the reference (jianghoucheng/AlphaEdit ``AlphaEdit_main.py``): ``P`` is computed once per
model and layer from the same cached key statistics MEMIT uses; the threshold is absolute,
on ``C₀`` normalised per token; ``L2 = 10``; after an edit, each layer's ``K Kᵀ`` is added to
that layer's ``K_p K_pᵀ`` (this package's keys are the ones the solve used, which equal the
reference's recomputed keys when the update is added unchanged). That sum is state carried
from edit to edit: an :class:`EarlierKeys`, kept by the sequence's
:class:`~helpers.editing.registry.EditSequence` (a new sequence starts without). Differences, named: the eigenvectors come from ``torch.linalg.eigh`` and the system
is solved in float64 (the reference: an SVD and a solve in float32, the same system).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.loading import files_name
from . import memit


@dataclass
class AlphaEditHyperParams(memit.MEMITHyperParams):
    """MEMIT's keys, and the null space's threshold and the solve's ridge ``L2``."""

    # eigenvalues of E[k kᵀ] below this span the null space the updates are projected onto
    nullspace_threshold: float = 2e-2
    L2: float = 10.0
    # the AlphaEdit authors' runs solve each batch jointly (their own loop, not EasyEdit's batch_edit)
    batch_edit: str = "joint"


# per (model name, module, statistics, threshold): P [in, in]
_PROJECTIONS: dict[tuple, torch.Tensor] = {}


class EarlierKeys(dict):
    """AlphaEdit's state along a sequence: per edited module, the summed ``K Kᵀ`` of the
    sequence's earlier edits ``[in, in]`` (a new sequence starts with none)."""


def null_space_projection(mom2: torch.Tensor, threshold: float) -> torch.Tensor:
    """``P = Û Ûᵀ`` (float64 ``[in, in]``), ``Û`` the eigenvectors of ``mom2`` whose eigenvalues
    are below ``threshold`` (strictly)."""
    values, vectors = torch.linalg.eigh(mom2.double())
    kept = vectors[:, values < threshold]
    return kept @ kept.T


def projection(model, hp: AlphaEditHyperParams, name: str, mom2: torch.Tensor) -> torch.Tensor:
    """The null-space projection of module ``name``, computed once per process."""
    key = (files_name(model), name, hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype, hp.nullspace_threshold)
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = null_space_projection(mom2, hp.nullspace_threshold)
    return _PROJECTIONS[key]


def prepare(model, tok, hp: AlphaEditHyperParams) -> None:
    """MEMIT's templates and key statistics, read now from the model as it is (the null-space
    projections follow from the statistics alone)."""
    memit.prepare(model, tok, hp)


def apply(model, tok, requests, hp: AlphaEditHyperParams, earlier_keys: EarlierKeys,
          targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` of one AlphaEdit edit of all ``requests``; the
    requests' keys join the sequence's earlier keys (``earlier_keys``, updated in place).
    ``targets``: the last edited block's target outputs ``[n, hidden]`` (None: MEMIT's, optimised
    here; a method built on AlphaEdit, such as NAS, passes its own)."""
    setting = memit.edit_setting(model, tok, hp)
    _, mom2s = setting
    used: dict[str, torch.Tensor] = {}

    def solve(name: str, ks: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        p = projection(model, hp, name, mom2s[name]).to(ks.device)
        earlier = earlier_keys.get(name)
        gram = ks.T @ ks + (earlier.to(ks.device) if earlier is not None else 0)
        eye = torch.eye(p.shape[0], dtype=p.dtype, device=p.device)
        # X [in, out] = (P (K Kᵀ + K_p K_pᵀ) + L2 I)⁻¹ P K Rᵀ;  ΔW = Xᵀ
        x = torch.linalg.solve(p @ gram + hp.L2 * eye, p @ (ks.T @ resid))
        used[name] = ks.T @ ks
        return x.T.float()

    if targets is None:
        targets = memit.targets(model, tok, requests, hp, setting)
    updates = memit.spread(model, tok, requests, hp, targets, setting, solve)
    for name, gram in used.items():
        earlier_keys[name] = earlier_keys[name] + gram.cpu() if name in earlier_keys else gram.cpu()
    return updates


__all__ = ["AlphaEditHyperParams", "apply", "EarlierKeys", "prepare", "null_space_projection", "projection"]
