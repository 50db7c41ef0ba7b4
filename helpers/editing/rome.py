"""ROME (Meng et al., 2022): a rank-1 update of one MLP output matrix.

The key ``k`` is the matrix's input at the subject's last token, averaged over context
templates (``compute_u``; with ``mom2_adjustment`` multiplied by the inverse key covariance,
then normalised). The value ``v`` is found by gradient descent on a vector added to the
matrix's output at that token, so that the model predicts the new target in every context
while its next-token distribution after "<subject> is a" stays close (KL) (``compute_v``).
The update ``ΔW = r ⊗ u`` with ``r = (v - W k_prompt) / (k_prompt · u)`` maps the prompt's key to
``v`` and changes nothing orthogonal to ``u``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layers import get_module, hooked, in_template, module_input_at, pad_right, subject_last_index


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
    context_templates: list[str] | None = None  # fixed templates instead of sampled ones
    template_seed: int = 0
    attn_module_tmp: str | None = None
    ln_f_module: str | None = None
    lm_head_module: str | None = None
    mom2_dataset: str = "self"
    mom2_n_samples: int = 100000
    mom2_dtype: str = "float32"
    early_stop_loss: float = 5e-2


def compute_u(model, tok, request, hp: ROMEHyperParams, layer: int, templates, inv_cov=None) -> torch.Tensor:
    """The left vector ``u`` (size ``in``): the averaged key, covariance-adjusted if asked, unit norm."""
    placed = [in_template(t, request.prompt, request.subject) for t in templates]
    texts = [text for text, _ in placed]
    idx = [subject_last_index(tok, text, request.subject, start) for text, start in placed]
    k = module_input_at(model, tok, hp.rewrite_module_tmp.format(layer), texts, idx).mean(0)
    if inv_cov is not None:
        k = inv_cov @ k
    return k / k.norm()


def optimize_target(model, tok, request, hp, module, templates) -> torch.Tensor:
    """The output ``module`` should give at the subject's last token so that the model predicts
    ``request.target_new`` after the prompt in every context template: its current output
    plus a vector ``δ`` found by Adam (ROME's ``compute_v``, MEMIT's ``compute_z``).

    Loss: the target's NLL averaged over templates, plus ``kl_factor`` × KL of the next-token
    distribution at the subject of "<subject> is a" from its unedited value, plus
    ``v_weight_decay`` × ‖δ‖/‖init‖²; ‖δ‖ is clamped to ``clamp_norm_factor`` × ‖init‖."""
    device = next(model.parameters()).device
    target = tok(" " + request.target_new.strip(), add_special_tokens=False).input_ids
    placed = [in_template(t, request.prompt, request.subject) for t in templates]
    rewriting = [text + tok.decode(target[:-1]) for text, _ in placed]
    kl_prompts = [f"{request.subject} is a"]
    texts = rewriting + kl_prompts
    lookup = [subject_last_index(tok, t, request.subject, start)
              for t, start in zip(texts, [s for _, s in placed] + [0])]
    ids, mask = pad_right(tok, texts, device)
    lengths = mask.sum(1).tolist()
    labels = torch.full_like(ids, -100)
    for i in range(len(rewriting)):
        # logits at position p predict token p+1: the target's tokens are scored at the last
        # len(target) positions of the prompt + target[:-1]
        labels[i, lengths[i] - len(target): lengths[i]] = torch.tensor(target, device=device)
    state = {"init": None, "delta": None}
    rows = torch.arange(len(texts), device=device)
    look = torch.tensor(lookup, device=device)

    def add_delta(out):
        hidden = out[0] if isinstance(out, tuple) else out
        if state["init"] is None:
            state["init"] = hidden[0, lookup[0]].detach().clone()
            state["delta"] = torch.zeros_like(state["init"], dtype=torch.float32, requires_grad=True)
        hidden = hidden.clone()
        hidden[rows, look] = hidden[rows, look] + state["delta"].to(hidden.dtype)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    head = model.get_output_embeddings()
    tgt_rows, tgt_pos = (labels[: len(rewriting)] != -100).nonzero(as_tuple=True)
    tgt_ids = labels[tgt_rows, tgt_pos]
    opt = None
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    kl_init = None
    try:
        for _ in range(hp.v_num_grad_steps):
            with hooked(module, on_output=add_delta):
                hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            if opt is None:
                opt = torch.optim.Adam([state["delta"]], lr=hp.v_lr)
            opt.zero_grad()
            delta = state["delta"]
            # the vocabulary projection only where a loss is read: the target positions and
            # the KL prompts' subject token
            kl_logp = torch.log_softmax(head(hidden[rows[len(rewriting):], look[len(rewriting):]]).float(), dim=-1)
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            logp = torch.log_softmax(head(hidden[tgt_rows, tgt_pos]).float(), dim=-1)
            tok_lp = logp.gather(1, tgt_ids[:, None]).squeeze(1)
            nll = -(tok_lp.sum() / len(target)) / len(rewriting)
            kl = hp.kl_factor * torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
            # ROME's own weight-decay term: ||δ|| / ||init||² (not squared in δ)
            decay = hp.v_weight_decay * (delta.norm() / state["init"].float().norm() ** 2)
            loss = nll + kl + decay
            if loss.item() < hp.early_stop_loss:
                break
            loss.backward()
            opt.step()
            max_norm = hp.clamp_norm_factor * state["init"].float().norm()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return (state["init"].float() + state["delta"]).detach()


def read_at_subject(model, tok, module, texts, subjects) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, outputs)`` of ``module`` at each text's subject-last token: ``[n, in]``, ``[n, out]``."""
    device = next(model.parameters()).device
    idx = torch.tensor([subject_last_index(tok, t, s) for t, s in zip(texts, subjects)], device=device)
    rows = torch.arange(len(texts), device=device)
    seen = {}

    def grab_out(y):
        seen["o"] = (y[0] if isinstance(y, tuple) else y)[rows, idx].detach().float()

    ids, mask = pad_right(tok, texts, device)
    with torch.no_grad(), hooked(module, on_input=lambda x: seen.__setitem__("k", x[rows, idx].detach().float()),
                                 on_output=grab_out):
        model(input_ids=ids, attention_mask=mask)
    return seen["k"], seen["o"]


