"""MEMIT (Meng et al., 2023): many facts at once, spread over several MLP output matrices.

For each request, the residual stream after the last edited layer should hold ``z`` (found
like ROME's value, :func:`targets.optimize_targets`, on the layer's output; all requests'
together). Layer by layer, the
remaining gap ``z - h`` is divided among the layers still to edit and written by a
least-squares update that also keeps the keys of ordinary text (second moment ``C``) where
they are: ``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹`` with keys ``K`` and residuals ``R``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..model.loading import files_name
from .modules import from_param_layout, get_module, module_input_at
from .positions import in_template, subject_last_index
from .rome import ROMEHyperParams, check_hparams, loss_layer_of, read_at_subject, template_groups
from .targets import optimize_targets
from .templates import flatten


@dataclass
class MEMITHyperParams(ROMEHyperParams):
    """ROME's keys (MEMIT's files use the same ones); ``layers`` lists every edited layer, the
    last one being where the targets ``z`` are read. The context templates are memit's own:
    the bare prompt and five sampled texts of 10 tokens (its ``get_context_templates`` fixes
    them, and its files have no ``context_template_length_params``; setting that key here is
    this package's option, not the reference's)."""

    clamp_norm_factor: float = 0.75
    mom2_adjustment: bool = True
    context_template_length_params: list = field(default_factory=lambda: [[10, 5]])
    # memit_main puts a space before a target that has none (targets.target_text)
    target_space: str = "if_missing"
    # A batch as the released editor edits it (BaseEditor.batch_edit): chunks of batch_size facts, each
    # edited on the model the chunk before left; the released class's batch_size is 1, and the paper's
    # files do not set it. "joint": one solve over the whole batch (this package's own files).
    batch_size: int = 1
    batch_edit: str = "chunks"

    TEMPLATE_BRACES: ClassVar[str] = " "
    USES_LOSS_LAYER: ClassVar[bool] = True


def keys_at(model, tok, requests, hp, layer, groups) -> torch.Tensor:
    """Each request's key at ``layer``: ``[n, in]``, averaged within each group of context
    templates, then over the groups (memit's ``compute_ks``: the bare prompt, a group of its
    own, weighs as much as all the sampled texts together)."""
    templates = flatten(groups)
    texts, idx = [], []
    for r in requests:
        for t in templates:
            text, start = in_template(t, r.prompt, r.subject)
            texts.append(text)
            idx.append(subject_last_index(tok, text, r.subject, start))
    k = module_input_at(model, tok, hp.rewrite_module_tmp.format(layer), texts, idx)
    k = k.view(len(requests), len(templates), -1)
    bounds = [0]
    for g in groups:
        bounds.append(bounds[-1] + len(g))
    return torch.stack([k[:, a:b].mean(1) for a, b in zip(bounds, bounds[1:])], dim=1).mean(1)


def apply(model, tok, requests, hp: MEMITHyperParams) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` of one MEMIT edit of all ``requests`` together."""
    setting = edit_setting(model, tok, hp)
    return spread(model, tok, requests, hp, targets(model, tok, requests, hp, setting), setting)


def apply_each(model, tok, requests, hp: MEMITHyperParams) -> list[dict[str, torch.Tensor]]:
    """One update per request, each what :func:`apply` gives for that request alone; the
    requests' target vectors are optimised together."""
    setting = edit_setting(model, tok, hp)
    zs = targets(model, tok, requests, hp, setting)
    return [spread(model, tok, [r], hp, z[None], setting) for r, z in zip(requests, zs)]


def prepare(model, tok, hp: MEMITHyperParams) -> None:
    """Sample the context templates and compute the key statistics now, from the model as it is
    (``helpers.editing.prepare``: call it on the unedited model)."""
    edit_setting(model, tok, hp)


def edit_setting(model, tok, hp) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
    """``(template groups, {module name: key second moment [in, in]})`` for ``hp.layers``."""
    from .hparams import HparamsError
    from .key_stats import key_second_moments

    check_hparams(model, hp)
    if hp.enable_random_prefix_keys:
        raise HparamsError("enable_random_prefix_keys is r-ROME's option; MEMIT's keys are already averaged over "
                           "the templates in both its terms: leave it out")
    groups = template_groups(model, tok, hp)
    mom2s = key_second_moments(model, tok, [hp.rewrite_module_tmp.format(l) for l in hp.layers],
                               hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype, files_name(model))
    return groups, mom2s


def targets(model, tok, requests, hp, setting, stop_rule=None) -> torch.Tensor:
    """Each request's target output of the last edited block (memit's ``compute_z``): ``[n, hidden]``.
    ``stop_rule``: a further early stop (:func:`helpers.editing.targets.optimize_targets`; ENCORE's)."""
    z_layer = hp.layers[-1]
    z_module = get_module(model, hp.layer_module_tmp.format(z_layer))
    return optimize_targets(model, tok, requests, hp, z_module, flatten(setting[0]), z_layer,
                            loss_layer=loss_layer_of(model, hp, z_layer), stop_rule=stop_rule)


def least_squares(hp, mom2s):
    """MEMIT's solve for one layer: ``(module name, keys [n, in], residuals [n, out]) -> ΔW``
    ``[out, in]`` = ``R Kᵀ (λ C + K Kᵀ)⁻¹`` (float64; solved rather than inverted)."""

    def solve(name: str, ks: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        mom2 = mom2s[name].double().to(ks.device)
        return torch.linalg.solve(hp.mom2_update_weight * mom2 + ks.T @ ks, ks.T @ resid).T.float()

    return solve


def spread(model, tok, requests, hp, zs, setting, solve=None) -> dict[str, torch.Tensor]:
    """The updates of ``hp.layers`` that move the last block's output towards ``zs``, the
    residual spread over the layers, each layer's update solved with the earlier ones in place.
    ``solve(module name, keys [n, in], residuals [n, out]) -> ΔW [out, in]`` (float64 inputs):
    MEMIT's :func:`least_squares` unless given (AlphaEdit passes its projected solve)."""
    groups, mom2s = setting
    solve = solve or least_squares(hp, mom2s)
    z_module = get_module(model, hp.layer_module_tmp.format(hp.layers[-1]))
    prompts, subjects = [r.prompt for r in requests], [r.subject for r in requests]
    updates: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters())
    originals = {}
    try:
        for i, layer in enumerate(hp.layers):
            ks = keys_at(model, tok, requests, hp, layer, groups).double()  # [n, in]
            _, cur = read_at_subject(model, tok, z_module, prompts, subjects)  # [n, hidden]
            resid = (zs - cur).double() / (len(hp.layers) - i)
            name = hp.rewrite_module_tmp.format(layer)
            upd = solve(name, ks, resid)
            key = f"{name}.weight"
            module = get_module(model, name)
            w = params[key]
            # later layers see the earlier layers' updates, as in MEMIT
            originals.setdefault(key, w.detach().clone())
            with torch.no_grad():
                from_param_layout(w, module).add_(upd.to(w.dtype))
            updates[key] = updates.get(key, 0) + upd
    finally:
        with torch.no_grad():
            for key, w in originals.items():
                params[key].copy_(w)
    return updates
