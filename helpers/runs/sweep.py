"""The side-effect sweep runner: chains of edits, evaluated on the downstream tasks as they grow.

A :class:`Chain` is the unit of work: one method (and regulariser) editing ``batch_size``
records at a time, ``max(checkpoints)`` times in sequence on the same weights, with the 8
tasks evaluated after each number of edits in ``checkpoints`` (paper Fig. 2's settings:
instance-sequential is ``batch_size=1``; batch-single at size b is ``Chain(m, b, (0, 1))``;
batch-sequential is both). Points that share a prefix of edits share its computation: edits
1..20 evaluated at 0, 5, 10, 20 is one run, not four.

Every (point, task) row is stored the moment it is computed, keyed by a hash of everything
that determines it — the model, the task sample, and the exact records edited so far with
their method, hparams and regulariser — so a rerun skips what is done, and two chains that
edit the same records in the same order share rows. After each checkpoint's edit the edited
parameters' values are stored too (safetensors), so an interrupted chain resumes from its last
checkpoint instead of re-editing from the start. The model is loaded once, edited in place
and restored from the updates it applied: no copies, no reloading between points.

How a row travels: :func:`side_effects` makes one :class:`ChainUnit` per chain and hands the
units to a backend (:mod:`helpers.runs.backends`: here, or Ray workers); a unit edits its
model, evaluates the tasks (:func:`helpers.evaluation.evaluate_examples`) and puts each row, with
its per-prompt records, into
the store the backend gives it — the :class:`~helpers.runs.store.ResultStore` itself locally,
a queue to the driver's store on Ray.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from ..data import load_zsre
from ..editing import CARRY_STATE, METHODS, EditHealthError, Regularizer, begin_sequence, edit, set_parameters
from ..errors import EdithurtError, unknown
from ..evaluation import TASKS, evaluate_examples, get_task
from ..evaluation.tasks import check_protocol
from ..model.loading import LoadedModel
from .backends import get_backend
from .experiments import edit_sample
from .session import Session, model_name
from .store import ResultStore, edit_settings, open_store, settings_key, task_settings

ROW_COLUMNS = ["metric", "value", "chance", "valid_rate", "gold_nll", "gold_nll_sd", "label_acc", "n", "prompts", "seconds"]


class SweepError(EdithurtError, ValueError):
    """A sweep asked for with impossible settings."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a sweep: what was finished is stored; the message says how to resume."""


@dataclass(frozen=True)
class Chain:
    """``method`` edits ``batch_size`` records at a time, ``max(checkpoints)`` times in a row;
    the tasks are evaluated after each number of edits in ``checkpoints`` (0: unedited).
    ``seed`` draws the records (ZsRE; MEND: its held-out split)."""

    method: str
    batch_size: int = 1
    checkpoints: tuple[int, ...] = (0, 1)
    regularizer: Regularizer = field(default_factory=lambda: Regularizer("none"))
    setting: str = "instance-sequential"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "method", str(self.method).upper())
        if self.method not in METHODS:
            raise unknown("method", self.method, METHODS)
        if self.batch_size < 1:
            raise SweepError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.batch_size > 1 and self.method in ("ROME", "KN"):
            raise SweepError(f"{self.method} edits one fact at a time: batch_size must be 1, got {self.batch_size}")
        points = tuple(sorted(set(int(c) for c in self.checkpoints)))
        if not points or points[0] < 0:
            raise SweepError(f"checkpoints must be numbers of edits >= 0, got {self.checkpoints}")
        object.__setattr__(self, "checkpoints", points)

    @property
    def edits(self) -> int:
        return self.checkpoints[-1]

    @property
    def label(self) -> str:
        reg = "" if self.regularizer.how == "none" else f" + {self.regularizer.label}"
        size = f", batch {self.batch_size}" if self.batch_size > 1 else ""
        return f"{self.method}{reg} ({self.setting}{size})"


