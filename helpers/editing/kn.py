"""Knowledge Neurons (Dai et al., 2022) as the paper's code runs it (EasyEdit's copy of the
knowledge-neurons library, ``KnowledgeNeurons.get_refined_neurons`` and ``edit_knowledge``).

A *neuron* is one output of the MLP's first projection, before its nonlinearity: ``mlp.c_fc``
on GPT-2 (before GELU), ``mlp.gate_proj`` on Llama (before SiLU and the product with
``up_proj``). Its output weights are the matching input column of the MLP's output matrix
(``c_proj`` / ``down_proj``).

1. Attribution (``get_scores_for_layer``): for each answer token, at the last position of the
   context, the neurons' activations are replaced by ``α`` × their value for ``α`` in
   ``linspace(0, 1, steps)``; the gradient of the answer token's probability w.r.t. the
   replaced activations, summed over the ``α`` and multiplied by ``activation / steps``, is
   the token's score; a layer's score is the mean over the answer's tokens. The answer is
   encoded as the reference does, ``tok.encode(answer)`` (no leading space; Llama's BOS
   included). The context of the answer's later tokens (``answer_context``): on GPT-2 the
   prompt itself for every token (the reference never re-encodes there); on other models the
   prompt followed by the greedy tokens decoded so far.
2. Selection (``get_refined_neurons``): neurons scoring above ``adaptive_threshold`` × the
   largest score; with ``refine``, only those found for more than a share ``p`` of the prompts.
3. Edit (``modify_weights``, mode ``edit``): each selected neuron's output weights get the sum
   of the target's token embeddings (target encoded as in 1) minus the embeddings of the
   model's greedy continuation of the prompt (as many tokens as the target has), the
   prediction's counted twice when the target is a single token.

The attributed answer is the request's ``prediction`` (ZsRE's ``pred``, what the paper's
scripts pass as ``ground_truth``), or its ``ground_truth`` when it has none.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.stack import DecoderStack
from .hparams import HparamsError
from .modules import get_module, hooked, is_conv1d, num_layers


ROWS_PER_PASS = 640  # integrated-gradient rows (steps × layers) run together on the fast path

# where the neurons are, by architecture: (activation module, output matrix)
NEURON_SITES = {"gpt2": ("transformer.h.{}.mlp.c_fc", "transformer.h.{}.mlp.c_proj"),
                "llama": ("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.down_proj")}
ANSWER_CONTEXTS = ("auto", "prompt", "greedy")


@dataclass
class KNHyperParams:
    steps: int = 20
    batch_size: int = 20
    adaptive_threshold: float = 0.2
    p: float = 0.4
    refine: bool = False
    # this package's option: the reference reads lr_scale and does not use it (1.0: the same edit)
    lr_scale: float = 1.0
    # the module whose output holds the neurons, and the matrix whose columns are edited;
    # None: inferred from the model (NEURON_SITES), as the reference infers them from its name
    activation_module_tmp: str | None = None
    rewrite_module_tmp: str | None = None
    layers: list[int] | None = None  # None: every layer
    answer_context: str = "auto"  # auto: "prompt" on GPT-2, "greedy" elsewhere (see the module docstring)
    # speed only: run just the answer position through the layers above each neuron's layer,
    # on the keys and values of the earlier positions (see attributions); False runs the whole
    # model on the whole prompt for every layer and every batch of steps, as the reference does
    reuse_prefix: bool = True


def resolve(model, hp: KNHyperParams) -> KNHyperParams:
    """``hp`` with the module templates and the answer context filled in from the model."""
    from dataclasses import replace

    kind = getattr(model.config, "model_type", None)
    site = NEURON_SITES.get(kind)
    act, out = hp.activation_module_tmp, hp.rewrite_module_tmp
    if act is None or out is None:
        if site is None:
            raise HparamsError(f"KN cannot infer where the neurons of a {kind!r} model are: set activation_module_tmp "
                               "(the MLP's first projection, before its nonlinearity) and rewrite_module_tmp (the "
                               "MLP's output matrix) in the hparams")
        act, out = act or site[0], out or site[1]
    if hp.answer_context not in ANSWER_CONTEXTS:
        raise HparamsError(f"answer_context {hp.answer_context!r}: choose one of {ANSWER_CONTEXTS}")
    context = hp.answer_context if hp.answer_context != "auto" else ("prompt" if kind == "gpt2" else "greedy")
    if hp.steps < 1 or hp.batch_size < 1 or hp.steps % hp.batch_size:
        raise HparamsError(f"steps ({hp.steps}) must be a positive multiple of batch_size ({hp.batch_size}), as the "
                           "reference asserts")
    return replace(hp, activation_module_tmp=act, rewrite_module_tmp=out, answer_context=context)


def answer_ids(tok, answer: str) -> list[int]:
    """The answer's tokens as the reference encodes them: ``tok.encode(answer)``."""
    return tok(answer, add_special_tokens=True).input_ids


