"""The one decoding engine: batched greedy generation and teacher-forced scoring.

Every task and metric goes through :func:`generate`. Prompts are sorted by length and cut
into batches by a token budget (never padded to a fixed length), left-padded, run once
through the model (prefill, logits of the last position only), then decoded greedily with the
KV cache until every sequence of the batch has ended or ``max_new_tokens`` is reached.
Continuations to score (a gold answer, label strings, an edit target) reuse the prompt's
cache: after decoding, the cache is cut back to the prompt and repeated once per
continuation, so a prompt is read once whatever is asked of it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm


@dataclass
class Scored:
    """A teacher-forced continuation: per token, its log-probability and whether it was the
    model's argmax (the token accuracy of EasyEdit's editing metrics)."""

    tokens: list[int]
    logprobs: list[float]
    greedy: list[bool]
    argmax: list[int]

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood per token."""
        return -self.logprob / len(self.logprobs)

    @property
    def accuracy(self) -> float:
        return sum(self.greedy) / len(self.greedy)


@dataclass
class Generation:
    """What :func:`generate` returns per prompt: the greedy new ``tokens`` (end-of-sequence
    excluded), their ``text``, the prompt's length in tokens, and one :class:`Scored` per
    continuation asked for."""

    prompt_tokens: int
    tokens: list[int]
    text: str
    scored: list[Scored] = field(default_factory=list)


def generate(
    model,
    tok,
    prompts: Sequence[str],
    max_new_tokens: int,
    continuations: Sequence[Sequence[str]] | None = None,
    *,
    batch_tokens: int = 2048,
    max_batch_size: int = 64,
    progress: bool = True,
    desc: str = "generate",
    sample_top_k: int | None = None,
    seed: int = 0,
) -> list[Generation]:
    """Greedy-decode ``max_new_tokens`` after each prompt; score ``continuations[i]`` (a list
    of strings, each tokenised on its own, leading space included) after prompt ``i``.

    ``batch_tokens`` bounds batch size × longest prompt of the batch. Output is in the order
    of ``prompts`` and does not depend on how they were batched (up to float rounding).
    ``sample_top_k`` samples each new token from the ``k`` most likely ones instead of taking
    the argmax (seeded by ``seed``; used to draw ROME's context templates).
    """
    if continuations is not None and len(continuations) != len(prompts):
        raise ValueError(f"{len(continuations)} continuation lists for {len(prompts)} prompts")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    enc = [tok(p, add_special_tokens=True).input_ids for p in prompts]
    if any(len(e) == 0 for e in enc):
        raise ValueError("an empty prompt cannot be decoded: every prompt needs at least one token")
    conts = [[_encode_continuation(tok, c) for c in cs] for cs in continuations] if continuations else [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    out: list[Generation | None] = [None] * len(prompts)
    sampler = _Sampler(sample_top_k, seed, device) if sample_top_k else None
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False) as bar:
        for batch in _batches(order, enc, batch_tokens, max_batch_size):
            results = _run_batch(model, tok, [enc[i] for i in batch], [conts[i] for i in batch], max_new_tokens,
                                 device, sampler)
            for i, r in zip(batch, results):
                out[i] = r
            bar.update(len(batch))
    return out  # type: ignore[return-value]


def _encode_continuation(tok, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"continuation {text!r} has no tokens")
    return ids


def _batches(order, enc, batch_tokens, max_batch_size):
    batch: list[int] = []
    for i in order:  # longest first: the first prompt of a batch sets its width
        width = len(enc[batch[0]]) if batch else len(enc[i])
        if batch and ((len(batch) + 1) * width > batch_tokens or len(batch) >= max_batch_size):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _pad_left(seqs, pad_id, device):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s)
        mask[r, width - len(s):] = 1
    return ids.to(device), mask.to(device)


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


def _run_batch(model, tok, seqs, conts, max_new_tokens, device, sampler=None) -> list[Generation]:
    from transformers import DynamicCache

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = _pad_left(seqs, pad_id, device)
    lengths = mask.sum(-1)
    cache = DynamicCache(config=model.config)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
    first_logprobs = torch.log_softmax(logits, dim=-1)  # [B, V]: scores each continuation's first token

    stop = _stop_ids(model, tok)
    new = [[] for _ in seqs]
    done = torch.zeros(len(seqs), dtype=torch.bool, device=device)
    step_mask = mask
    for step in range(max_new_tokens):
        nxt = sampler(logits) if sampler else logits.argmax(-1)
        for r in range(len(seqs)):
            if not done[r]:
                if int(nxt[r]) in stop:
                    done[r] = True
                else:
                    new[r].append(int(nxt[r]))
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        step_mask = torch.cat([step_mask, torch.ones_like(step_mask[:, :1])], dim=-1)
        logits = model(input_ids=torch.where(done, pad_id, nxt)[:, None], attention_mask=step_mask,
                       position_ids=(lengths + step)[:, None], cache=cache,
                       use_cache=True).logits[:, -1, :].float()

    scored = _score_continuations(model, cache, mask, lengths, first_logprobs, conts, pad_id, device)
    return [
        Generation(len(s), n, tok.decode(n, skip_special_tokens=True), sc)
        for s, n, sc in zip(seqs, new, scored)
    ]


def _score_continuations(model, cache, mask, lengths, first_logprobs, conts, pad_id, device):
    pairs = [(r, c) for r, cs in enumerate(conts) for c in cs]
    if not pairs:
        return [[] for _ in conts]
    rows = torch.tensor([r for r, _ in pairs], device=device)
    width = max(len(c) for _, c in pairs)
    logprobs = torch.empty((len(pairs), width), device=device)
    argmax = torch.empty((len(pairs), width), dtype=torch.long, device=device)
    targets = torch.full((len(pairs), width), pad_id, dtype=torch.long, device=device)
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
