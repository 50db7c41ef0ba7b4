"""Turning token sequences into batches: padding, and groups of like length.

Shared by the decoding engine (:mod:`.generate`), the scoring path (:mod:`.score`), the
editing methods (right-padded reads of short prompts) and the benchmarks.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch


def pad_id(tok) -> int:
    """The tokenizer's padding id (its end-of-sequence id when it has none)."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def pad(seqs: Sequence[Sequence[int]], pad_with: int, device=None, side: str = "left",
        width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, W], mask [B, W])`` of token-id lists padded to ``width`` (default: the
    longest) on ``side``; ``mask`` is 1 on real tokens. Left padding keeps every sequence's last
    token in the last column (what decoding needs); right padding keeps positions 0..n-1 (no
    position ids needed)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in seqs) if width is None else width
    ids = torch.full((len(seqs), width), pad_with, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[r, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, cols] = 1
    return ids.to(device), mask.to(device)


def encode_padded(tok, texts: Sequence[str], device=None, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``texts`` tokenised (special tokens included) and padded: ``(ids, mask)``."""
    return pad([tok(t, add_special_tokens=True).input_ids for t in texts], pad_id(tok), device, side)


def positions(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids of a left-padded ``mask [B, W]``: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset


def like_length_groups(lengths: Sequence[int], batch_tokens: int, pad_tolerance: float) -> list[slice]:
    """Consecutive slices of ``lengths`` (sorted longest first) to read together: a group holds
    at most ``batch_tokens`` padded tokens, and a sequence joins it only if padding it to the
    group's longest adds at most ``pad_tolerance`` × its length (``math.inf``: any padding)."""
    groups, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or (i - start + 1) * lengths[start] > batch_tokens or \
                lengths[start] - lengths[i] > pad_tolerance * lengths[i]:
            groups.append(slice(start, i))
            start = i
    return groups


def bounded_batches(order: Sequence[int], widths: Sequence[int], max_batch_size: int, max_tokens: int):
    """Consecutive runs of ``order`` (widest first): at most ``max_batch_size`` items and
    ``max_tokens`` for the run's size × its first (widest) item's width."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) >= max_batch_size or (len(batch) + 1) * widths[batch[0]] > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def encode_continuation(tok, prompt: str, prompt_ids: Sequence[int], text: str) -> list[int]:
    """The token ids of ``text`` (a gold answer, a label, an edit target) as it continues ``prompt``
    (whose own ids are ``prompt_ids``): prompt and text tokenised together, the prompt's tokens cut
    off, as EasyEdit scores a target. Tokenised alone, a continuation can differ from how it reads
    after its prompt: a SentencePiece tokenizer (LLaMA's) turns " true" on its own into "▁" + "▁true",
    a token the joint text never has. Where the joint tokens do not start with the prompt's own (the
    text merged with the prompt's last token) the continuation is tokenised alone, with a warning."""
    joint = tok(prompt + text, add_special_tokens=True).input_ids
    n = len(prompt_ids)
    if len(joint) > n and list(joint[:n]) == list(prompt_ids):
        return list(joint[n:])
    ids = tok(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"continuation {text!r} has no tokens")
    warnings.warn("a continuation changed its prompt's last tokens when tokenised with it; it was tokenised on "
                  "its own instead (its first token may differ from how the model would read it)", stacklevel=2)
    return ids


def encode_prompts(tok, prompts: Sequence[str]) -> list[list[int]]:
    """The token ids of each prompt (special tokens included); an empty one is an error."""
    enc = [tok(p, add_special_tokens=True).input_ids for p in prompts]
    if any(len(e) == 0 for e in enc):
        raise ValueError("an empty prompt cannot be read: every prompt needs at least one token")
    return enc
