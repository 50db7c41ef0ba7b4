"""One sequence of edits on a loaded model, resumable: what every chain of the runs is built on
(the sweeps' :class:`~helpers.runs.sweep.ChainUnit`, the weight-change chain of
:func:`helpers.runs.experiments.weight_change`).

A :class:`ChainRun` owns the sequence's state (an :class:`~helpers.editing.EditSequence`), edits
its batches one after another, jumps over edits whose resulting weights are stored (for a method
that carries no state between edits: the weights are then all there is), and restores the model's
unedited weights when it closes — also after an error or Ctrl-C::

    with ChainRun(model, tok, "ROME", hparams, batches) as run:
        run.resume(5, stored=lambda count: store.get_tensors(key(count)))  # jump over what is stored
        run.advance(5)                                                     # edit the rest
        ...evaluate...

What a method reads off the unedited model once per process (ROME's templates, key statistics:
:func:`helpers.editing.prepare`) is read before the first edit, on the unedited weights even
where the run has jumped to stored ones: a resumed sequence edits as the uninterrupted one.

A run applies every update as the reference code does (``edit(..., guard=False)``): an edit that
multiplies a matrix's norm, or leaves NaN in it, is applied, and the run's owner measures what it
did (the sweeps record a model whose weights are no longer finite as collapsed, docs/methods.md).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..editing import EditResult, EditSequence, edit, method_spec, prepare, set_parameters


class ChainRun:
    """``method`` editing ``batches`` (each a list of requests) in sequence on ``model``.
    ``regularizer`` shapes every edit's update (``edit(..., regularizer=)``). ``at``: the number
    of edits the model now carries. ``guard``: :func:`helpers.editing.edit`'s safety option
    (off: every update applied, as the reference code)."""

    def __init__(self, model, tok, method: str, hparams, batches: Sequence[Sequence], regularizer=None,
                 guard: bool = False):
        self.model, self.tok, self.method, self.hparams = model, tok, method, hparams
        self.batches, self.regularizer, self.guard = list(batches), regularizer, guard
        self.sequence = EditSequence()
        self.applied: list[EditResult] = []
        self.at = 0
        self._prepared = False

    @property
    def resumable(self) -> bool:
        """Whether the run may jump to stored weights: only for a method that carries nothing
        from one edit to the next but the weights (one that does replays its edits)."""
        return not method_spec(self.method).carries_state

    @property
    def originals(self) -> dict[str, torch.Tensor]:
        """``{parameter: its unedited value}`` (own layout) of every parameter the run changed."""
        first: dict = {}
        for r in self.applied:
            for name, w in r.originals.items():
                first.setdefault(name, w)
        return first

    def jump(self, count: int, values: dict[str, torch.Tensor]) -> None:
        """Put the stored weights after ``count`` edits (``{parameter: value}``, own layout) into
        the model, bit for bit."""
        if not self.resumable:
            raise ValueError(f"{self.method} carries state from edit to edit: its run replays edits, it cannot jump")
        self.applied.append(set_parameters(self.model, values))
        self.at = count

    def step(self) -> EditResult:
        """Edit the next batch (reading ahead first where the method needs it)."""
        if self.at >= len(self.batches):
            raise ValueError(f"the run has {len(self.batches)} batches, all edited")
        self._prepare()
        result = edit(self.model, self.tok, self.batches[self.at], self.method, self.hparams,
                      regularizer=self.regularizer, sequence=self.sequence, guard=self.guard)
        self.applied.append(result)
        self.at += 1
        return result

    def resume(self, target: int, stored: Callable[[int], dict | None], points: Sequence[int] | None = None) -> bool:
        """Jump to the furthest count in ``points`` (default: every count) above the current one, up
        to ``target``, whose weights ``stored(count)`` returns (``{parameter: value}``, or None where
        not stored). Only a resumable run jumps. Returns whether it jumped."""
        if not self.resumable:
            return False
        candidates = points if points is not None else range(self.at + 1, target + 1)
        for count in sorted((c for c in candidates if self.at < c <= target), reverse=True):
            values = stored(count)
            if values is not None:
                self.jump(count, values)
                return True
        return False

    def advance(self, target: int, after_edit: Callable[[int], None] | None = None) -> bool:
        """Edit until the model carries ``target`` edits, calling ``after_edit(count)`` after each.
        Returns whether any edit was made."""
        if target < self.at:
            raise ValueError(f"the run is at {self.at} edits, past {target}")
        edited = self.at < target
        while self.at < target:
            self.step()
            if after_edit is not None:
                after_edit(self.at)
        return edited

    def _prepare(self) -> None:
        if self._prepared:
            return
        if self.applied:  # jumped: the read-ahead sees the unedited weights, then the run goes on where it was
            params = dict(self.model.named_parameters())
            current = {n: params[n].detach().clone() for n in self.originals}
            self.restore()
            prepare(self.model, self.tok, self.method, self.hparams)
            self.applied = [set_parameters(self.model, current)]
        else:
            prepare(self.model, self.tok, self.method, self.hparams)
        self._prepared = True

    def restore(self) -> None:
        """Put back the unedited weights (the run then holds no edit)."""
        for result in reversed(self.applied):
            result.restore()
        self.applied = []

    def __enter__(self) -> ChainRun:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


__all__ = ["ChainRun"]
