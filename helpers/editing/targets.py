"""The target vectors of ROME, MEMIT and AlphaEdit: the output an edited module should give at
the subject's last token so that the model predicts each request's new target (kmeng01/rome's
``compute_v``, memit's ``compute_z``). One module, as in the reference code, apart from the rank-one
(ROME) and least-squares (MEMIT) updates built on it.
"""
from __future__ import annotations

import math

import torch

from ..model.batching import pad, pad_id, positions
from .modules import get_module, hooked
from .positions import in_template, subject_last_index


def optimize_target(model, tok, request, hp, module, templates, layer: int | None = None,
                    reuse_prefix: bool | None = None, loss_layer: int | None = None) -> torch.Tensor:
    """The output ``module`` should give at the subject's last token for one request
    (:func:`optimize_targets` with one request): ``[out]``."""
    return optimize_targets(model, tok, [request], hp, module, templates, layer, reuse_prefix, loss_layer)[0]


def optimize_targets(model, tok, requests, hp, module, templates, layer: int | None = None,
                     reuse_prefix: bool | None = None, loss_layer: int | None = None,
                     max_tokens: int | None = None, trace: list | None = None, stop_rule=None) -> torch.Tensor:
    """The output ``module`` should give at the subject's last token so that the model predicts
    each request's ``target_new`` after its prompt in every context template: its current
    output plus a vector ``δ`` found by Adam (ROME's ``compute_v``, MEMIT's ``compute_z``).
    ``[len(requests), out]``.

    Loss, per request: the target's NLL averaged over templates, plus ``kl_factor`` × KL of the
    next-token distribution at the subject of "<subject> is a" from its unedited value, plus
    ``v_weight_decay`` × ‖δ‖/‖init‖²; ‖δ‖ is clamped to ``clamp_norm_factor`` × ‖init‖.
    As in the reference, ``v_num_grad_steps`` forward passes make ``v_num_grad_steps − 1``
    updates (its loop breaks at the last step before the backward pass), and a request stops
    early once its loss is below ``early_stop_loss``. ``loss_layer`` (None: the model's
    output): read the NLL from that block's output through the final norm and the output
    head (memit's ``compute_z``; the KL term always reads the model's output).

    Independent requests are optimised together — one forward and backward pass per step over
    all their texts, in chunks of about ``max_tokens`` template tokens (default
    ``hp.value_batch_tokens``; 0: one request at a time) — and each
    gets exactly its one-at-a-time result up to float rounding: its ``δ`` is its own row, its
    loss touches only that row, Adam works elementwise, and a request that stops early is held
    where it stopped.

    ``module`` lies in block ``layer``. With ``reuse_prefix`` (the default) the tokens before
    each text's subject-last token, and every layer up to ``layer``, are computed once: they
    cannot depend on ``δ`` (attention is causal and ``δ`` enters at that token), so each step
    runs only the rest of each text through the layers above ``layer``. ``reuse_prefix=False``
    runs the whole model on the whole texts every step, as ROME's code does (same result up to
    float rounding; kept as the reference the fast path is tested against). None: ``hp.reuse_prefix``.
    ``trace``: a list that receives, per chunk of requests, each step's losses ``[chunk size]``.
    ``stop_rule``: a further early stop (ENCORE's most-probable early stopping): a callable made
    per chunk by ``stop_rule(n_requests)``, then called at every step, after the forward pass and
    before the backward one, with ``(top1 [n_tgt], owner [n_tgt], template [n_tgt])`` — whether
    each target token is the most probable next token at its position (teacher-forced), the
    request and the template (0: the bare prompt) it belongs to — and returning ``[n_requests]``
    bools: the requests to stop now (they keep the ``δ`` of this pass)."""
    budget = getattr(hp, "value_batch_tokens", None) if max_tokens is None else max_tokens
    if budget is None:
        budget = 256 if next(model.parameters()).device.type == "cpu" else 16384
    suffix_only = (getattr(hp, "reuse_prefix", True) if reuse_prefix is None else reuse_prefix) and layer is not None
    need = sum(_template_tokens(tok, r, templates, suffix_only, hp.target_space) for r in requests)
    # as few chunks as the budget allows, of nearly equal size (0: one request each)
    n_chunks = len(requests) if budget <= 0 else min(len(requests), max(1, math.ceil(need / budget)))
    bounds = [round(i * len(requests) / n_chunks) for i in range(n_chunks + 1)]
    chunks = [requests[a:b] for a, b in zip(bounds, bounds[1:])]
    return torch.cat([_optimize_chunk(model, tok, c, hp, module, templates, layer, reuse_prefix, loss_layer, trace,
                                      stop_rule)
                      for c in chunks])


