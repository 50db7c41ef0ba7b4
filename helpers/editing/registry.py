"""The editing methods a run can name, and the state a sequence of edits carries.

A method is one :class:`MethodSpec`: its name, its hparams class, the function that computes an
edit's updates and what else the runs need to know about it (whether it edits several facts in
one call, what it reads off the unedited model, what it carries from one edit of a sequence to
the next, the revision of its code). :func:`register_method` adds one — the package's own six are
registered the same way when :mod:`helpers.editing` is imported (:mod:`helpers.editing.builtin`) — and everything that edits
(:func:`helpers.editing.edit`, the chains of :mod:`helpers.runs`, the samplers of edit records)
reads the spec, so a new method is one file (docs/extending.md).

The contract of ``apply``::

    apply(model, tok, requests, hp) -> {parameter name: ΔW as [out, in]}
    apply(model, tok, requests, hp, state)      # a method with new_state: its sequence's state

It computes the updates from the model as it is and changes nothing; :func:`helpers.editing.edit`
shapes, checks and adds them. ``[out, in]`` whatever the parameter's layout (GPT-2's ``Conv1D``
stores ``[in, out]``: the package transposes).

What a method carries along a sequence (MEND's normalising statistics, AlphaEdit's keys of the
earlier edits) lives in an :class:`EditSequence`, owned by whoever runs the sequence (a chain of
:mod:`helpers.runs`, or the caller of ``edit``): two sequences never see each other's state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegistryError, unknown

# The revision of what a method computes when its spec names none: stored results carry their
# method's revision in their keys, so results of an earlier revision are recomputed, never mixed in.
DEFAULT_REVISION = 3


@dataclass(frozen=True)
class MethodSpec:
    """One editing method.

    ``name``: as the package spells it (``"AlphaEdit"``); any case is accepted when naming it.
    ``hparams``: its hparams dataclass (files and overrides are read into it).
    ``apply``: the updates of one edit of ``requests`` (module text: the contract).
    ``apply_each``: ``(model, tok, requests, hp) -> [updates of each request alone]``, where the
    method can batch that work (ROME's and MEMIT's target optimisation); None: one ``apply`` each.
    ``prepare``: ``(model, tok, hp) -> None``, what it reads off the unedited model once per
    process (templates, key statistics), so a sequence resumed from stored weights edits as the
    uninterrupted one; None: nothing.
    ``batchable``: edits several facts in one call (MEMIT, MEND, AlphaEdit); else one at a time.
    ``new_state``: ``() -> state`` of a fresh sequence, for a method whose next edit depends on more
    than the weights its earlier edits left; its ``apply`` then takes the state. Such a method's
    chains replay their edits on resume instead of jumping to stored weights.
    ``revision``: of its code (results keyed by another revision are recomputed).
    ``base``: the plain method a rescue built on it is compared with (r-ROME: ROME).
    ``editable``: ``(records, hparams) -> records`` it may edit (MEND: its held-out split); None: all.
    ``hparams_dir``: the folder of its shipped hparams files (``<dir>/<model>.yaml``); None: the
    package's ``hparams/<NAME>/``."""

    name: str
    hparams: type
    apply: Callable[..., dict]
    apply_each: Callable[..., list] | None = None
    prepare: Callable[..., None] | None = None
    batchable: bool = False
    new_state: Callable[[], object] | None = None
    revision: int = DEFAULT_REVISION
    base: str | None = None
    editable: Callable | None = None
    hparams_dir: Path | None = None

    @property
    def key(self) -> str:
        """The name in upper case: how stored keys and hparams files name the method."""
        return self.name.upper()

    @property
    def carries_state(self) -> bool:
        return self.new_state is not None


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Make ``spec`` a method every run can name. A second method of the same name (any case) is
    refused unless ``replace=True``."""
    if not isinstance(spec, MethodSpec):
        raise RegistryError(f"register_method takes a MethodSpec, got {type(spec).__name__}")
    if not spec.name or not callable(spec.apply):
        raise RegistryError(f"method {spec.name!r}: a MethodSpec needs a name and an apply function")
    if spec.key in _METHODS and not replace:
        raise RegistryError(f"a method named {_METHODS[spec.key].name!r} is already registered; pass replace=True "
                            "to replace it")
    _METHODS[spec.key] = spec
    return spec


def method_spec(method: str) -> MethodSpec:
    """The spec of ``method`` (any case), or an error naming the registered methods."""
    spec = _METHODS.get(str(method).upper())
    if spec is None:
        raise unknown("method", method, method_names())
    return spec


def method_names() -> tuple[str, ...]:
    """Every registered method, as each spells its name (the package's six first)."""
    return tuple(s.name for s in _METHODS.values())


class EditSequence:
    """The state the methods carry from one edit of a sequence to the next, one per method that
    carries any (its spec's ``new_state()``, made at its first edit). Start a new sequence with a
    new object; the sequence's owner keeps it for as long as the sequence goes on."""

    def __init__(self):
        self.states: dict[str, object] = {}

    def state_of(self, spec: MethodSpec):
        """``spec``'s state in this sequence (None for a method that carries none)."""
        if not spec.carries_state:
            return None
        if spec.key not in self.states:
            self.states[spec.key] = spec.new_state()
        return self.states[spec.key]


__all__ = ["MethodSpec", "EditSequence", "register_method", "method_spec", "method_names",
           "DEFAULT_REVISION"]
