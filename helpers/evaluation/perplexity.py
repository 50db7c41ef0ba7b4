"""Perplexity on a fixed held-out text: a cheap collapse signal that moves before the tasks do.

The text (``heldout.txt``, shipped with the package) is public-domain prose — the opening of the
Declaration of Independence and the Gettysburg Address — and two short encyclopedic paragraphs
written for this package; no downstream task and no edit record draws on it. It is read in
windows of ``window`` tokens, each scored on its own (so a window is an example: its NLL before
and after an edit pairs, and intervals over windows come from :mod:`helpers.report.stats`).
"""
from __future__ import annotations

import math
from importlib import resources

import pandas as pd
import torch

from ..model.batching import pad, pad_id

HELDOUT_WINDOW = 64


def heldout_text() -> str:
    return resources.files(__package__).joinpath("heldout.txt").read_text(encoding="utf8")


def heldout_records(model, tok, text: str | None = None, window: int = HELDOUT_WINDOW) -> pd.DataFrame:
    """One row per window: ``window`` (its index), ``nll_sum`` (summed NLL of the window's
    tokens after its first, in nats), ``tokens`` (how many were scored). A window's first token
    has no context inside it and is not scored; a begin-of-text token, where the tokenizer adds
    one, is put before each window and is never scored."""
    ids = tok(text if text is not None else heldout_text(), add_special_tokens=False).input_ids
    bos = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
    windows = [bos + ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) > 1]
    device = next(model.parameters()).device
    batch, mask = pad(windows, pad_id(tok), device, side="right")
    with torch.no_grad():
        logits = model(input_ids=batch, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, batch[:, 1:, None])[..., 0]
    scored = mask[:, 1:].bool().clone()
    scored[:, : len(bos)] = False  # the first real token has only the begin-of-text token before it
    nll = -(logp * scored).sum(1)
    return pd.DataFrame({"window": range(len(windows)), "nll_sum": nll.tolist(),
                         "tokens": scored.sum(1).tolist()})


def perplexity(records: pd.DataFrame) -> float:
    """``exp(Σ NLL / Σ tokens)`` over the windows."""
    return math.exp(records.nll_sum.sum() / records.tokens.sum())


__all__ = ["heldout_text", "heldout_records", "perplexity", "HELDOUT_WINDOW"]