TARGET_SPACES = ("always", "if_missing")


def target_text(target: str, space: str) -> str:
    """The target's text as the reference tokenizes it ("a space is required for correct
    tokenization"): ``space="always"`` prefixes one to every target but a lone space, one that
    starts with a space included (the fork's ``rome_main``: ``if target != " "``);
    ``"if_missing"`` only to one that does not start with a space (the fork's ``memit_main``,
    kmeng01's ``rome_main`` that r-ROME keeps: ``if target[0] != " "``)."""
    if space == "always":
        return target if target == " " else " " + target
    if space == "if_missing":
        return target if target.startswith(" ") else " " + target
    from .hparams import HparamsError

    raise HparamsError(f"target_space {space!r}: choose one of {TARGET_SPACES}")


def target_ids(tok, target: str, space: str) -> list[int]:
    """The target's token ids as ``compute_v`` / ``compute_z`` take them: the tokenizer's ids of
    :func:`target_text` with a leading begin-of-text (or unknown) token dropped."""
    ids = tok(target_text(target, space)).input_ids
    if ids and ids[0] in (tok.bos_token_id, tok.unk_token_id) and ids[0] is not None:
        ids = ids[1:]
    return ids


def _template_tokens(tok, request, templates, suffix_only: bool, space: str) -> int:
    """The tokens one request's texts run through the layers above the edit at every step: from
    each text's subject-last token on with a reused prefix (else all), the target's included."""
    placed = [in_template(t, request.prompt, request.subject) for t in templates] + [(f"{request.subject} is a", 0)]
    target = len(target_ids(tok, request.target_new, space))
    tokens = 0
    for (text, start), ids in zip(placed, tok([t for t, _ in placed]).input_ids):
        tokens += len(ids) + target - (subject_last_index(tok, text, request.subject, start) if suffix_only else 0)
    return tokens


