"""The decoding engine: batched greedy generation, with continuations scored after each prompt.

Every task goes through :func:`generate` (teacher-forced scoring alone, with nothing to
decode, is :func:`helpers.model.score.score`). Prompts are sorted by length and cut
into decode batches of up to ``max_batch_size``. Within a batch, prompts are read (prefill,
logits of the last position only) in groups of nearly equal length, each group left-padded to
its own longest prompt and bounded by a token budget: on a CPU a single prompt of a hundred
tokens already keeps the matrix units busy, so padding is pure loss and a group only pays when
its prompts are alike. The groups' key/value caches are then joined (left-padded) and the
whole batch is decoded greedily together — decoding one token is bound by reading the weights,
so it pays to decode as many sequences at once as possible — until every sequence has ended
or ``max_new_tokens`` is reached. Tokens that every prompt starts with (a task's instruction)
are read once and their keys and values shared.
Continuations to score (a gold answer, label strings, an edit target) reuse the prompt's
cache: after decoding, the cache is cut back to the prompt and repeated once per
continuation, so a prompt is read once whatever is asked of it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .batching import bounded_batches, encode_continuation, encode_prompts, like_length_groups, pad, pad_id, positions
from .score import Scored


@dataclass
class Generation:
    """What :func:`generate` returns per prompt: the greedy new ``tokens`` (end-of-sequence
    excluded), their ``text``, the prompt's length in tokens, one :class:`Scored` per
    continuation asked for, and ``end_token``: the stop token decoding ended on (None when it
    ran to ``max_new_tokens``)."""

    prompt_tokens: int
    tokens: list[int]
    text: str
    scored: list[Scored] = field(default_factory=list)
    end_token: int | None = None


def generate(
    model,
    tok,
    prompts: Sequence[str],
    max_new_tokens: int,
    continuations: Sequence[Sequence[str]] | None = None,
    *,
    batch_tokens: int = 2048,
    max_batch_size: int = 64,
    decode_tokens: int = 32768,
    pad_tolerance: float = 0.1,
    share_prefix: bool = True,
    lower_layers=None,
    progress: bool = True,
    desc: str = "generate",
    sample_top_k: int | None = None,
    seed: int = 0,
) -> list[Generation]:
    """Greedy-decode ``max_new_tokens`` after each prompt; score ``continuations[i]`` (a list
    of strings, leading space included, each tokenised together with its prompt) after prompt ``i``.

    ``batch_tokens`` bounds a prefill group's size × its longest prompt, ``decode_tokens`` a
    decode batch's size × (longest prompt + ``max_new_tokens``) (its key/value memory),
    ``max_batch_size`` its number of prompts; ``pad_tolerance``: a
    prompt joins a group only if padding it to the group's longest adds at most this share of
    its length. Output is in the order of ``prompts`` and does not depend on how they were
    batched (up to float rounding). ``share_prefix``: read a common start of all prompts once.
    ``lower_layers``: a :class:`helpers.model.lower_layers.LowerLayerCache` — prompts it holds are
    read from its layer up, the others in full (and then kept in it).
    ``sample_top_k`` samples each new token from the ``k`` most likely ones instead of taking
    the argmax (seeded by ``seed``; used to draw ROME's context templates).
    To score continuations without decoding anything, use :func:`helpers.model.score.score`.
    """
    if continuations is not None and len(continuations) != len(prompts):
        raise ValueError(f"{len(continuations)} continuation lists for {len(prompts)} prompts")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not prompts:
        return []
    device = next(model.parameters()).device
    enc = encode_prompts(tok, prompts)
    conts = ([[encode_continuation(tok, p, e, c) for c in cs] for p, e, cs in zip(prompts, enc, continuations)]
             if continuations else [[] for _ in prompts])
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    out: list[Generation | None] = [None] * len(prompts)
    sampler = _Sampler(sample_top_k, seed, device) if sample_top_k else None
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False) as bar:
        if lower_layers is not None:
            lower_layers.check()
        prefix = _read_shared_prefix(model, enc, device) if share_prefix and lower_layers is None else None
        if prefix is not None:
            enc = [e[prefix.length:] for e in enc]
        width = (prefix.length if prefix is not None else 0) + max_new_tokens
        for batch in bounded_batches(order, [len(e) + width for e in enc], max_batch_size, decode_tokens):
            groups = like_length_groups([len(enc[i]) for i in batch], batch_tokens, pad_tolerance)
            results = _run_batch(model, tok, [enc[i] for i in batch], [conts[i] for i in batch], max_new_tokens,
                                 device, sampler, groups, prefix, lower_layers)
            for i, r in zip(batch, results):
                out[i] = r
            bar.update(len(batch))
    return out  # type: ignore[return-value]


def _stop_ids(model, tok) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return ids


class _Sampler:
    def __init__(self, k: int, seed: int, device):
        self.k = k
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        top, idx = logits.topk(self.k, dim=-1)
        pick = torch.multinomial(torch.softmax(top, dim=-1), 1, generator=self.gen)
        return idx.gather(-1, pick).squeeze(-1)


MIN_SHARED_PREFIX = 8  # tokens: below this, sharing saves less than it costs


@dataclass
class _Prefix:
    length: int
    cache: object  # DynamicCache of the prefix, batch 1


def _read_shared_prefix(model, enc, device) -> _Prefix | None:
    """The tokens every prompt starts with (each keeping at least one of its own), read once."""
    from transformers import DynamicCache

    n = min(len(e) for e in enc) - 1
    first = enc[0]
    for e in enc[1:]:
        n = next((i for i in range(n) if e[i] != first[i]), n)
    if n < MIN_SHARED_PREFIX:
        return None
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([first[:n]], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    return _Prefix(n, cache)


def _prefill(model, seqs, groups, pad_with, device, prefix: _Prefix | None = None, lower=None):
    """Read each group of prompts (after the shared ``prefix``, if any); return the last
    positions' logits ``[B, V]``, the joined cache and the batch's attention mask ``[B, W]``
    (prefix, then left padding, then each prompt's own tokens)."""
    from transformers import DynamicCache

    _, mask = pad(seqs, pad_with, device)
    shared = prefix.length if prefix else 0
    if shared:
        mask = torch.cat([mask.new_ones((len(seqs), shared)), mask], dim=1)
    width = mask.shape[1]
    parts, logits = [], []
    for g in groups:
        ids, gmask = pad(seqs[g], pad_with, device)
        cache = DynamicCache(config=model.config)
        position = positions(gmask, shared)
        if shared:
            for layer, kv in enumerate(prefix.cache.layers):
                cache.update(kv.keys.expand(len(ids), -1, -1, -1), kv.values.expand(len(ids), -1, -1, -1), layer)
            gmask = torch.cat([gmask.new_ones((len(ids), shared)), gmask], dim=1)
        if lower is not None and all(x in lower for x in seqs[g]):
            logits.append(lower.prefill(seqs[g], gmask, position, cache))
        elif lower is not None:
            seen = {}
            hook = lower.stack.layers[lower.layer].register_forward_pre_hook(lambda m, a: seen.update(h=a[0]))
            try:
                logits.append(model(input_ids=ids, attention_mask=gmask, position_ids=position, cache=cache,
                                    use_cache=True, logits_to_keep=1).logits[:, -1, :].float())
            finally:
                hook.remove()
            lower.record(seqs[g], seen["h"], cache)
        else:
            logits.append(model(input_ids=ids, attention_mask=gmask, position_ids=position, cache=cache,
                                use_cache=True, logits_to_keep=1).logits[:, -1, :].float())
        parts.append(cache)
    if len(parts) == 1:
        return logits[0], parts[0], mask
    joined = DynamicCache(config=model.config)
    for layer in range(len(parts[0].layers)):
        keys, values = [], []
        for cache in parts:
            k, v = cache.layers[layer].keys, cache.layers[layer].values
            gap = width - k.shape[-2]
            if gap:  # padding goes after the shared prefix, before the prompt's own tokens
                zeros = k.new_zeros((*k.shape[:2], gap, k.shape[-1]))
                k = torch.cat([k[..., :shared, :], zeros, k[..., shared:, :]], dim=-2)
                v = torch.cat([v[..., :shared, :], zeros, v[..., shared:, :]], dim=-2)
            keys.append(k)
            values.append(v)
        joined.update(torch.cat(keys), torch.cat(values), layer)
    return torch.cat(logits), joined, mask


def _run_batch(model, tok, seqs, conts, max_new_tokens, device, sampler=None, groups=None,
               prefix: _Prefix | None = None, lower=None) -> list[Generation]:
    pad_with = pad_id(tok)
    logits, cache, mask = _prefill(model, seqs, groups or [slice(0, len(seqs))], pad_with, device, prefix, lower)
    lengths = mask.sum(-1)
    first_logprobs = torch.log_softmax(logits, dim=-1)  # [B, V]: scores each continuation's first token

    stop = _stop_ids(model, tok)
    new = [[] for _ in seqs]
    ends: list[int | None] = [None] * len(seqs)
    done = torch.zeros(len(seqs), dtype=torch.bool, device=device)
    step_mask = mask
    for step in range(max_new_tokens):
        nxt = sampler(logits) if sampler else logits.argmax(-1)
        for r in range(len(seqs)):
            if not done[r]:
                if int(nxt[r]) in stop:
                    done[r] = True
                    ends[r] = int(nxt[r])
                else:
                    new[r].append(int(nxt[r]))
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        step_mask = torch.cat([step_mask, torch.ones_like(step_mask[:, :1])], dim=-1)
        logits = model(input_ids=torch.where(done, pad_with, nxt)[:, None], attention_mask=step_mask,
                       position_ids=(lengths + step)[:, None], cache=cache,
                       use_cache=True).logits[:, -1, :].float()

    scored = _score_continuations(model, cache, mask, lengths, first_logprobs, conts, pad_with, device)
    return [
        Generation(len(s) + (prefix.length if prefix else 0), n, tok.decode(n, skip_special_tokens=True), sc, end)
        for s, n, sc, end in zip(seqs, new, scored, ends)
    ]


def _score_continuations(model, cache, mask, lengths, first_logprobs, conts, pad_with, device):
    pairs = [(r, c) for r, cs in enumerate(conts) for c in cs]
    if not pairs:
        return [[] for _ in conts]
    rows = torch.tensor([r for r, _ in pairs], device=device)
    width = max(len(c) for _, c in pairs)
    logprobs = torch.empty((len(pairs), width), device=device)
    argmax = torch.empty((len(pairs), width), dtype=torch.long, device=device)
    targets = torch.full((len(pairs), width), pad_with, dtype=torch.long, device=device)
    cmask = torch.zeros((len(pairs), width), dtype=torch.long, device=device)
    for p, (_, c) in enumerate(pairs):
        targets[p, : len(c)] = torch.tensor(c)
        cmask[p, : len(c)] = 1
    first = first_logprobs[rows]
    logprobs[:, 0] = first.gather(-1, targets[:, :1]).squeeze(-1)
    argmax[:, 0] = first.argmax(-1)
    if width > 1:
        # Drop what decoding appended, then give each continuation its own copy of the prompt.
        extra = cache.get_seq_length() - mask.shape[1]
        if extra:
            cache.crop(-extra)
        cache.reorder_cache(rows)
        inputs = targets[:, :-1]
        pos = lengths[rows][:, None] + torch.arange(width - 1, device=device)[None, :]
        full_mask = torch.cat([mask[rows], cmask[:, :-1]], dim=-1)
        lp = torch.log_softmax(model(input_ids=inputs, attention_mask=full_mask, position_ids=pos,
                                     cache=cache, use_cache=True).logits.float(), dim=-1)
        logprobs[:, 1:] = lp.gather(-1, targets[:, 1:, None]).squeeze(-1)
        argmax[:, 1:] = lp.argmax(-1)
    greedy = argmax == targets
    out = [[] for _ in conts]
    for p, (r, c) in enumerate(pairs):
        n = len(c)
        out[r].append(Scored(c, logprobs[p, :n].tolist(), greedy[p, :n].tolist(), argmax[p, :n].tolist()))
    return out
