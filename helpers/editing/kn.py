"""Knowledge Neurons (Dai et al., 2022), as EasyEdit runs it for GPT-style models.

1. Attribution: for every FFN neuron (an input of the MLP output matrix) at the prompt's last
   position, integrated gradients of the probability of the *true* answer, scaling the
   neuron's activation from 0 to its value in ``steps`` steps (summed over the answer's tokens).
2. Selection: neurons whose attribution exceeds ``adaptive_threshold`` × the largest one; with
   several prompts, those found for at least a share ``p`` of them.
3. Edit: each selected neuron's output weights (a column of ``[out, in]``) get
   ``2 · (e_target − e_prediction)``, ``e`` the token embeddings of the new target's first token
   and of the model's current top prediction (knowledge-neurons' ``edit_knowledge``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.stack import DecoderStack
from .modules import get_module, num_layers


ROWS_PER_PASS = 640  # integrated-gradient rows (steps × layers) run together on the fast path


@dataclass
class KNHyperParams:
    rewrite_module_tmp: str
    steps: int = 20
    batch_size: int = 20
    adaptive_threshold: float = 0.2
    p: float = 0.4
    refine: bool = False
    lr_scale: float = 1.0
    n_toks: int = 10
    layers: list[int] | None = None  # None: every layer
    # speed only: run just the answer position through the layers above each neuron's layer,
    # on the keys and values of the earlier positions (see attributions); False runs the whole
    # model on the whole prompt for every layer, as EasyEdit does
    reuse_prefix: bool = True


def attributions(model, tok, prompt: str, answer: str, hp: KNHyperParams, layers) -> torch.Tensor:
    """Integrated-gradient attribution of every FFN neuron to ``answer``: ``[len(layers), in]``.

    Scaling a neuron changes only the last position from its layer up, so with
    ``hp.reuse_prefix`` the prompt is read once per answer token, and the ``steps`` scaled
    copies of every layer run just that position through the layers above it, all in one
    batch, attending to the recorded keys and values of the other positions (the block's output
    there shifts by ``module(scaled) − module(activation)``), up to ``ROWS_PER_PASS`` rows at a
    time. ``hp.batch_size`` bounds the reference path's batches."""
    device = next(model.parameters()).device
    answer_ids = tok(" " + answer.strip(), add_special_tokens=False).input_ids
    prompt_ids = tok(prompt, add_special_tokens=True).input_ids
    modules = [get_module(model, hp.rewrite_module_tmp.format(l)) for l in layers]
    head = model.get_output_embeddings()
    alphas = torch.arange(1, hp.steps + 1, device=device, dtype=torch.float32) / hp.steps
    scores = None
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for j, target in enumerate(answer_ids):
            ids = torch.tensor([prompt_ids + answer_ids[:j]], device=device)
            pos = ids.shape[1] - 1
            acts = {}
            hooks = [m.register_forward_pre_hook(lambda m, a, i=i: acts.__setitem__(i, a[0][0, pos].detach().float()))
                     for i, m in enumerate(modules)]
            try:
                with torch.no_grad():
                    model(input_ids=ids)
            finally:
                for h in hooks:
                    h.remove()
            if hp.reuse_prefix and DecoderStack.supports(model):
                # as many layers per pass as ROWS_PER_PASS allows (memory: every row keeps its
                # activations, and a copy of the prompt's keys and values, for the backward pass)
                per_pass = max(1, ROWS_PER_PASS // len(alphas))
                s = torch.cat([_last_position_scores(model, ids, modules[c:c + per_pass], layers[c:c + per_pass],
                                                     {i - c: acts[i] for i in range(c, min(c + per_pass, len(layers)))},
                                                     alphas, target)
                               for c in range(0, len(layers), per_pass)])
                scores = s if scores is None else scores + s
                continue
            layer_scores = []
            for i, module in enumerate(modules):
                grads = torch.zeros_like(acts[i])
                for start in range(0, hp.steps, hp.batch_size):
                    a = alphas[start:start + hp.batch_size]
                    scaled = (a[:, None] * acts[i][None, :]).requires_grad_(True)

                    def replace(m, args, scaled=scaled):
                        x = args[0].expand(len(scaled), -1, -1).clone()
                        x[:, pos] = scaled.to(x.dtype)
                        return (x, *args[1:])

                    h = module.register_forward_pre_hook(replace)
                    try:
                        hidden = model.base_model(input_ids=ids).last_hidden_state
                    finally:
                        h.remove()
                    prob = torch.softmax(head(hidden[:, pos]).float(), dim=-1)[:, target]
                    grads += torch.autograd.grad(prob.sum(), scaled)[0].sum(0)
                layer_scores.append(acts[i] * grads / hp.steps)
            s = torch.stack(layer_scores)
            scores = s if scores is None else scores + s
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return scores


def _last_position_scores(model, ids, modules, layers, acts, alphas, target) -> torch.Tensor:
    from ..model.stack import DecoderStack, KeyValues

    stack = DecoderStack(model)
    n = ids.shape[1]
    positions = torch.arange(n, device=ids.device)[None]
    mask = torch.ones_like(ids)
    outs = {}
    hooks = [stack.layers[l].register_forward_hook(
        lambda m, a, o, l=l: outs.__setitem__(l, (o[0] if isinstance(o, tuple) else o)[0, -1].detach()))
        for l in set(layers)]
    kv = KeyValues(record=True)
    try:
        with torch.no_grad():
            stack.run(stack.embed(ids, positions), positions, mask, cache=kv)
    finally:
        for h in hooks:
            h.remove()
    earlier = {l: (k[..., : n - 1, :], v[..., : n - 1, :]) for l, (k, v) in kv.seen.items()}
    # every layer's scaled copies go up together: rows join the batch at the layer above their
    # neuron's, so each layer's weights are read once for all of them
    scaled, start = [], []
    for i, (module, layer) in enumerate(zip(modules, layers)):
        with torch.no_grad():
            base = module(acts[i][None].to(outs[layer].dtype))
        x = (alphas[:, None] * acts[i][None, :]).requires_grad_(True)
        scaled.append(x)
        start.append(outs[layer][None] + module(x.to(base.dtype)) - base)  # the block's output, [steps, H]
    hidden = None
    for l in range(min(layers) + 1, stack.num_layers):
        joining = [start[i] for i, layer in enumerate(layers) if layer == l - 1]
        if joining:
            hidden = torch.cat(([hidden] if hidden is not None else []) + [j[:, None, :] for j in joining])
        b = hidden.shape[0]
        k, v = earlier[l]
        hidden = stack.run(hidden, positions[:, -1:].expand(b, 1), mask.expand(b, n), l, l + 1,
                           KeyValues(prefix={l: (k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))}))
    top = [start[i][:, None, :] for i, layer in enumerate(layers) if layer == stack.num_layers - 1]
    hidden = torch.cat(([hidden] if hidden is not None else []) + top)
    prob = torch.softmax(stack.logits(hidden[:, 0]).float(), dim=-1)[:, target]
    grads = torch.autograd.grad(prob.sum(), scaled)
    return torch.stack([acts[i] * grads[i].sum(0) / len(alphas) for i in range(len(modules))])


