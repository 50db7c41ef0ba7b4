"""Reaching into a transformer: modules by name, weight layouts, hooks, a module's input.

(What rome calls ``nethook``; where a subject's tokens are is :mod:`.positions`.)

GPT-2 stores MLP weights as ``Conv1D`` with shape ``[in, out]``; Llama-style models as
``nn.Linear`` with shape ``[out, in]``. Editing code works in one convention — keys ``k`` of
size ``in``, values ``v`` of size ``out``, updates ``v ⊗ k`` of shape ``[out, in]`` — and
:func:`to_param_layout` turns an update into the parameter's own layout.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from ..errors import EdithurtError
from ..model.batching import encode_padded


class LayerError(EdithurtError, ValueError):
    """A module name or layer index that the model does not have."""


def get_module(model, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        n = num_layers(model)
        raise LayerError(f"the model has no module {name!r} (it has {n} layers, 0..{n - 1}; check the "
                         "layer numbers and the *_module_tmp names in the hparams)") from None


def num_layers(model) -> int:
    return int(getattr(model.config, "num_hidden_layers", None) or model.config.n_layer)


def check_layers(model, layers: Sequence[int]) -> None:
    n = num_layers(model)
    bad = [l for l in layers if not 0 <= int(l) < n]
    if bad:
        raise LayerError(f"layer(s) {bad} out of range: the model has {n} layers (0..{n - 1})")


def is_conv1d(module) -> bool:
    return type(module).__name__ == "Conv1D"


def to_param_layout(update_out_in: torch.Tensor, module) -> torch.Tensor:
    """An update of shape ``[out, in]`` in the layout of ``module.weight``."""
    return update_out_in.T.contiguous() if is_conv1d(module) else update_out_in


def from_param_layout(weight: torch.Tensor, module) -> torch.Tensor:
    """``module.weight`` (or an update of its shape) as ``[out, in]``."""
    return weight.T if is_conv1d(module) else weight


@contextmanager
def hooked(module, *, on_input: Callable | None = None, on_output: Callable | None = None):
    """Call ``on_input(x)`` with the module's first positional input, and replace its output
    by ``on_output(y)`` (when that returns a tensor), for the duration of the block."""
    handles = []
    if on_input is not None:
        handles.append(module.register_forward_pre_hook(lambda m, args: on_input(args[0]) and None))
    if on_output is not None:
        handles.append(module.register_forward_hook(lambda m, args, out: on_output(out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Reached(Exception):
    """Raised by a hook to end a forward pass once the value it wanted was read."""


def module_input_at(model, tok, module_name: str, texts: Sequence[str], indices: Sequence[int]) -> torch.Tensor:
    """The input of ``module_name`` at token ``indices[i]`` of ``texts[i]``: ``[len(texts), in]``."""
    module = get_module(model, module_name)
    device = next(model.parameters()).device
    ids, mask = encode_padded(tok, texts, device)
    seen = {}

    def grab_and_stop(x):
        seen["x"] = x
        raise _Reached  # nothing above the module is needed (the vocabulary projection alone is most of a pass)

    with torch.no_grad(), hooked(module, on_input=grab_and_stop):
        try:
            model(input_ids=ids, attention_mask=mask)
        except _Reached:
            pass
    rows = torch.arange(len(texts), device=device)
    return seen["x"][rows, torch.tensor(list(indices), device=device)].float()
