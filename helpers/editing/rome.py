"""ROME (Meng et al., 2022): a rank-1 update of one MLP output matrix.

The key ``k`` is the matrix's input at the subject's last token, averaged over context
templates (``compute_u``; with ``mom2_adjustment`` multiplied by the inverse key covariance,
then normalised). The value ``v`` is found by gradient descent on a vector added to the
matrix's output at that token, so that the model predicts the new target in every context
while its next-token distribution after "<subject> is a" stays close (KL) (``compute_v``).
The update ``ΔW = r ⊗ u`` with ``r = (v - W k_prompt) / (k_prompt · u)`` maps the prompt's key to
``v`` and changes nothing orthogonal to ``u``.

r-ROME (Gupta et al., 2024, "Rebuilding ROME"; ``enable_random_prefix_keys``, the method
``"R-ROME"``): the original mixes two keys — ``u`` comes from the key averaged over the
templates, ``r`` from the bare prompt's key — and when the two disagree ``k_prompt · u`` can be
small and the update huge (the "disabling edits" that collapse a model in sequential editing).
r-ROME reads ``r`` at the averaged key too: ``r = (v - W k̄ - b) / (k̄ · u)``, so the update
maps ``k̄`` to ``v``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..model.batching import encode_padded
from ..model.loading import files_name
from .modules import get_module, hooked, module_input_at
from .positions import in_template, subject_last_index
from .targets import optimize_target, optimize_targets


@dataclass
class ROMEHyperParams:
    layers: list[int]
    rewrite_module_tmp: str
    layer_module_tmp: str
    mlp_module_tmp: str
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_loss_layer: int = -1
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_adjustment: bool = False
    mom2_update_weight: float = 15000.0
    fact_token: str = "subject_last"
    context_template_length_params: list = field(default_factory=lambda: [[5, 10], [10, 10]])
    # how the templates are sampled (templates.RECIPES): "fork", the paper's EasyEdit fork; "rome",
    # kmeng01/rome's recipe that the r-ROME authors' code keeps (r-ROME's default)
    context_template_recipe: str = "fork"
    # how the target's text gets its leading space (targets.target_text): "always", the fork's rome_main (a
    # space before every target, one that has one included); "if_missing", kmeng01's and the fork's MEMIT
    target_space: str = "always"
    # fixed templates instead of sampled ones: a flat list, or a list of groups (see templates.as_groups)
    context_templates: list | None = None
    template_seed: int = 0
    attn_module_tmp: str | None = None
    ln_f_module: str | None = None
    lm_head_module: str | None = None
    mom2_dataset: str = "self"
    mom2_n_samples: int = 100000
    mom2_dtype: str = "float32"
    early_stop_loss: float = 5e-2
    # speed only, not part of the algorithm: compute the tokens before the subject and the
    # layers below the edit once (see optimize_target); False runs the whole model every step
    reuse_prefix: bool = True
    # speed only: how many template tokens (from each text's subject on, with reuse_prefix) a
    # batched value optimisation reads at once; independent requests' values are optimised
    # together up to it (see optimize_targets). None: 256 on a CPU (a few requests a chunk: on 2
    # cores larger chunks ran slower, README "Performance"), 16384 on a GPU; 0: one request at a
    # time, as the reference does
    value_batch_tokens: int | None = None
    # r-ROME (the rebuilding-rome repository's flag, its name kept): the right vector from the key
    # averaged over the templates, the key ``u`` is made of, instead of the bare prompt's key.
    # False: ROME as its authors' code (and the paper this package reproduces) computes it
    enable_random_prefix_keys: bool = False

    # what a brace in a sampled template becomes (rome: removed; memit: a space)
    TEMPLATE_BRACES: ClassVar[str] = ""
    # the reference's ROME reads its loss from the model's logits whatever v_loss_layer says
    USES_LOSS_LAYER: ClassVar[bool] = False


FACT_TOKENS = ("subject_last",)


def check_hparams(model, hp) -> None:
    """Refuse settings this package would otherwise ignore (the reference reads them)."""
    from .hparams import HparamsError
    from .modules import num_layers

    if hp.fact_token not in FACT_TOKENS:
        raise HparamsError(f"fact_token {hp.fact_token!r} is not implemented (only {FACT_TOKENS}): the key and value "
                           "are read at the subject's last token; set fact_token: subject_last")
    n = num_layers(model)
    last = n - 1
    loss_layer = hp.v_loss_layer % n if -n <= hp.v_loss_layer < n else None
    if loss_layer is None:
        raise HparamsError(f"v_loss_layer {hp.v_loss_layer} is out of range: the model has {n} layers (0..{last}, "
                           "or -1 for the last)")
    if not hp.USES_LOSS_LAYER and loss_layer != last:
        raise HparamsError(f"v_loss_layer {hp.v_loss_layer}: ROME reads its loss from the model's output, as the "
                           f"reference's compute_v does whatever v_loss_layer says; set v_loss_layer: {last} (or -1)")


def loss_layer_of(model, hp, layer: int) -> int | None:
    """The block whose output the target's NLL is read from (``max(v_loss_layer, layer)``,
    memit's ``compute_z``), or None for the model's last block (its output: the logits)."""
    from .modules import num_layers

    n = num_layers(model)
    at = max(hp.v_loss_layer % n, layer)
    return None if at == n - 1 or not hp.USES_LOSS_LAYER else at


def template_key(model, tok, request, hp: ROMEHyperParams, layer: int, templates) -> torch.Tensor:
    """``k̄`` (size ``in``): the edited matrix's input at the subject's last token, averaged
    over the context templates (rome's ``compute_u`` before any adjustment)."""
    placed = [in_template(t, request.prompt, request.subject) for t in templates]
    texts = [text for text, _ in placed]
    idx = [subject_last_index(tok, text, request.subject, start) for text, start in placed]
    return module_input_at(model, tok, hp.rewrite_module_tmp.format(layer), texts, idx).mean(0)


def left_vector(key: torch.Tensor, inv_cov=None) -> torch.Tensor:
    """``u``: the averaged key, multiplied by the inverse key covariance if given, unit norm."""
    k = inv_cov @ key if inv_cov is not None else key
    return k / k.norm()


def compute_u(model, tok, request, hp: ROMEHyperParams, layer: int, templates, inv_cov=None) -> torch.Tensor:
    """The left vector ``u`` (size ``in``): the averaged key, covariance-adjusted if asked, unit norm."""
    return left_vector(template_key(model, tok, request, hp, layer, templates), inv_cov)


def right_vector(v, u, k_prompt, out_prompt, k_bar, module, hp: ROMEHyperParams) -> torch.Tensor:
    """``r`` (size ``out``) of ``ΔW = r ⊗ u``: what the update must add where it is read.
    ROME: ``(v - W k_prompt - b) / (k_prompt · u)`` at the bare prompt's key; r-ROME
    (``hp.enable_random_prefix_keys``): ``(v - W k̄ - b) / (k̄ · u)`` at the averaged key."""
    if not hp.enable_random_prefix_keys:
        return (v - out_prompt) / torch.dot(k_prompt, u)
    from .modules import from_param_layout

    with torch.no_grad():  # W k̄ + b: the templates' outputs averaged (the module is linear)
        out_bar = from_param_layout(module.weight, module).float() @ k_bar
        if getattr(module, "bias", None) is not None:
            out_bar = out_bar + module.bias.float()
    return (v - out_bar) / torch.dot(k_bar, u)


def read_at_subject(model, tok, module, texts, subjects) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, outputs)`` of ``module`` at each text's subject-last token: ``[n, in]``, ``[n, out]``."""
    device = next(model.parameters()).device
    idx = torch.tensor([subject_last_index(tok, t, s) for t, s in zip(texts, subjects)], device=device)
    rows = torch.arange(len(texts), device=device)
    seen = {}

    def grab_out(y):
        seen["o"] = (y[0] if isinstance(y, tuple) else y)[rows, idx].detach().float()

    ids, mask = encode_padded(tok, texts, device)
    with torch.no_grad(), hooked(module, on_input=lambda x: seen.__setitem__("k", x[rows, idx].detach().float()),
                                 on_output=grab_out):
        model(input_ids=ids, attention_mask=mask)
    return seen["k"], seen["o"]