def compute_v(model, tok, request, hp: ROMEHyperParams, layer: int, templates):
    """``(v, k_prompt, out_prompt)``: the value the matrix should output at the subject's last
    token, and the key it sees and the output it gives there in the bare prompt."""
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    v = optimize_target(model, tok, request, hp, module, templates)
    k, out = read_at_subject(model, tok, module, [request.prompt], [request.subject])
    return v, k[0], out[0]


def rome_update(model, tok, request, hp: ROMEHyperParams, templates, inv_cov=None) -> dict[str, torch.Tensor]:
    """``{parameter name: ΔW as [out, in]}`` for one request (one layer: ``hp.layers[0]``)."""
    layer = hp.layers[0]
    u = compute_u(model, tok, request, hp, layer, templates, inv_cov)
    v, k_prompt, out_prompt = compute_v(model, tok, request, hp, layer, templates)
    right = (v - out_prompt) / torch.dot(k_prompt, u)
    return {f"{hp.rewrite_module_tmp.format(layer)}.weight": torch.outer(right, u)}


_TEMPLATES: dict = {}


def templates_for(model, tok, hp) -> list[str]:
    """The context templates: fixed ones from the hparams, else sampled once per model."""
    from .templates import context_templates

    if hp.context_templates:
        bad = [t for t in hp.context_templates if t.count("{}") != 1]
        if bad:
            from .hparams import HparamsError

            raise HparamsError(f"context_templates must each hold exactly one '{{}}': {bad}")
        return list(hp.context_templates)
    key = (id(model), str(hp.context_template_length_params), hp.template_seed)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = context_templates(model, tok, hp.context_template_length_params, hp.template_seed)
    return _TEMPLATES[key]


def apply(model, tok, requests, hp: ROMEHyperParams) -> dict[str, torch.Tensor]:
    inv_cov = None
    if hp.mom2_adjustment:
        from .stats import inverse_key_covariance

        inv_cov = inverse_key_covariance(model, tok, hp.rewrite_module_tmp.format(hp.layers[0]), hp)
    return rome_update(model, tok, requests[0], hp, templates_for(model, tok, hp), inv_cov)