def chains(instance_sequential: dict | None = None, batch_single: dict | None = None,
           batch_sequential: dict | None = None, regularizers: Sequence[Regularizer] | None = None,
           seed: int = 0, orderings: int = 1) -> list[Chain]:
    """The chains of a grid written as in ``profiles/*.yaml``:

    ``instance_sequential: {ROME: [0, 1, 5, 10]}``   one chain per method
    ``batch_single: {MEMIT: [1, 10, 100]}``           one chain per batch size, evaluated at 0, 1
    ``batch_sequential: {MEMIT: {batch_size: 10, edits: [0, 1, 2, 3]}}``
    ``regularizers``: each chain once per regulariser (default: none).
    ``orderings``: each chain once per edit ordering, with seeds ``seed, seed + 1, ...`` (each
    draws its own records; chains of the same seed and method edit the same records, so a
    regularised chain pairs with the unregularised one)."""
    if orderings < 1:
        raise SweepError(f"orderings must be at least 1, got {orderings}")
    return [c for s in range(seed, seed + orderings)
            for c in _grid(instance_sequential, batch_single, batch_sequential, regularizers, s)]


def _grid(instance_sequential, batch_single, batch_sequential, regularizers, seed) -> list[Chain]:
    regs = list(regularizers) if regularizers else [Regularizer("none")]
    out = []
    for reg in regs:
        for method, points in (instance_sequential or {}).items():
            out.append(Chain(method, 1, tuple(points), reg, "instance-sequential", seed))
        for method, sizes in (batch_single or {}).items():
            out += [Chain(method, int(b), (0, 1), reg, "batch-single", seed) for b in sizes]
        for method, spec in (batch_sequential or {}).items():
            if not isinstance(spec, dict) or set(spec) != {"batch_size", "edits"}:
                raise SweepError(f"batch_sequential.{method} must be {{batch_size: B, edits: [...]}}, got {spec!r}")
            out.append(Chain(method, int(spec["batch_size"]), tuple(spec["edits"]), reg, "batch-sequential", seed))
    return out


def side_effects(chain_list: Sequence[Chain], model: str | LoadedModel = "smollm2-135m",
                 tasks: Sequence[str] = TASKS, n: int | None = 50, seed: int = 0, protocol: str = "paper", *,
                 hparams: dict | None = None, store: str | os.PathLike | ResultStore | None = None,
                 progress: bool = True, backend: str = "local", resources: dict | None = None) -> pd.DataFrame:
    """Downstream performance along each chain: one row per (chain, checkpoint, task) with the
    task's headline ``value`` (``metric``), ``gold_nll``, ``label_acc`` and ``valid_rate``
    (docs/protocol.md, "Measures that see damage at chance"), on ``n`` examples per task drawn
    with ``seed`` (each chain draws its edit records with its own ``Chain.seed``).
    ``model``: a name, or an already loaded :class:`~helpers.model.LoadedModel` (its name keys
    the rows). ``hparams``: ``{method: overrides}``. Rows are stored as they come; see the
    module text. ``backend``: ``"local"`` (here, one chain after another) or ``"ray"`` (the
    chains as units on a Ray cluster, each worker asking for ``resources``:
    :func:`helpers.runs.backends.get_backend`). Both give the same rows."""
    runner = get_backend(backend, resources)
    store = open_store(store)
    units = _units(chain_list, model, tasks, n, seed, protocol, hparams)

    def missing() -> int:
        return len(set().union(*(u.missing(store) for u in units))) if units else 0

    todo = missing()
    # the unedited rows first (every chain of the same model and task sample shares them), then the chains
    first = [u.unedited() for u in units if 0 in u.chain.checkpoints and u.missing_at(0, store)][:1]
    with store.writing(), tqdm(total=todo, desc="side effects (task evaluations)", unit="eval",
                               disable=not progress or not todo) as bar:
        todo = missing()  # rows another process stored while this one waited for the store
        bar.reset(total=todo)
        try:
            def on_row(done: str = "") -> None:
                bar.set_postfix_str(done, refresh=False)
                bar.update()

            runner.run([first, units], model, store, on_row)
        except KeyboardInterrupt:
            where = (f"{len(store)} rows are stored in {store.path}; run the same call again to resume from there "
                     "(finished rows are not recomputed)") if store.path is not None else \
                "nothing was stored (no store= given): pass store= a path to be able to resume"
            raise SweepInterrupted(f"interrupted after {todo - missing()} of {todo} task evaluations; {where}. The "
                                   "model was restored to its unedited weights.") from None
    return pd.DataFrame([r for u in units for r in u.table(store)])