def _optimize_chunk(model, tok, requests, hp, module, templates, layer, reuse_prefix, loss_layer, trace,
                    stop_rule=None) -> torch.Tensor:
    """The value optimisation of one chunk of requests: ``[len(requests), out]``. One function of
    about a hundred lines on purpose: its setup, its loss and its step read together, line against
    line, with the reference's ``compute_v`` loop they reproduce."""
    device = next(model.parameters()).device
    texts, lookup, owner, targets = [], [], [], []
    n_rw = len(templates)
    for r, request in enumerate(requests):
        target = target_ids(tok, request.target_new, hp.target_space)
        placed = [in_template(t, request.prompt, request.subject) for t in templates]
        # the rewriting texts, then "<subject> is a" (the KL prompt)
        block = [text + tok.decode(target[:-1]) for text, _ in placed] + [f"{request.subject} is a"]
        lookup += [subject_last_index(tok, t, request.subject, start)
                   for t, start in zip(block, [s for _, s in placed] + [0])]
        texts += block
        owner += [r] * len(block)
        targets.append(target)
    enc = [tok(t, add_special_tokens=True).input_ids for t in texts]
    pad_with = pad_id(tok)
    if reuse_prefix is None:
        reuse_prefix = getattr(hp, "reuse_prefix", True)
    from ..model.stack import DecoderStack

    first = [r * (n_rw + 1) for r in range(len(requests))]  # each request's first rewriting text
    owner_t = torch.tensor(owner, device=device)
    if reuse_prefix and layer is not None and loss_layer is None and DecoderStack.supports(model):
        rows_fwd = _SuffixRows(model, module, enc, lookup, layer, pad_with, device, owner_t, first)
    else:
        loss_module = None if loss_layer is None else get_module(model, hp.layer_module_tmp.format(loss_layer))
        rows_fwd = _FullRows(model, module, enc, lookup, pad_with, device, owner_t, first, loss_module)
    # logits at position p predict token p+1: a target's tokens are scored at the last
    # len(target) positions of prompt + target[:-1]
    tgt_rows, tgt_pos, tgt_ids, tgt_owner, tgt_weight, tgt_template = [], [], [], [], [], []
    for r, target in enumerate(targets):
        for i in range(first[r], first[r] + n_rw):
            for j, t in enumerate(target):
                tgt_template.append(i - first[r])
                tgt_rows.append(i)
                tgt_pos.append(rows_fwd.ends[i] - len(target) + j)
                tgt_ids.append(t)
                tgt_owner.append(r)
                tgt_weight.append(1.0 / (len(target) * n_rw))
        if min(tgt_pos[-len(target) * n_rw:]) < int(rows_fwd.edit_col[first[r]]):
            raise ValueError(f"the target {requests[r].target_new!r} merged into the prompt's last tokens when "
                             f"tokenised together ({texts[first[r]]!r}): its tokens cannot be scored separately")
    tgt_rows, tgt_pos, tgt_ids, tgt_owner = (torch.tensor(x, device=device) for x in (tgt_rows, tgt_pos, tgt_ids, tgt_owner))
    tgt_weight = torch.tensor(tgt_weight, device=device)
    tgt_template = torch.tensor(tgt_template, device=device)
    rule = stop_rule(len(requests)) if stop_rule is not None else None
    kl_rows = torch.tensor([f + n_rw for f in first], device=device)
    look = rows_fwd.edit_col
    head = model.get_output_embeddings()
    if loss_layer is not None:
        norm_f = get_module(model, hp.ln_f_module) if hp.ln_f_module else DecoderStack(model).norm
        head_w = get_module(model, hp.lm_head_module) if hp.lm_head_module else head
        nll_head = lambda h: torch.nn.functional.linear(norm_f(h), head_w.weight, getattr(head_w, "bias", None))  # noqa: E731
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    kl_init = None
    init = rows_fwd.init.float()  # [R, out]
    init_norm = init.norm(dim=-1)
    delta = torch.zeros_like(init, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    active = torch.ones(len(requests), dtype=torch.bool, device=device)
    try:
        for step in range(hp.v_num_grad_steps):
            hidden = rows_fwd.final_hidden(delta)
            # the vocabulary projection only where a loss is read: the target positions and
            # the KL prompts' subject token
            kl_logp = torch.log_softmax(head(hidden[kl_rows, look[kl_rows]]).float(), dim=-1)  # [R, V]
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            if loss_layer is None:
                logp = torch.log_softmax(head(hidden[tgt_rows, tgt_pos]).float(), dim=-1)
            else:
                logp = torch.log_softmax(nll_head(rows_fwd.loss_hidden[tgt_rows, tgt_pos]).float(), dim=-1)
            tok_lp = logp.gather(1, tgt_ids[:, None]).squeeze(1)
            nll = -torch.zeros(len(requests), device=device).index_add(0, tgt_owner, tok_lp * tgt_weight)
            # KL(new ‖ unedited) per KL prompt (torch's kl_div with log targets, batchmean over one row)
            kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
            # ROME's own weight-decay term: ||δ|| / ||init||² (not squared in δ)
            decay = hp.v_weight_decay * (delta.norm(dim=-1) / init_norm ** 2)
            loss = nll + hp.kl_factor * kl + decay  # [R]
            if trace is not None:
                trace.append(loss.detach().clone())
            stop = loss.detach() < hp.early_stop_loss
            if rule is not None:
                stop |= rule((logp.detach().argmax(-1) == tgt_ids), tgt_owner, tgt_template)
            if step == hp.v_num_grad_steps - 1:
                stop[:] = True
            active &= ~stop
            if not bool(active.any()):
                break
            opt.zero_grad()
            loss[active].sum().backward()
            held = delta.detach().clone()
            opt.step()
            with torch.no_grad():
                # a request that stopped stays where it stopped (Adam's momentum would move it)
                delta[~active] = held[~active]
                max_norm = hp.clamp_norm_factor * init_norm
                norms = delta.norm(dim=-1)
                over = active & (norms > max_norm)
                delta[over] *= (max_norm[over] / norms[over])[:, None]
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return (init + delta).detach()


class _FullRows:
    """Every step: the whole model on the whole texts (right-padded), ``δ`` added by a hook on
    ``module``."""

    def __init__(self, model, module, enc, lookup, pad_with, device, owner, first, loss_module=None):
        self.model, self.module, self.loss_module = model, module, loss_module
        self.loss_hidden = None
        self.owner = owner  # [rows]: the request each text belongs to
        self.ids, self.mask = pad(enc, pad_with, device, side="right")
        self.edit_col = torch.tensor(lookup, device=device)
        self.rows = torch.arange(len(enc), device=device)
        self.ends = [len(e) for e in enc]
        seen = {}
        with torch.no_grad(), hooked(module, on_output=lambda y: seen.__setitem__("y", y[0] if isinstance(y, tuple) else y)):
            model.base_model(input_ids=self.ids, attention_mask=self.mask)
        self.init = seen["y"][first, self.edit_col[first]].detach().clone()  # [R, out]

    def final_hidden(self, delta):
        def add(out):
            hidden = (out[0] if isinstance(out, tuple) else out).clone()
            hidden[self.rows, self.edit_col] += delta[self.owner].to(hidden.dtype)
            return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

        def keep(out):
            self.loss_hidden = out[0] if isinstance(out, tuple) else out

        with hooked(self.module, on_output=add):
            if self.loss_module is None:
                return self.model.base_model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state
            with hooked(self.loss_module, on_output=keep):
                return self.model.base_model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state


class _SuffixRows:
    """Every step: only the tokens from each text's subject-last token on (column 0 here)
    through the layers above ``layer``, attending to the keys and values of the tokens before
    it (computed once, left-padded). ``module`` (in block ``layer``) adds its output to the
    residual stream, so adding ``δ`` to it equals adding ``δ`` to the block's output, which is
    computed once too."""

    def __init__(self, model, module, enc, lookup, layer, pad_with, device, owner, first):
        from ..model.stack import DecoderStack, KeyValues

        self.stack = stack = DecoderStack(model)
        self.layer = layer
        self.owner = owner  # [rows]: the request each text belongs to
        prefixes = [e[:i] for e, i in zip(enc, lookup)]
        suffixes = [e[i:] for e, i in zip(enc, lookup)]
        width = max(len(p) for p in prefixes)
        pre_ids, pre_mask = pad(prefixes, pad_with, device)
        pre_pos = positions(pre_mask)
        suf_ids, suf_mask = pad(suffixes, pad_with, device, side="right")
        self.positions = torch.tensor(lookup, device=device)[:, None] + torch.arange(suf_ids.shape[1], device=device)
        self.key_mask = torch.cat([pre_mask, suf_mask], dim=1)
        self.edit_col = torch.zeros(len(enc), dtype=torch.long, device=device)
        self.ends = [len(s) for s in suffixes]
        seen = {}
        with torch.no_grad(), hooked(module, on_output=lambda y: seen.__setitem__("y", y[0] if isinstance(y, tuple) else y)):
            kv = KeyValues(record=True)
            if width:
                stack.run(stack.embed(pre_ids, pre_pos), pre_pos, pre_mask, 0, None, kv)
            self.prefix = {l: kv.seen[l] for l in range(layer + 1, stack.num_layers)} if width else {}
            below = KeyValues(prefix=dict(kv.seen) if width else {})
            self.after = stack.run(stack.embed(suf_ids, self.positions), self.positions, self.key_mask,
                                   0, layer + 1, below)
        self.init = seen["y"][first, 0].detach().clone()  # [R, out]

    def final_hidden(self, delta):
        from ..model.stack import KeyValues

        hidden = self.after.clone()
        hidden[:, 0] += delta[self.owner].to(hidden.dtype)
        hidden = self.stack.run(hidden, self.positions, self.key_mask, self.layer + 1, None,
                                KeyValues(prefix=self.prefix))
        return self.stack.norm(hidden)


__all__ = ["optimize_target", "optimize_targets"]
