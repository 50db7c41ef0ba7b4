"""Reusing what the unedited layers compute, across the points of a sweep.

An edit changes a few layers; for every prompt, everything the layers below the first edited
one compute — the hidden states entering it and those layers' keys and values — is the same
at every point of a sweep. :class:`LowerLayerCache` keeps them per prompt (up to a memory
budget) the first time a prompt is read, and the decoding engine then runs only the layers
from ``layer`` up for it. The cache fingerprints the lower layers' weights and refuses to be
used once they have changed.
"""
from __future__ import annotations

import torch

from ..errors import EdithurtError
from .stack import DecoderStack


class StaleCacheError(EdithurtError, RuntimeError):
    """The layers a LowerLayerCache was filled from have changed since."""


class LowerLayerCache:
    """Per prompt (its token ids): the hidden states entering ``layer`` ``[n, H]`` and, for
    each layer below, keys and values ``[heads, n, head_dim]``. ``max_bytes`` bounds what is
    kept; prompts beyond it are simply read in full."""

    def __init__(self, model, layer: int, max_bytes: int = 4 << 30):
        self.stack = DecoderStack(model)
        if not 0 < layer < self.stack.num_layers:
            raise ValueError(f"layer must be in 1..{self.stack.num_layers - 1} (0 would cache nothing), got {layer}")
        self.layer = layer
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: dict[tuple[int, ...], tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> torch.Tensor:
        params = list(self.stack.tokens.parameters()) + [p for l in self.stack.layers[: self.layer] for p in l.parameters()]
        if self.stack.learnt_positions is not None:
            params += list(self.stack.learnt_positions.parameters())
        with torch.no_grad():
            return torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).cpu()

    def check(self) -> None:
        """Raise :class:`StaleCacheError` if a layer below ``layer`` (or an embedding) changed."""
        if not torch.equal(self._fingerprint(), self.fingerprint):
            raise StaleCacheError(
                f"the layers below layer {self.layer} have changed since this cache was filled (an edit at or "
                f"below layer {self.layer - 1}?): make a new LowerLayerCache with the lowest edited layer")

    def __contains__(self, ids) -> bool:
        return tuple(ids) in self.entries

    def put(self, ids, hidden: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = hidden.numel() * hidden.element_size() + sum(k.numel() * k.element_size() * 2 for k, _ in kv)
        if self.bytes + size > self.max_bytes or tuple(ids) in self.entries:
            return
        self.entries[tuple(ids)] = (hidden.clone(), [(k.clone(), v.clone()) for k, v in kv])
        self.bytes += size

    # -- used by the engine -------------------------------------------------------------
    def record(self, seqs, hidden_entering, cache) -> None:
        """Keep what a normal, left-padded prefill of ``seqs`` computed: ``hidden_entering``
        ``[b, w, H]`` (the input of ``layer``) and ``cache``'s lower layers."""
        width = hidden_entering.shape[1]
        for r, ids in enumerate(seqs):
            sl = slice(width - len(ids), width)
            kv = [(cache.layers[l].keys[r, :, sl], cache.layers[l].values[r, :, sl]) for l in range(self.layer)]
            self.put(ids, hidden_entering[r, sl], kv)

    def prefill(self, seqs, mask, positions, cache) -> torch.Tensor:
        """Read ``seqs`` (all cached; left-padded by ``mask [b, w]``) through the layers from
        ``layer`` up, filling ``cache`` (lower layers from the store); the last positions'
        logits ``[b, V]``."""
        b, width = mask.shape
        first, kv0 = self.entries[tuple(seqs[0])]
        hidden = first.new_zeros((b, width, first.shape[-1]))
        for layer in range(self.layer):
            k0, v0 = kv0[layer]
            keys = k0.new_zeros((b, k0.shape[0], width, k0.shape[-1]))
            values = torch.zeros_like(keys)
            for r, ids in enumerate(seqs):
                k, v = self.entries[tuple(ids)][1][layer]
                keys[r, :, width - len(ids):], values[r, :, width - len(ids):] = k, v
            cache.update(keys, values, layer)
        for r, ids in enumerate(seqs):
            hidden[r, width - len(ids):] = self.entries[tuple(ids)][0]
        out = self.stack.run(hidden, positions, mask, self.layer, None, cache)
        return self.stack.logits(out[:, -1]).float()


def lowest_edited_layer(model, parameter_names) -> int | None:
    """The index of the lowest decoder layer holding one of ``parameter_names`` — the layer a
    :class:`LowerLayerCache` may start at — or None when nothing below it can be reused (an
    edit of layer 0 or of a parameter outside the layers, e.g. an embedding, or a model whose
    layers :class:`DecoderStack` cannot run)."""
    if not DecoderStack.supports(model):
        return None
    stack = DecoderStack(model)
    owner = {id(p): i for i, layer in enumerate(stack.layers) for p in layer.parameters()}
    params = dict(model.named_parameters())
    layers = [owner.get(id(params[n])) for n in parameter_names if n in params]
    if not layers or any(l is None for l in layers):
        return None
    return min(layers) or None