def greedy_tokens(model, tok, prompt: str, n: int) -> tuple[list[int], list[str]]:
    """``n`` greedy tokens after ``prompt``, the text re-encoded after each (the reference's
    ``_generate``), and the contexts each token was predicted from."""
    device = next(model.parameters()).device
    tokens, contexts = [], []
    for _ in range(n):
        contexts.append(prompt)
        ids = torch.tensor([tok(prompt, add_special_tokens=True).input_ids], device=device)
        with torch.no_grad():
            t = int(model(input_ids=ids).logits[0, -1].argmax())
        tokens.append(t)
        prompt = prompt + tok.decode([t])
    return tokens, contexts


def attributions(model, tok, prompt: str, answer: str, hp: KNHyperParams, layers) -> torch.Tensor:
    """Integrated-gradient attribution of every neuron of ``layers`` to ``answer``:
    ``[len(layers), intermediate]`` (see the module docstring).

    Scaling a neuron changes only the last position from its layer up, so with
    ``hp.reuse_prefix`` each context is read once, and the ``steps`` scaled copies of every
    layer run just that position through the layers above it, all in one batch, attending to
    the recorded keys and values of the other positions (the block's output there shifts by
    ``mlp(scaled) − mlp(activation)``), up to ``ROWS_PER_PASS`` rows at a time. The reference
    path runs the whole model in batches of ``hp.batch_size``."""
    hp = resolve(model, hp)
    device = next(model.parameters()).device
    targets = answer_ids(tok, answer)
    if hp.answer_context == "greedy":
        _, contexts = greedy_tokens(model, tok, prompt, len(targets))
    else:
        contexts = [prompt] * len(targets)
    act_modules = [get_module(model, hp.activation_module_tmp.format(l)) for l in layers]
    mlps = [_mlp_of(model, hp, l) for l in layers]
    alphas = torch.linspace(0, 1, hp.steps, device=device, dtype=torch.float32)
    scores = None
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for context, target in zip(contexts, targets):
            ids = torch.tensor([tok(context, add_special_tokens=True).input_ids], device=device)
            pos = ids.shape[1] - 1
            acts, mlp_in = {}, {}
            hooks = [m.register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(i, o[0, pos].detach().float()))
                     for i, m in enumerate(act_modules)]
            hooks += [m.register_forward_pre_hook(lambda m, a, i=i: mlp_in.__setitem__(i, a[0][0, pos].detach()))
                      for i, m in enumerate(mlps)]
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
                s = torch.cat([_last_position_scores(model, ids, act_modules[c:c + per_pass], mlps[c:c + per_pass],
                                                     layers[c:c + per_pass],
                                                     {i - c: (acts[i], mlp_in[i]) for i in range(c, min(c + per_pass, len(layers)))},
                                                     alphas, target)
                               for c in range(0, len(layers), per_pass)])
            else:
                s = torch.stack([_whole_model_scores(model, ids, pos, module, acts[i], alphas, target, hp.batch_size)
                                 for i, module in enumerate(act_modules)])
            scores = s if scores is None else scores + s
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return scores / len(targets)


def _mlp_of(model, hp, layer):
    """The MLP that holds the activation module of ``layer`` (its parent module)."""
    return get_module(model, hp.activation_module_tmp.format(layer).rsplit(".", 1)[0])


