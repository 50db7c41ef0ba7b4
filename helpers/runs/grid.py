"""The grid of a sweep: what chains of edits to run (:class:`Chain`), written as the profiles
write them (:func:`chains`, :func:`rescue_chains`); :mod:`.sweep` runs them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..editing import BATCH_EDIT_NAMES, BATCH_EDITS, Prune, Regularizer, canonical_method, method_spec
from ..errors import EdithurtError


class SweepError(EdithurtError, ValueError):
    """A sweep asked for with impossible settings."""


@dataclass(frozen=True)
class Chain:
    """``method`` edits ``batch_size`` records at a time, ``max(checkpoints)`` times in a row;
    the tasks are evaluated after each number of edits in ``checkpoints`` (0: unedited).
    ``seed`` draws the records (ZsRE; MEND: its held-out split). ``regularizer``: a
    :class:`~helpers.editing.Regularizer` shapes every edit's update; a
    :class:`~helpers.editing.Prune` restrains the update accumulated over the chain (by default
    as its reference does: the edits accumulate unrestrained and each checkpoint is evaluated
    with the restrained weights). ``batch_edit``: how each batch is edited — ``"chunks"`` as the
    released editor (chunks of the hparams' ``batch_size`` in sequence), ``"joint"`` in one edit;
    None: as the method's hparams say (docs/protocol.md, "Batch editing: two readings").
    ``tasks_at``: the checkpoints where the tasks are read (None: every one; the checkpoint
    measures and per-edit traces are read at all of them). ``until_collapse``: end the chain at
    its collapse — the first edit after which the held-out NLL exceeds the unedited model's by
    more than this many nats per token, or its weights are no longer finite — instead of
    editing a broken model to its length (None: run to the length; a model with non-finite
    weights is then scored at the floor). ``draw``: how many records the chain draws (default
    ``batch_size × edits``; it edits the first of them): a chain that shares a longer chain's
    records draws as many as that one does (a seeded sample of n records is not always a prefix of
    one of more)."""

    method: str
    batch_size: int = 1
    checkpoints: tuple[int, ...] = (0, 1)
    regularizer: Regularizer | Prune = field(default_factory=lambda: Regularizer("none"))
    setting: str = "instance-sequential"
    seed: int = 0
    batch_edit: str | None = None
    tasks_at: tuple[int, ...] | None = None
    until_collapse: float | None = None
    draw: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "method", canonical_method(self.method))
        if self.batch_size < 1:
            raise SweepError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.batch_size > 1 and not method_spec(self.method).batchable:
            raise SweepError(f"{self.method} edits one fact at a time: batch_size must be 1, got {self.batch_size}")
        if self.batch_edit is not None and self.batch_edit not in BATCH_EDITS:
            raise SweepError(f"batch_edit must be one of {BATCH_EDITS} (or None: the hparams' own), got {self.batch_edit!r}")
        points = tuple(sorted(set(int(c) for c in self.checkpoints)))
        if not points or points[0] < 0:
            raise SweepError(f"checkpoints must be numbers of edits >= 0, got {self.checkpoints}")
        object.__setattr__(self, "checkpoints", points)
        if self.tasks_at is not None:
            object.__setattr__(self, "tasks_at", tuple(sorted(set(int(c) for c in self.tasks_at))))
            if not set(self.tasks_at) <= set(points):
                raise SweepError(f"tasks_at {self.tasks_at} must be checkpoints of the chain {points}")
        if self.draw is not None and self.draw < self.batch_size * points[-1]:
            raise SweepError(f"draw={self.draw} records is fewer than the chain edits ({self.batch_size} × {points[-1]})")
        if self.until_collapse is not None and 0 not in points:
            raise SweepError("a chain that ends at its collapse compares with the unedited model: its checkpoints "
                             f"must include 0, got {points}")

    @property
    def task_points(self) -> tuple[int, ...]:
        """The checkpoints where the tasks are read."""
        return self.checkpoints if self.tasks_at is None else self.tasks_at  # checked: a subset of them

    @property
    def edits(self) -> int:
        return self.checkpoints[-1]

    @property
    def variant(self) -> str:
        """The method and its regulariser: ``"ROME"``, ``"ROME + RECT 40%"``, ``"ROME + PRUNE"``."""
        return self.method if self.regularizer.how == "none" else f"{self.method} + {self.regularizer.label}"

    @property
    def label(self) -> str:
        size = f", batch {self.batch_size}" if self.batch_size > 1 else ""
        reading = f", {BATCH_EDIT_NAMES[self.batch_edit]}" if self.batch_edit else ""
        return f"{self.variant} ({self.setting}{size}{reading})"


def chains(instance_sequential: dict | None = None, batch_single: dict | None = None,
           batch_sequential: dict | None = None, regularizers: Sequence[Regularizer] | None = None,
           seed: int = 0, orderings: int = 1, batch_readings: Sequence[str] | None = None) -> list[Chain]:
    """The chains of a grid written as in ``profiles/*.yaml``:

    ``instance_sequential: {ROME: [0, 1, 5, 10]}``   one chain per method
    ``batch_single: {MEMIT: [1, 10, 100]}``           one chain per batch size, evaluated at 0, 1
    ``batch_sequential: {MEMIT: {batch_size: 10, edits: [0, 1, 2, 3]}}``
    ``regularizers``: each chain once per regulariser (default: none).
    ``orderings``: each chain once per edit ordering, with seeds ``seed, seed + 1, ...`` (each
    draws its own records; chains of the same seed and method edit the same records, so a
    regularised chain pairs with the unregularised one).
    ``batch_readings``: each batch-single chain once per reading (``["joint", "chunks"]``: both, on
    the same records); None: as the hparams say."""
    if orderings < 1:
        raise SweepError(f"orderings must be at least 1, got {orderings}")
    readings = list(batch_readings) if batch_readings else [None]
    return [c for s in range(seed, seed + orderings)
            for c in _grid(instance_sequential, batch_single, batch_sequential, regularizers, s, readings)]


def _grid(instance_sequential, batch_single, batch_sequential, regularizers, seed, readings=(None,)) -> list[Chain]:
    regs = list(regularizers) if regularizers else [Regularizer("none")]
    out = []
    for reg in regs:
        for method, points in (instance_sequential or {}).items():
            out.append(Chain(method, 1, tuple(points), reg, "instance-sequential", seed))
        for method, sizes in (batch_single or {}).items():
            out += [Chain(method, int(b), (0, 1), reg, "batch-single", seed, r) for r in readings for b in sizes]
        for method, spec in (batch_sequential or {}).items():
            if not isinstance(spec, dict) or set(spec) != {"batch_size", "edits"}:
                raise SweepError(f"batch_sequential.{method} must be {{batch_size: B, edits: [...]}}, got {spec!r}")
            out.append(Chain(method, int(spec["batch_size"]), tuple(spec["edits"]), reg, "batch-sequential", seed))
    return out


def rescue_chains(rescues: Sequence[Sequence], facts: Sequence[int], seed: int = 0, orderings: int = 1) -> list[Chain]:
    """Sequential chains of the rescues compared in notebook 05, all editing the same records:
    each entry ``[method, batch_size, how]`` or ``[method, batch_size, how, k]`` — ``how`` a
    :class:`~helpers.editing.Regularizer`'s (``"none"``, ``"rect"``, ...) or ``"prune"``
    (:class:`~helpers.editing.Prune`) — evaluated after each number of edited ``facts`` (each a
    multiple of the batch size). ``orderings`` as in :func:`chains`."""
    if orderings < 1:
        raise SweepError(f"orderings must be at least 1, got {orderings}")
    out = []
    for s in range(seed, seed + orderings):
        for entry in rescues:
            if not 3 <= len(entry) <= 4:
                raise SweepError(f"a rescue is [method, batch_size, how] or [method, batch_size, how, k]; got {entry!r}")
            method, size, how = entry[0], int(entry[1]), str(entry[2])
            uneven = [f for f in facts if f % size]
            if uneven:
                raise SweepError(f"{method} edits {size} facts at a time: the checkpoints {uneven} (facts) are not "
                                 f"multiples of {size}")
            reg = Prune() if how == "prune" else Regularizer(how, *entry[3:])
            setting = "instance-sequential" if size == 1 else "batch-sequential"
            out.append(Chain(method, size, tuple(int(f) // size for f in facts), reg, setting, s))
    return out


def regularizer_key(reg: Regularizer | Prune) -> list:
    """What identifies a regulariser's effect: ``k`` only where it is used, the seed only for
    ``random`` (so ``Regularizer("none")`` and ``Regularizer("none", 1.0)`` share results)."""
    if isinstance(reg, Prune):
        return ["prune", reg.reduce, reg.when]
    if reg.how == "none":
        return ["none"]
    return [reg.how, reg.k, reg.seed] if reg.how == "random" else [reg.how, reg.k]


__all__ = ["Chain", "chains", "rescue_chains", "regularizer_key", "SweepError"]