def compute_v(model, tok, request, hp: ROMEHyperParams, layer: int, templates):
    """``(v, k_prompt, out_prompt)``: the value the matrix should output at the subject's last
    token, and the key it sees and the output it gives there in the bare prompt."""
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    v = optimize_target(model, tok, request, hp, module, templates, layer)
    k, out = read_at_subject(model, tok, module, [request.prompt], [request.subject])
    return v, k[0], out[0]


def rome_update(model, tok, request, hp: ROMEHyperParams, templates, inv_covs=None) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` for one request. With several ``hp.layers`` they
    are edited one after another, lowest first, each layer's ``u`` and ``v`` computed with the
    lower layers' updates in place (rome's ``execute_rome``); the model is left as it was."""
    from .modules import from_param_layout

    params = dict(model.named_parameters())
    updates: dict[str, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}
    try:
        for layer in sorted(hp.layers):
            name = f"{hp.rewrite_module_tmp.format(layer)}.weight"
            k_bar = template_key(model, tok, request, hp, layer, templates)
            u = left_vector(k_bar, (inv_covs or {}).get(layer))
            v, k_prompt, out_prompt = compute_v(model, tok, request, hp, layer, templates)
            module = get_module(model, hp.rewrite_module_tmp.format(layer))
            upd = torch.outer(right_vector(v, u, k_prompt, out_prompt, k_bar, module, hp), u)
            updates[name] = updates.get(name, 0) + upd
            if len(hp.layers) > 1:
                w = params[name]
                originals.setdefault(name, w.detach().clone())
                with torch.no_grad():
                    from_param_layout(w, module).add_(upd.to(w.dtype))
    finally:
        with torch.no_grad():
            for name, w in originals.items():
                params[name].copy_(w)
    return updates


# per model object (weakly: a model freed and another loaded at its address starts afresh), then per setting
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def template_groups(model, tok, hp) -> list[list[str]]:
    """The context templates in their groups (:mod:`.templates`): fixed ones from the hparams,
    else sampled once per model and setting."""
    from .templates import as_groups, context_template_groups, flatten

    if hp.context_templates:
        groups = as_groups(hp.context_templates)
        bad = [t for t in flatten(groups) if not isinstance(t, str) or t.count("{}") != 1]
        if bad:
            from .hparams import HparamsError

            raise HparamsError(f"context_templates must each hold exactly one '{{}}': {bad}")
        return groups
    key = (str(hp.context_template_length_params), hp.template_seed, hp.TEMPLATE_BRACES, hp.context_template_recipe)
    sampled = _TEMPLATES.setdefault(model, {})
    if key not in sampled:
        sampled[key] = context_template_groups(model, tok, hp.context_template_length_params, hp.template_seed,
                                               hp.TEMPLATE_BRACES, hp.context_template_recipe)
    return sampled[key]


def templates_for(model, tok, hp) -> list[str]:
    """All context templates, one list (what ROME averages over, and every method's value
    optimisation runs on)."""
    from .templates import flatten

    return flatten(template_groups(model, tok, hp))


def _inverse_covariances(model, tok, hp):
    if not hp.mom2_adjustment:
        return None
    from .key_stats import inverse_key_covariance

    return {l: inverse_key_covariance(model, tok, hp.rewrite_module_tmp.format(l), hp) for l in hp.layers}


def prepare(model, tok, hp: ROMEHyperParams) -> None:
    """Sample the context templates and, with ``mom2_adjustment``, compute the key statistics
    now, from the model as it is (``helpers.editing.prepare``: call it on the unedited model)."""
    from .key_stats import key_second_moments

    check_hparams(model, hp)
    template_groups(model, tok, hp)
    if hp.mom2_adjustment:
        key_second_moments(model, tok, [hp.rewrite_module_tmp.format(l) for l in hp.layers], hp.mom2_dataset,
                           hp.mom2_n_samples, hp.mom2_dtype, files_name(model))


def apply(model, tok, requests, hp: ROMEHyperParams) -> dict[str, torch.Tensor]:
    check_hparams(model, hp)
    return rome_update(model, tok, requests[0], hp, templates_for(model, tok, hp), _inverse_covariances(model, tok, hp))


def apply_each(model, tok, requests, hp: ROMEHyperParams) -> list[dict[str, torch.Tensor]]:
    """One update per request, each what :func:`apply` gives for that request alone on the
    model as it is. With one layer the requests' values are optimised together
    (:func:`optimize_targets`); several layers depend on each other's updates, so each
    request is then edited on its own."""
    check_hparams(model, hp)
    templates, inv_covs = templates_for(model, tok, hp), _inverse_covariances(model, tok, hp)
    if len(hp.layers) > 1:
        return [rome_update(model, tok, r, hp, templates, inv_covs) for r in requests]
    layer = hp.layers[0]
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    vs = optimize_targets(model, tok, requests, hp, module, templates, layer)
    ks, outs = read_at_subject(model, tok, module, [r.prompt for r in requests], [r.subject for r in requests])
    name = f"{hp.rewrite_module_tmp.format(layer)}.weight"
    out = []
    for r, v, k, o in zip(requests, vs, ks, outs):
        k_bar = template_key(model, tok, r, hp, layer, templates)
        u = left_vector(k_bar, (inv_covs or {}).get(layer))
        out.append({name: torch.outer(right_vector(v, u, k, o, k_bar, module, hp), u)})
    return out


@dataclass
class RROMEHyperParams(ROMEHyperParams):
    """r-ROME: ROME's keys, with the right vector read at the averaged key (the method ``"R-ROME"``)."""

    enable_random_prefix_keys: bool = True
    # the r-ROME authors' code samples its templates as kmeng01/rome does (the fork's: "fork"), and
    # spaces its targets as kmeng01/rome does
    context_template_recipe: str = "rome"
    target_space: str = "if_missing"
