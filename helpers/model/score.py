"""Teacher-forced scoring: how likely a model finds given continuations after given prompts.

Nothing is decoded. Each prompt is read together with its continuation in one pass — prompt
tokens followed by the continuation's tokens but its last — and only the positions that predict
the continuation's tokens are projected to the vocabulary. Sequences are sorted by length and
read in left-padded groups of at most ``batch_tokens`` padded tokens (short edit prompts: one
padded group is one forward instead of one per length); ``pad_tolerance`` can keep long
sequences of unlike length apart.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .batching import encode_continuation, encode_prompts, like_length_groups, pad, pad_id, positions


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


def score(model, tok, prompts: Sequence[str], continuations: Sequence[str], *, batch_tokens: int = 2048,
          pad_tolerance: float = math.inf, progress: bool = False, desc: str = "score") -> list[Scored]:
    """One :class:`Scored` per ``(prompts[i], continuations[i])``: the continuation (leading
    space included; its tokens are those it has when tokenised together with the prompt,
    :func:`helpers.model.batching.encode_continuation`) teacher-forced after the prompt. To score several
    continuations after one prompt, repeat the prompt. ``batch_tokens`` bounds a group's padded
    size (sequences longer than it are read alone); a sequence joins a group only if padding it
    to the group's longest adds at most ``pad_tolerance`` × its length (default: any padding;
    0.1, the decoding engine's, pays for long prompts on a CPU, where padding is pure loss).
    Output in the order of ``prompts``."""
    if len(continuations) != len(prompts):
        raise ValueError(f"{len(continuations)} continuations for {len(prompts)} prompts")
    if not prompts:
        return []
    device = next(model.parameters()).device
    enc = encode_prompts(tok, prompts)
    conts = [encode_continuation(tok, p, e, c) for p, e, c in zip(prompts, enc, continuations)]
    seqs = [e + c[:-1] for e, c in zip(enc, conts)]  # the last continuation token is predicted, never read
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    groups = like_length_groups([len(seqs[i]) for i in order], batch_tokens, pad_tolerance)
    out: list[Scored | None] = [None] * len(prompts)
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False) as bar:
        for g in groups:
            rows = order[g]
            ids, mask = pad([seqs[i] for i in rows], pad_id(tok), device)
            width = max(len(conts[i]) for i in rows)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                           logits_to_keep=width).logits
            lp = torch.log_softmax(logits.float(), dim=-1)  # [b, width, V]
            for r, i in enumerate(rows):
                c = conts[i]
                at = lp[r, width - len(c):]  # [len(c), V]: the positions predicting c
                target = torch.tensor(c, device=device)
                argmax = at.argmax(-1)
                out[i] = Scored(c, at.gather(-1, target[:, None]).squeeze(-1).tolist(),
                                (argmax == target).tolist(), argmax.tolist())
            bar.update(len(rows))
    return out  # type: ignore[return-value]