def _whole_model_scores(model, ids, pos, module, act, alphas, target, batch_size) -> torch.Tensor:
    """The reference's computation for one layer: the whole model on ``batch_size`` copies of
    the context, the activation module's output at ``pos`` replaced by the scaled rows."""
    head = model.get_output_embeddings()
    grads = torch.zeros_like(act)
    for start in range(0, len(alphas), batch_size):
        a = alphas[start:start + batch_size]
        scaled = (a[:, None] * act[None, :]).requires_grad_(True)

        def replace(out, scaled=scaled):
            out = out.expand(len(scaled), -1, -1).clone()
            out[:, pos] = scaled.to(out.dtype)
            return out

        with hooked(module, on_output=replace):
            hidden = model.base_model(input_ids=ids.expand(len(scaled), -1)).last_hidden_state
        prob = torch.softmax(head(hidden[:, pos]).float(), dim=-1)[:, target]
        grads += torch.autograd.grad(prob.sum(), scaled)[0].sum(0)
    return act * grads / len(alphas)


def _last_position_scores(model, ids, act_modules, mlps, layers, acts, alphas, target) -> torch.Tensor:
    from ..model.stack import KeyValues

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

    def mlp_out(i, activation):  # the MLP's output at the last position with its neurons set to `activation`
        x = acts[i][1][None, None].expand(len(activation), 1, -1)
        with hooked(act_modules[i], on_output=lambda o: activation[:, None, :].to(o.dtype)):
            return mlps[i](x)[:, 0]

    # every layer's scaled copies go up together: rows join the batch at the layer above their
    # neuron's, so each layer's weights are read once for all of them
    scaled, start = [], []
    for i, layer in enumerate(layers):
        with torch.no_grad():
            base = mlp_out(i, acts[i][0][None])
        x = (alphas[:, None] * acts[i][0][None, :]).requires_grad_(True)
        scaled.append(x)
        start.append(outs[layer][None] + mlp_out(i, x) - base)  # the block's output, [steps, H]
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
    return torch.stack([acts[i][0] * grads[i].sum(0) / len(alphas) for i in range(len(layers))])


def select_neurons(score_list: list[torch.Tensor], hp: KNHyperParams) -> list[tuple[int, int]]:
    """``(layer index into the scored layers, neuron)`` pairs above ``adaptive_threshold`` ×
    the prompt's largest score; with ``refine``, only those found for more than ``p`` × the
    number of prompts (the reference's ``count > n_prompts * p``)."""
    counts: dict[tuple[int, int], int] = {}
    for s in score_list:
        for l, n in (s > hp.adaptive_threshold * s.max()).nonzero().tolist():
            counts[(l, n)] = counts.get((l, n), 0) + 1
    if hp.refine:
        return sorted(k for k, c in counts.items() if c > hp.p * len(score_list))
    return sorted(counts)


def edit_direction(model, tok, prompt: str, target_new: str) -> torch.Tensor:
    """What every selected neuron's output weights get (``[hidden]``): the target's token
    embeddings summed, minus the greedy continuation's (twice the prediction's for a
    one-token target)."""
    emb = model.get_input_embeddings().weight.detach().float()
    target = answer_ids(tok, target_new)
    greedy, _ = greedy_tokens(model, tok, prompt, len(target))
    taken = emb[greedy].sum(0) if len(target) > 1 else 2 * emb[greedy[0]]
    return emb[target].sum(0) - taken


def apply(model, tok, requests, hp: KNHyperParams) -> dict[str, torch.Tensor]:
    hp = resolve(model, hp)
    r = requests[0]
    layers = list(hp.layers) if hp.layers else list(range(num_layers(model)))
    answer = r.prediction if getattr(r, "prediction", None) else r.ground_truth
    scores = attributions(model, tok, r.prompt, answer, hp, layers)
    neurons = select_neurons([scores], hp)
    change = edit_direction(model, tok, r.prompt, r.target_new) * hp.lr_scale  # [hidden]
    updates: dict[str, torch.Tensor] = {}
    for l, n in neurons:
        name = hp.rewrite_module_tmp.format(layers[l])
        module = get_module(model, name)
        w = module.weight
        out_dim, in_dim = (w.shape[1], w.shape[0]) if is_conv1d(module) else w.shape
        upd = updates.setdefault(f"{name}.weight", torch.zeros(out_dim, in_dim, device=w.device))
        upd[:, n] += change.to(w.device)
    return updates