def side_effect_records(chain_list: Sequence[Chain], model: str | LoadedModel = "smollm2-135m",
                        tasks: Sequence[str] = TASKS, n: int | None = 50, seed: int = 0, protocol: str = "paper", *,
                        hparams: dict | None = None, store: str | os.PathLike | ResultStore | None = None) -> pd.DataFrame:
    """The per-prompt records behind :func:`side_effects`' rows (same arguments), one line per
    (chain, checkpoint, task, prompt): the chain's columns (``ordering`` is its ``seed``), then
    the records (:func:`helpers.evaluation.evaluate_examples`). Read from ``store``: run
    :func:`side_effects` first."""
    store = open_store(store)
    frames = []
    for u in _units(chain_list, model, tasks, n, seed, protocol, hparams):
        for line in u.table(store, columns=()):
            found = store.get_examples(u.row_key(line["edits"], line["task"]))
            if found is None:
                raise SweepError(f"{u.label}, {line['edits']} edits, {line['task']}: no per-example records in "
                                 f"{store.path or 'this in-memory store'}; run side_effects with the same "
                                 "arguments first (rows stored before records were kept are recomputed)")
            frames.append(found.assign(**line))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    front = list(line)
    return out[front + [c for c in out.columns if c not in front]]


def _units(chain_list, model, tasks, n, seed, protocol, hparams) -> list[ChainUnit]:
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in tasks:
        get_task(t)
    check_protocol(protocol)
    hparams = {str(k).upper(): v for k, v in (hparams or {}).items()}
    records = load_zsre()
    return [ChainUnit(c, records, model_name(model), tasks, n, seed, protocol, hparams.get(c.method))
            for c in chain_list]


