"""The decoder as parts, so that a forward pass can start at any layer.

An edit changes a few layers; everything computed below the first changed layer is the same
before and after it. :class:`DecoderStack` runs a chosen range of layers on given hidden
states, with an explicit attention mask and an optional key/value store, so callers can keep
what does not change (the hidden states entering a layer, the keys and values of a prefix)
and recompute only the rest. Llama-style models (``model.model.layers``, rotary positions)
and GPT-2 (``model.transformer.h``, learnt positions, ``Conv1D``) are supported.

Shapes: ``hidden [B, Q, H]`` for ``Q`` query positions; ``positions [B, Q]``;
``key_mask [B, K]`` (1 = a real token) over the ``K`` key slots, the queries being the last
``Q`` of them; keys and values ``[B, heads, K, head_dim]``.
"""
from __future__ import annotations

import torch

from ..errors import EdithurtError


class UnsupportedModelError(EdithurtError, ValueError):
    """A model whose layer stack this package cannot run piece by piece."""


class KeyValues:
    """The duck-typed cache the attention layers call (``update(k, v, layer_idx)``).

    ``prefix``: per layer, keys and values that come before the current queries (they are
    prepended and never changed). ``record=True`` keeps what each layer returns (prefix plus
    new), so a pass can be reused as the prefix of later ones."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None, record: bool = False):
        self.prefix = prefix or {}
        self.record = record
        self.seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, keys, values, layer_idx, *args, **kwargs):
        if layer_idx in self.prefix:
            pk, pv = self.prefix[layer_idx]
            keys, values = torch.cat([pk, keys], dim=-2), torch.cat([pv, values], dim=-2)
        if self.record:
            self.seen[layer_idx] = (keys, values)
        return keys, values


def attention_bias(key_mask: torch.Tensor, n_queries: int, dtype) -> torch.Tensor:
    """Additive attention mask ``[B, 1, Q, K]``: the queries are the last ``Q`` key slots;
    query ``q`` sees key ``k`` when the key is a real token and not in its future. A padding
    query that would see nothing sees itself (its output is never read), so no row is all
    masked and nothing turns into NaN."""
    b, k = key_mask.shape
    q_slot = torch.arange(k - n_queries, k, device=key_mask.device)[:, None]  # [Q, 1]
    k_slot = torch.arange(k, device=key_mask.device)[None, :]  # [1, K]
    allowed = key_mask.bool()[:, None, :] & (k_slot <= q_slot)[None]
    allowed = allowed | (k_slot == q_slot)[None]
    bias = torch.zeros((b, 1, n_queries, k), dtype=dtype, device=key_mask.device)
    return bias.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)


class DecoderStack:
    """``embed`` → ``run(start, stop)`` → ``logits``: the model's forward pass in pieces."""

    SUPPORTED = ("llama", "gpt2")  # architectures whose layers this class runs exactly as the model does

    @classmethod
    def supports(cls, model) -> bool:
        return getattr(model.config, "model_type", None) in cls.SUPPORTED

    def __init__(self, model):
        base = model.base_model
        self.model = model
        if not self.supports(model):
            raise UnsupportedModelError(
                f"running layers piece by piece is implemented for {', '.join(self.SUPPORTED)} models, not "
                f"{getattr(model.config, 'model_type', type(model).__name__)!r} (other architectures scale "
                "embeddings, add norms or windows that this class does not reproduce)")
        if hasattr(base, "layers") and hasattr(base, "rotary_emb"):
            self.layers, self.norm, self.tokens = base.layers, base.norm, base.embed_tokens
            self.rotary, self.learnt_positions = base.rotary_emb, None
        elif hasattr(base, "h") and hasattr(base, "wpe"):
            self.layers, self.norm, self.tokens = base.h, base.ln_f, base.wte
            self.rotary, self.learnt_positions = None, base.wpe
        else:
            raise UnsupportedModelError(
                f"{type(model).__name__} has neither a Llama-style (model.layers + rotary_emb) nor a GPT-2-style "
                "(transformer.h + wpe) layer stack; run it with reuse_prefix=False / without cached layers")
        self.head = model.get_output_embeddings()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def dtype(self):
        return self.head.weight.dtype

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.tokens(ids)
        if self.learnt_positions is not None:
            hidden = hidden + self.learnt_positions(positions)
        return hidden

    def run(self, hidden, positions, key_mask, start: int = 0, stop: int | None = None,
            cache: KeyValues | None = None) -> torch.Tensor:
        """Layers ``start .. stop-1`` on ``hidden [B, Q, H]``; ``key_mask [B, K]`` covers the
        cache's prefix (if any) followed by these ``Q`` positions."""
        bias = attention_bias(key_mask, hidden.shape[1], hidden.dtype)
        rotary = self.rotary(hidden, positions) if self.rotary is not None else None
        for layer in self.layers[start:stop]:
            if rotary is not None:
                hidden = layer(hidden, attention_mask=bias, position_ids=positions, cache=cache,
                               use_cache=cache is not None, position_embeddings=rotary)
            else:
                hidden = layer(hidden, cache, bias, use_cache=cache is not None)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and vocabulary projection: ``[..., H] -> [..., V]``."""
        return self.head(self.norm(hidden))
