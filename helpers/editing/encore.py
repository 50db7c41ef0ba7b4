"""ENCORE (Gupta et al., "Lifelong Sequential Knowledge Editing without Model Degradation", 2025,
arXiv 2502.01636): MEMIT with two regularisers against the collapse of long sequential editing,
as the authors' code computes them (scalable-model-editing/knowledge-editing-regularization,
``encore/compute_z.py`` and ``encore/encore_main.py``). Added through the public method registry
(:func:`helpers.editing.register_method`), as a user's method would be.

1. **Most-probable early stopping** (MPES): the value optimisation (MEMIT's ``compute_z``) stops
   for a request once every token of its target is the most probable next token (teacher-forced)
   on every checked rewriting prompt, for the ``mpes_patience``-th time (the authors'
   ``|prob_cutoff|``: 4 for GPT-2 XL, 2 for Llama3-8B). The passes are counted, not required in a
   row; the test comes after the forward pass and before the backward one, so the request keeps
   the ``δ`` that passed; MEMIT's own stops (loss below ``early_stop_loss``, the last step) stay.
   The authors' code checks the sampled templates only (its ``log_probs[1:]`` drops the bare
   prompt; its comment says it meant the KL prompt): ``mpes_skip_bare_prompt: true`` does the
   same; the default checks every rewriting prompt, as the paper describes the rule.
2. **A norm constraint** in MEMIT's least squares: each layer's update also pays
   ``update_norm_lambda`` × ‖ΔW‖²_F (the change from the weights before this edit), so

       ΔW = R Kᵀ (λ_p C₀ + λ_n I + S_prev + K Kᵀ)⁻¹                     ([out, in])

   with ``R`` the residuals, ``K`` this edit's keys, ``C₀`` the key second moment,
   ``λ_p = mom2_update_weight`` and ``S_prev`` the summed ``K Kᵀ`` of the sequence's earlier
   edits (``add_prev_edits``: the authors' MEMIT and ENCORE both keep them; kmeng01's MEMIT,
   this package's, does not). The earlier keys are state carried along a sequence
   (:class:`~helpers.editing.alphaedit.EarlierKeys`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import memit
from .alphaedit import EarlierKeys
from .registry import MethodSpec, register_method

REVISION = 1


@dataclass
class ENCOREHyperParams(memit.MEMITHyperParams):
    """MEMIT's keys, and ENCORE's: ``update_norm_lambda`` (λ_n), ``mpes_patience`` (passes of the
    most-probable test before a request stops; 0: MPES off), ``mpes_skip_bare_prompt``,
    ``add_prev_edits`` (S_prev in the solve)."""

    update_norm_lambda: float = 10.0
    mpes_patience: int = 4
    mpes_skip_bare_prompt: bool = False
    add_prev_edits: bool = True
    # the authors edit sequential batches jointly (their own loop, not EasyEdit's batch_edit)
    batch_edit: str = "joint"


class MostProbableStop:
    """MPES for one chunk of ``n`` requests: each request's count of passes where all its checked
    target tokens were top-1; a request stops when its count reaches ``patience``."""

    def __init__(self, n: int, patience: int, skip_bare_prompt: bool):
        self.count = torch.zeros(n, dtype=torch.long)
        self.patience, self.skip_bare_prompt = patience, skip_bare_prompt

    def __call__(self, top1: torch.Tensor, owner: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        checked = template > 0 if self.skip_bare_prompt else torch.ones_like(top1)
        misses = torch.zeros(len(self.count), dtype=torch.long, device=top1.device)
        misses.index_add_(0, owner, (checked & ~top1).long())
        self.count += (misses == 0).long().cpu()
        return (self.count >= self.patience).to(top1.device)


def mpes(hp: ENCOREHyperParams):
    """The ``stop_rule`` of :func:`helpers.editing.targets.optimize_targets` (None: MPES off)."""
    if hp.mpes_patience <= 0:
        return None
    return lambda n: MostProbableStop(n, hp.mpes_patience, hp.mpes_skip_bare_prompt)


def norm_constrained_solve(hp: ENCOREHyperParams, mom2s: dict, earlier: dict, used: dict):
    """ENCORE's solve for one layer (:func:`helpers.editing.memit.spread`'s ``solve``):
    ``(module name, keys [n, in], residuals [n, out]) -> ΔW [out, in]`` (float64 inputs)."""

    def solve(name: str, ks: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        mom2 = mom2s[name].double().to(ks.device)
        a = hp.mom2_update_weight * mom2 + ks.T @ ks
        a = a + hp.update_norm_lambda * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        if hp.add_prev_edits and name in earlier:
            a = a + earlier[name].to(ks.device)
        used[name] = ks.T @ ks
        return torch.linalg.solve(a, ks.T @ resid).T.float()

    return solve


def apply(model, tok, requests, hp: ENCOREHyperParams, earlier_keys: EarlierKeys) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` of one ENCORE edit of ``requests``; their keys join
    the sequence's earlier keys (``earlier_keys``, updated in place)."""
    setting = memit.edit_setting(model, tok, hp)
    zs = memit.targets(model, tok, requests, hp, setting, stop_rule=mpes(hp))
    mom2s = setting[1]
    used: dict[str, torch.Tensor] = {}
    updates = memit.spread(model, tok, requests, hp, zs, setting, norm_constrained_solve(hp, mom2s, earlier_keys, used))
    for name, gram in used.items():
        earlier_keys[name] = earlier_keys[name] + gram.cpu() if name in earlier_keys else gram.cpu()
    return updates


METHOD = MethodSpec("ENCORE", ENCOREHyperParams, apply, prepare=memit.prepare, batchable=True, new_state=EarlierKeys,
                  revision=REVISION, base="MEMIT")


def register() -> None:
    register_method(METHOD, replace=True)


__all__ = ["ENCOREHyperParams", "MostProbableStop", "mpes", "norm_constrained_solve", "apply", "METHOD", "register"]