class ChainUnit:
    """One chain as a unit of work: its records, the keys of its rows and states, and the run
    that computes the missing ones (see :mod:`helpers.runs.backends` for what a unit is)."""

    def __init__(self, chain: Chain, records, model: str, tasks, n, seed, protocol, hparams):
        self.chain, self.model, self.tasks, self.n, self.seed = chain, model, tasks, n, seed
        self.protocol, self.hparams = protocol, hparams
        need = chain.batch_size * chain.edits
        sample = edit_sample(records, need, chain.seed, chain.method, hparams)
        if len(sample) < need:
            raise SweepError(f"{chain.label} needs {need} distinct records; only {len(sample)} can be edited "
                             f"with {chain.method}")
        b = chain.batch_size
        self.batches = [sample[i * b:(i + 1) * b] for i in range(chain.edits)]
        self.edit_key = {"model": model, **edit_settings(chain.method, hparams),
                         "regularizer": regularizer_key(chain.regularizer)}

    @property
    def label(self) -> str:
        return self.chain.label

    def unedited(self) -> ChainUnit:
        """A unit computing only this chain's unedited point."""
        import copy

        unit = copy.copy(self)
        c = self.chain
        unit.chain = Chain(c.method, c.batch_size, (0,), c.regularizer, c.setting, c.seed)
        return unit

    def _edited(self, count: int) -> list[list[int]]:
        return [[r.case_id for r in batch] for batch in self.batches[:count]]

    def row_key(self, count: int, task: str) -> dict:
        key = {"experiment": "side_effects", "model": self.model, "task": task, "n": self.n, "task_seed": self.seed,
               **task_settings(self.protocol)}
        return key if count == 0 else {**key, **self.edit_key, "edits": self._edited(count)}

    def state_key(self, count: int) -> dict:
        return {"experiment": "side_effects_state", **self.edit_key, "edits": self._edited(count)}

    def settings(self) -> tuple[list[dict], list[dict]]:
        return ([self.row_key(c, t) for c in self.chain.checkpoints for t in self.tasks],
                [self.state_key(c) for c in self.chain.checkpoints if c > 0])

    def missing(self, store) -> set[str]:
        """The keys of the rows still to compute."""
        return {settings_key(self.row_key(c, t)) for c in self.chain.checkpoints for t in self.tasks
                if store.get(self.row_key(c, t)) is None}

    def missing_at(self, count: int, store) -> bool:
        return count in self.chain.checkpoints and any(store.get(self.row_key(count, t)) is None for t in self.tasks)

    def table(self, store, columns: Sequence[str] = ROW_COLUMNS) -> list[dict]:
        c = self.chain
        return [{"method": c.method, "setting": c.setting, "batch_size": c.batch_size,
                 "regularizer": c.regularizer.label, "how": c.regularizer.how, "k": c.regularizer.k,
                 "chain": c.label, "ordering": c.seed, "edits": count, "edited_facts": count * c.batch_size,
                 "task": task, **{k: store.get(self.row_key(count, task)).get(k) for k in columns}}
                for count in c.checkpoints for task in self.tasks]

    def run(self, session: Session, store, on_row) -> None:
        pending = [c for c in self.chain.checkpoints if self.missing_at(c, store)]
        if not pending:
            return
        m, tok = session.load()
        if pending[0] == 0:  # the unedited model: no edit to replay
            self._evaluate(m, tok, 0, None, store, on_row)
            pending = pending[1:]
            if not pending:
                return
        # resume from the furthest stored state not beyond the first point still to compute
        # (a method that carries state between edits replays its sequence from the start)
        start, state = 0, None
        begin_sequence()
        resumable = str(self.chain.method).upper() not in CARRY_STATE
        for c in sorted((c for c in self.chain.checkpoints if 0 < c <= pending[0] and resumable), reverse=True):
            state = store.get_tensors(self.state_key(c))
            if state is not None:
                start = c
                break
        applied = []
        try:
            if state:
                applied.append(set_parameters(m, state))
            for count in range(start, pending[-1] + 1):
                if count > start:
                    try:
                        applied.append(edit(m, tok, self.batches[count - 1], self.chain.method, self.hparams,
                                            regularizer=self.chain.regularizer))
                    except EditHealthError as e:
                        raise EditHealthError(f"{self.chain.label}, edit {count} of {self.chain.edits}: {e}. Rows "
                                              "before this edit are stored; the model was restored") from None
                if count not in pending:
                    continue
                changed = {n for r in applied for n in r.changed}
                if count > start:
                    # before evaluating: a crash during the evaluation resumes here, not edits earlier
                    params = dict(m.named_parameters())
                    store.put_tensors(self.state_key(count), {n: params[n].detach() for n in changed})
                self._evaluate(m, tok, count, session.lower_layers(changed), store, on_row)
        finally:
            for res in reversed(applied):
                res.restore()

    def _evaluate(self, m, tok, count: int, cache, store, on_row) -> None:
        for task in self.tasks:
            if store.get(self.row_key(count, task)) is not None:
                continue
            ev = evaluate_examples(m, tok, task, n=self.n, seed=self.seed, protocol=self.protocol,
                                   lower_layers=cache, after_edit=count > 0, progress=False)
            store.put_examples(self.row_key(count, task), ev.records)  # first: a stored row has its records
            store.put(self.row_key(count, task), ev.row)
            on_row(f"{self.chain.label}: {count} edits, {task}")


def regularizer_key(reg: Regularizer) -> list:
    """What identifies a regulariser's effect: ``k`` only where it is used, the seed only for
    ``random`` (so ``Regularizer("none")`` and ``Regularizer("none", 1.0)`` share results)."""
    if reg.how == "none":
        return ["none"]
    return [reg.how, reg.k, reg.seed] if reg.how == "random" else [reg.how, reg.k]


def wide(df: pd.DataFrame, measure: str = "value") -> pd.DataFrame:
    """Rows of :func:`side_effects` as a table: one line per (chain, edits), one column per task
    (the mean over the chain's orderings where it ran several)."""
    out = df.pivot_table(index=["chain", "edits"], columns="task", values=measure, sort=False)
    return out.reindex(columns=list(dict.fromkeys(df.task))).reset_index()  # a task all NaN stays, as NaN


__all__ = ["Chain", "ChainUnit", "chains", "side_effect_records", "side_effects", "wide", "SweepError",
           "SweepInterrupted"]
