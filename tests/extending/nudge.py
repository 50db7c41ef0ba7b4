"""A toy editing method registered from outside the package: the worked example of
docs/extending.md (tests/integration/test_extending.py keeps it true).

NUDGE adds a rank-one update to one MLP output projection so that, at the prompt's last token,
that layer's output moves by ``alpha`` times the target's first token's output embedding:
``ΔW = alpha · e_t kᵀ / (kᵀ k)``, ``k`` the projection's input there. Not a serious editor: one
file showing what a method must provide.
"""
from dataclasses import dataclass

import torch

from helpers.editing import MethodSpec, register_method
from helpers.editing.modules import get_module, module_input_at


@dataclass
class NudgeHyperParams:
    layer: int
    module_tmp: str  # the MLP output projection, e.g. "model.layers.{}.mlp.down_proj"
    alpha: float = 4.0


def apply(model, tok, requests, hp: NudgeHyperParams) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}``; the model is left unchanged."""
    name = hp.module_tmp.format(hp.layer)
    emb = model.get_output_embeddings().weight.detach()
    keys = module_input_at(model, tok, name, [r.prompt for r in requests], [-1] * len(requests))
    update = torch.zeros(emb.shape[1], keys.shape[1])
    for r, k in zip(requests, keys):
        target = tok(" " + r.target_new.strip(), add_special_tokens=False).input_ids[0]
        update += hp.alpha * torch.outer(emb[target].float(), k) / (k @ k)
    module = get_module(model, name)
    return {f"{name}.weight": update.to(module.weight.dtype)}


SPEC = MethodSpec("NUDGE", NudgeHyperParams, apply, batchable=True)


def register() -> None:
    register_method(SPEC, replace=True)