def select_neurons(score_list: list[torch.Tensor], hp: KNHyperParams) -> list[tuple[int, int]]:
    """``(layer index into the scored layers, neuron)`` pairs above the adaptive threshold, kept
    when found for at least a share ``p`` of the prompts."""
    counts: dict[tuple[int, int], int] = {}
    for s in score_list:
        for l, n in (s > hp.adaptive_threshold * s.max()).nonzero().tolist():
            counts[(l, n)] = counts.get((l, n), 0) + 1
    need = max(1, int(hp.p * len(score_list))) if len(score_list) > 1 else 1
    return sorted(k for k, c in counts.items() if c >= need)


def apply(model, tok, requests, hp: KNHyperParams) -> dict[str, torch.Tensor]:
    r = requests[0]
    layers = list(hp.layers) if hp.layers else list(range(num_layers(model)))
    scores = attributions(model, tok, r.prompt, r.ground_truth, hp, layers)
    neurons = select_neurons([scores], hp)
    emb = model.get_input_embeddings().weight.detach().float()
    device = emb.device
    with torch.no_grad():
        ids = torch.tensor([tok(r.prompt, add_special_tokens=True).input_ids], device=device)
        predicted = int(model(input_ids=ids).logits[0, -1].argmax())
    target = tok(" " + r.target_new.strip(), add_special_tokens=False).input_ids[0]
    change = 2 * (emb[target] - emb[predicted]) * hp.lr_scale  # [hidden]
    updates: dict[str, torch.Tensor] = {}
    for l, n in neurons:
        name = hp.rewrite_module_tmp.format(layers[l])
        module = get_module(model, name)
        w = module.weight
        out_dim, in_dim = (w.shape[1], w.shape[0]) if type(module).__name__ == "Conv1D" else w.shape
        upd = updates.setdefault(f"{name}.weight", torch.zeros(out_dim, in_dim, device=device))
        upd[:, n] += change
    return updates
