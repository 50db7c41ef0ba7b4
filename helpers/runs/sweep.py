"""The side-effect sweep runner: chains of edits, evaluated on the downstream tasks as they grow.

A :class:`Chain` is the unit of work: one method (and regulariser) editing ``batch_size``
records at a time, ``max(checkpoints)`` times in sequence on the same weights, with the 8
tasks evaluated after each number of edits in ``checkpoints`` (paper Fig. 2's settings:
instance-sequential is ``batch_size=1``; batch-single at size b is ``Chain(m, b, (0, 1))``;
batch-sequential is both; ``Chain.tasks_at`` limits the tasks to some checkpoints, and
``Chain.until_collapse`` ends a chain at its collapse: the collapse horizon's chains). Points
that share a prefix of edits share its computation: edits 1..20 evaluated at 0, 5, 10, 20 is
one run, not four.

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

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import load_zsre
from ..editing import Prune, editing_metrics, method_spec
from ..editing.hparams import load_hparams
from ..errors import EdithurtError
from ..editing.keys import edit_key
from ..editing.modules import from_param_layout, get_module
from ..editing.weight_stats import matrix_signals
from ..evaluation import TASKS, collapsed_examples, evaluate_examples, get_task
from ..evaluation.perplexity import heldout_records, perplexity
from ..evaluation.tasks import check_protocol, scoring_key
from ..model.loading import LoadedModel, files_name
from .backends import get_backend
from .chain import ChainRun
from .grid import Chain, SweepError, chains, regularizer_key, rescue_chains
from .experiments import edit_sample
from .session import Session, model_name
from .keys import settings_key
from .store import ResultStore, open_store
from .timing import phase

ROW_COLUMNS = ["metric", "value", "chance", "valid_rate", "gold_nll", "gold_nll_sd", "label_acc", "n", "prompts", "seconds",
               "collapsed_at"]
# what is measured at every checkpoint besides the tasks (one row each, with per-example records):
# "signals": collapse signals — perplexity on the held-out text (its windows the examples) and the
# edited matrices' norm and condition-number growth; "editing": the editing performance
# (reliability, generalization, locality) of every record the chain has edited so far (the records
# the examples; none at 0 edits)
CHECKPOINT_MEASURES = ("signals", "editing")
SIGNAL_COLUMNS = ["perplexity", "heldout_tokens", "norm_growth", "top_singular_growth", "condition",
                  "condition_growth", "seconds"]
EDITING_COLUMNS = ["reliability", "generalization", "locality", "n", "seconds"]


class _Collapsed(Exception):
    """Raised inside a chain's run at the edit after which its model is collapsed (``at``)."""

    def __init__(self, at: int):
        super().__init__(at)
        self.at = at


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a sweep: what was finished is stored; the message says how to resume."""


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
    return run(chain_list, model, tasks, n, seed, protocol, hparams=hparams, store=store, progress=progress,
               backend=backend, resources=resources).rows


class Sweep:
    """What one sweep computed, read back from its store: ``rows`` (as :func:`side_effects`
    returns them), and on demand the per-prompt ``records()``, the checkpoint ``measures(...)``
    and the per-edit ``traces()`` — each what the module's function of that name gives for the
    same arguments, without building the chains' keys again."""

    def __init__(self, units: list[ChainUnit], store: ResultStore, rows: pd.DataFrame):
        self.units, self.store, self.rows = units, store, rows

    def records(self) -> pd.DataFrame:
        """:func:`side_effect_records`."""
        return _records(self.units, self.store)

    def measures(self, measure: str, records: bool = False) -> pd.DataFrame:
        """:func:`checkpoint_measures` (``"signals"`` or ``"editing"``)."""
        return _measures(self.units, self.store, measure, records)

    def traces(self) -> pd.DataFrame:
        """:func:`edit_traces`."""
        return _traces(self.units, self.store)


def run(chain_list: Sequence[Chain], model: str | LoadedModel = "smollm2-135m", tasks: Sequence[str] = TASKS,
        n: int | None = 50, seed: int = 0, protocol: str = "paper", *, hparams: dict | None = None,
        store: str | os.PathLike | ResultStore | None = None, progress: bool = True, backend: str = "local",
        resources: dict | None = None) -> Sweep:
    """Run a sweep (the arguments of :func:`side_effects`) and return all it computed: one call
    gives a notebook its rows, records, checkpoint measures and traces (:class:`Sweep`)."""
    runner = get_backend(backend, resources)
    store = open_store(store)
    units = _units(chain_list, model, tasks, n, seed, protocol, hparams)

    def missing() -> int:
        return len(set().union(*(u.missing(store) for u in units))) if units else 0

    def table() -> pd.DataFrame:
        return pd.DataFrame([r for u in units for r in u.table(store)])

    # the lock is taken at the first missing row (waiting for another writer, whose rows are then read, not
    # computed); a sweep whose rows are all stored reads them without waiting
    with store.writing(lazy=True):
        todo = missing()
        if not todo:
            return Sweep(units, store, table())
        # the unedited rows first (every chain of the same model and task sample shares them), then the chains
        first = [u.unedited() for u in units if 0 in u.chain.checkpoints and u.missing_at(0, store)][:1]
        with tqdm(total=todo, desc="side effects (tasks, checkpoint measures, edit traces)", unit="eval",
                  disable=not progress) as bar:
            def on_row(done: str = "") -> None:
                bar.set_postfix_str(done, refresh=False)
                bar.update()

            try:
                runner.run([first, units], model, store, on_row)
            except KeyboardInterrupt:
                where = (f"{len(store)} rows are stored in {store.path}; run the same call again to resume from "
                         "there (finished rows are not recomputed)") if store.path is not None else \
                    "nothing was stored (no store= given): pass store= a path to be able to resume"
                raise SweepInterrupted(f"interrupted after {todo - missing()} of {todo} evaluations (tasks, "
                                       f"checkpoint measures and edit traces); {where}. The model was restored to its unedited "
                                       "weights.") from None
    return Sweep(units, store, table())


def side_effect_records(chain_list: Sequence[Chain], model: str | LoadedModel = "smollm2-135m",
                        tasks: Sequence[str] = TASKS, n: int | None = 50, seed: int = 0, protocol: str = "paper", *,
                        hparams: dict | None = None, store: str | os.PathLike | ResultStore | None = None) -> pd.DataFrame:
    """The per-prompt records behind :func:`side_effects`' rows (same arguments), one line per
    (chain, checkpoint, task, prompt): the chain's columns (``ordering`` is its ``seed``), then
    the records (:func:`helpers.evaluation.evaluate_examples`). Read from ``store``: run
    :func:`side_effects` first."""
    return _records(_units(chain_list, model, tasks, n, seed, protocol, hparams), open_store(store))


def _records(units: list[ChainUnit], store: ResultStore) -> pd.DataFrame:
    frames = []
    for u in units:
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


def checkpoint_measures(chain_list: Sequence[Chain], measure: str, model: str | LoadedModel = "smollm2-135m",
                        tasks: Sequence[str] = TASKS, n: int | None = 50, seed: int = 0, protocol: str = "paper", *,
                        hparams: dict | None = None, store: str | os.PathLike | ResultStore | None = None,
                        records: bool = False) -> pd.DataFrame:
    """What :func:`side_effects` (same arguments) measured at each checkpoint besides the tasks:
    ``measure="signals"`` (perplexity on the held-out text; the edited matrices' largest norm
    growth, top-singular-value growth, condition number and its growth) or ``"editing"`` (the
    mean reliability, generalization and locality of every record edited so far; none at 0
    edits). One row per (chain, checkpoint); ``records=True``: the per-example records instead
    (held-out windows; edited records), one line each, with the chain's columns."""
    return _measures(_units(chain_list, model, tasks, n, seed, protocol, hparams), open_store(store), measure, records)


def _measures(units: list[ChainUnit], store: ResultStore, measure: str, records: bool) -> pd.DataFrame:
    if measure not in CHECKPOINT_MEASURES:
        raise SweepError(f"measure must be one of {CHECKPOINT_MEASURES}, got {measure!r}")
    columns = SIGNAL_COLUMNS if measure == "signals" else EDITING_COLUMNS
    out = []
    for u in units:
        for count in u.checkpoints_in(store):
            if measure not in u.measures_at(count):
                continue
            key = u.measure_key(count, measure)
            row = store.get(key)
            found = store.get_examples(key) if row is not None and records else None
            if row is None or (records and found is None):
                raise SweepError(f"{u.label}, {count} edits: no {measure} in {store.path or 'this in-memory store'}; "
                                 "run side_effects with the same arguments first")
            line = u.columns_at(count)
            out.append(found.assign(**line) if records else pd.DataFrame([{**line, **{k: row.get(k) for k in columns}}]))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def edit_traces(chain_list: Sequence[Chain], model: str | LoadedModel = "smollm2-135m",
                tasks: Sequence[str] = TASKS, n: int | None = 50, seed: int = 0, protocol: str = "paper", *,
                hparams: dict | None = None, store: str | os.PathLike | ResultStore | None = None) -> pd.DataFrame:
    """The signals :func:`side_effects` (same arguments) read after every edit of every chain: one
    row per (chain, edit), from edit 0 (the unedited model: its held-out NLL, norm growth 1) to
    the chain's last, with the chain's columns, ``heldout_nll`` (nats per token of the held-out
    text), ``norm_growth`` (the most grown edited matrix's ‖W‖/‖W₀‖), ``top_singular_growth``
    (its σ₁(W)/σ₁(W₀)), ``finite`` (every edited weight finite) and ``collapsed`` (the chain's
    model is collapsed from this edit on: held-out NLL then ln V, the uniform model's)."""
    return _traces(_units(chain_list, model, tasks, n, seed, protocol, hparams), open_store(store))


def _traces(units: list[ChainUnit], store: ResultStore) -> pd.DataFrame:
    out = []
    for u in units:
        base = store.get(u.measure_key(0, "signals"))
        if base is None:
            raise SweepError(f"{u.label}: no unedited signals in {store.path or 'this in-memory store'}; run "
                             "side_effects with the same arguments first")
        rows = [{**u.columns_at(0), "heldout_nll": math.log(base["perplexity"]), "norm_growth": 1.0,
                 "top_singular_growth": 1.0, "finite": True, "collapsed": False}]
        for i in range(1, u.last_edit(store) + 1):
            row = store.get(u.trace_key(i))
            if row is None:
                raise SweepError(f"{u.label}, edit {i}: no trace in {store.path or 'this in-memory store'} (a store "
                                 "written before traces were kept: run side_effects again to add them)")
            rows.append({**u.columns_at(i), "heldout_nll": row["heldout_nll"], "norm_growth": row["norm_growth"],
                         "top_singular_growth": row.get("top_singular_growth", math.nan),
                         "finite": row.get("finite", True), "collapsed": bool(row.get("collapsed", False))})
        out.append(pd.DataFrame(rows))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _units(chain_list, model, tasks, n, seed, protocol, hparams) -> list[ChainUnit]:
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in tasks:
        get_task(t)
    check_protocol(protocol)
    hparams = {str(k).upper(): v for k, v in (hparams or {}).items()}
    records = load_zsre()
    return [ChainUnit(c, records, model_name(model), tasks, n, seed, protocol, hparams.get(c.method.upper()),
                      files_name(model)) for c in chain_list]


class ChainUnit:
    """One chain as a unit of work: its records, the keys of its rows and states, and the run
    that computes the missing ones (see :mod:`helpers.runs.backends` for what a unit is).
    ``model``: the name that keys its rows; ``files``: the name the model's shipped hparams use
    (:func:`helpers.model.loading.files_name`; default: read off ``model``)."""

    def __init__(self, chain: Chain, records, model: str, tasks, n, seed, protocol, hparams, files: str | None = None):
        self.chain, self.model, self.tasks, self.n, self.seed = chain, model, tasks, n, seed
        # the chain's reading of a batch, over the method's hparams; a batch of one fact reads the same either way,
        # so its rows are shared with the chain of the hparams' own reading (computed once, not once per reading)
        if chain.batch_edit is not None and chain.batch_size > 1:
            if hparams is not None and not isinstance(hparams, dict):
                raise SweepError(f"{chain.label}: a chain's batch_edit needs the method's hparams as a dict of "
                                 f"overrides (or none), got {type(hparams).__name__}")
            hparams = {**(hparams or {}), "batch_edit": chain.batch_edit}
        self.protocol, self.hparams = protocol, hparams
        # how its batches are edited, as its hparams say (None for a method that edits one fact at a time)
        files = files or files_name(model)
        self.batch_edit = chain.batch_edit or _batch_reading(chain.method, hparams, files)
        need = chain.batch_size * chain.edits
        sample = edit_sample(records, chain.draw or need, chain.seed, chain.method, hparams)[:need]
        if len(sample) < need:
            raise SweepError(f"{chain.label} needs {need} distinct records; only {len(sample)} can be edited "
                             f"with {chain.method}")
        b = chain.batch_size
        self.batches = [sample[i * b:(i + 1) * b] for i in range(chain.edits)]
        self.edit_key = {"model": model, **edit_key(chain.method, hparams, files),
                         "regularizer": regularizer_key(chain.regularizer)}
        # the weights a checkpoint stores are those the edits left: PRUNE read at evaluation
        # leaves them unrestrained, so its chain shares the unregularised chain's states
        reg = chain.regularizer
        unrestrained = isinstance(reg, Prune) and reg.when == "evaluation"
        self.state_edit_key = {**self.edit_key, "regularizer": ["none"]} if unrestrained else self.edit_key

    @property
    def label(self) -> str:
        return self.chain.label

    def unedited(self) -> ChainUnit:
        """A unit computing only this chain's unedited point."""
        import copy
        unit = copy.copy(self)
        tasks_at = self.chain.tasks_at
        unit.chain = dataclasses.replace(self.chain, checkpoints=(0,),
                                         tasks_at=None if tasks_at is None else tuple(c for c in tasks_at if c == 0))
        return unit

    def _edited(self, count: int) -> list[list[int]]:
        return [[r.case_id for r in batch] for batch in self.batches[:count]]

    def row_key(self, count: int, task: str) -> dict:
        key = {"experiment": "side_effects", "model": self.model, "task": task, "n": self.n, "task_seed": self.seed,
               **scoring_key(self.protocol, task)}
        return key if count == 0 else {**key, **self.edit_key, "edits": self._edited(count)}

    def measure_key(self, count: int, measure: str) -> dict:
        """The key of a checkpoint's ``measure`` (:data:`CHECKPOINT_MEASURES`): the unedited model's signals
        are shared by every chain of the model."""
        key = {"experiment": f"side_effects_{measure}", "model": self.model}
        return key if count == 0 else {**key, **self.edit_key, "edits": self._edited(count)}

    def trace_key(self, count: int) -> dict:
        """The key of the cheap signals read after edit ``count`` (1-based) of the chain, every
        edit, not only at checkpoints: :meth:`_trace`."""
        return {"experiment": "side_effects_trace", "model": self.model, **self.edit_key, "edits": self._edited(count)}

    def traced_at(self, count: int) -> range:
        """The edits whose traces a checkpoint owns: those after the previous checkpoint, up to it."""
        earlier = [c for c in self.chain.checkpoints if c < count]
        return range(max(earlier, default=0) + 1, count + 1) if count > 0 else range(0)

    def state_key(self, count: int) -> dict:
        return {"experiment": "side_effects_state", **self.state_edit_key, "edits": self._edited(count)}

    def settings(self) -> tuple[list[dict], list[dict]]:
        return ([self.row_key(c, t) for c in self.chain.task_points for t in self.tasks]
                + [self.measure_key(c, m) for c in self.chain.checkpoints for m in self.measures_at(c)]
                + [self.trace_key(i) for c in self.chain.checkpoints for i in self.traced_at(c)],
                [self.state_key(c) for c in self.chain.checkpoints if c > 0])

    @staticmethod
    def measures_at(count: int) -> tuple[str, ...]:
        return CHECKPOINT_MEASURES if count > 0 else ("signals",)

    def _keys_at(self, count: int) -> list[dict]:
        tasks = self.tasks if count in self.chain.task_points else []
        return ([self.row_key(count, t) for t in tasks] + [self.measure_key(count, m) for m in self.measures_at(count)]
                + [self.trace_key(i) for i in self.traced_at(count)])

    def checkpoints_in(self, store) -> tuple[int, ...]:
        """The checkpoints the chain reaches: all of them, but for a chain that ends at its collapse
        (``Chain.until_collapse``) and has, those before it."""
        end = self._end(store)
        return self.chain.checkpoints if end is None else tuple(c for c in self.chain.checkpoints if c < end)

    def last_edit(self, store) -> int:
        """The chain's last edit: its length, or the edit it collapsed at where it ends there."""
        end = self._end(store)
        return self.chain.edits if end is None else end

    def _end(self, store) -> int | None:
        """Where a chain that ends at its collapse has ended (None: not, or not such a chain), read
        once per state of the store (each read hashes every trace key: long chains ask often)."""
        if self.chain.until_collapse is None:
            return None
        stamp = (id(store), len(store)) if hasattr(store, "__len__") else None
        cached = getattr(self, "_end_cache", None)
        if stamp is None or cached is None or cached[0] != stamp:
            cached = (stamp, self.collapsed_at(store))
            self._end_cache = cached
        return cached[1]

    def missing(self, store) -> set[str]:
        """The keys of the rows still to compute."""
        return {settings_key(k) for c in self.checkpoints_in(store) for k in self._keys_at(c) if store.get(k) is None}

    def missing_at(self, count: int, store) -> bool:
        return count in self.checkpoints_in(store) and any(store.get(k) is None for k in self._keys_at(count))

    def columns_at(self, count: int) -> dict:
        c = self.chain
        return {"method": c.method, "setting": c.setting, "batch_size": c.batch_size, "batch_edit": self.batch_edit,
                "regularizer": c.regularizer.label, "how": c.regularizer.how, "k": c.regularizer.k,
                "variant": c.variant, "chain": c.label, "ordering": c.seed, "edits": count, "edited_facts": count * c.batch_size}

    def table(self, store, columns: Sequence[str] = ROW_COLUMNS) -> list[dict]:
        return [{**self.columns_at(count), "task": task,
                 **{k: store.get(self.row_key(count, task)).get(k) for k in columns}}
                for count in self.checkpoints_in(store) if count in self.chain.task_points for task in self.tasks]

    def run(self, session: Session, store, on_row) -> None:
        pending = [c for c in self.checkpoints_in(store) if self.missing_at(c, store)]
        if not pending:
            return
        m, tok = session.load()
        # the editing metrics' locality compares with the unedited model: read it first
        reference = None
        if any(store.get(self.measure_key(c, "editing")) is None for c in pending if c > 0):
            with phase(self.chain.label, "measure:editing"):
                reference = editing_metrics(m, tok, [r for batch in self.batches for r in batch])
        if pending[0] == 0:  # the unedited model: no edit to replay
            self._evaluate(m, tok, 0, None, store, on_row, {}, reference)
            pending = pending[1:]
            if not pending:
                return
        reg = self.chain.regularizer
        if isinstance(reg, Prune):
            reg.reset()
        # PRUNE as its reference: the edits accumulate unrestrained, the checkpoints are read restrained
        per_edit = None if isinstance(reg, Prune) and reg.when == "evaluation" else reg

        def stored(count):  # a jump skips edits: only over those whose traces are stored
            if any(store.get(self.trace_key(i)) is None for i in range(run.at + 1, count + 1)):
                return None
            return store.get_tensors(self.state_key(count))

        tops: dict[str, float] = {}  # each edited matrix's unedited top singular value, read once
        past = self._past_collapse(store)

        def traced(count):
            row = store.get(self.trace_key(count))
            if row is None:
                with phase(self.chain.label, "trace"):
                    row = self._trace(m, tok, run.originals, tops)
                store.put(self.trace_key(count), row)
                on_row(f"{self.chain.label}: edit {count}, trace")
            if row.get("collapsed") or past(row):
                raise _Collapsed(count)

        collapsed = self.collapsed_at(store)
        with ChainRun(m, tok, self.chain.method, self.hparams, self.batches, per_edit) as run:
            for i, target in enumerate(pending):
                edited = False
                if collapsed is None or target < collapsed:
                    if run.resume(target, stored, points=self.chain.checkpoints) and isinstance(reg, Prune):
                        reg.reset(self._as_out_in(m, run.originals))  # PRUNE's originals: the unedited weights
                    try:
                        with phase(self.chain.label, "edit"):
                            edited = run.advance(target, traced)
                    except _Collapsed as c:
                        collapsed = c.at
                if collapsed is not None and target >= collapsed:
                    if self.chain.until_collapse is None:
                        # a model with non-finite weights produces nothing: the rest of the chain is recorded at the floor
                        self._record_collapse(m, tok, collapsed, pending[i:], store, on_row)
                    return  # (a chain that ends at its collapse: its traces end there, its later checkpoints are none)
                originals = run.originals
                if edited:
                    # before evaluating: a crash during the evaluation resumes here, not edits earlier
                    params = dict(m.named_parameters())
                    store.put_tensors(self.state_key(target), {n: params[n].detach() for n in originals})
                view = reg.restrained(m, originals) if per_edit is None and isinstance(reg, Prune) else None
                try:
                    self._evaluate(m, tok, target, session.lower_layers(set(originals)), store, on_row, originals,
                                   reference)
                finally:
                    if view is not None:
                        view.restore()

    def collapsed_at(self, store) -> int | None:
        """The edit after which the chain's model was collapsed (its weights, or its held-out NLL,
        no longer finite; for a chain that ends at its collapse, also its held-out NLL past
        ``Chain.until_collapse``), as the stored traces say; None while it is not."""
        past = self._past_collapse(store)
        for i in range(1, self.chain.edits + 1):
            row = store.get(self.trace_key(i))
            if row is None:
                return None
            if row.get("collapsed"):
                return int(row.get("collapsed_at", i))
            if past(row):
                return i
        return None

    def _past_collapse(self, store):
        """``past(trace row)``: whether the chain ends at that edit by its held-out NLL — more than
        ``Chain.until_collapse`` nats per token above the unedited model's, the rule
        :func:`helpers.report.horizon.collapse_points` reads the traces with. Never for a chain that
        runs to its length (or before the unedited model is read)."""
        rise = self.chain.until_collapse
        base = store.get(self.measure_key(0, "signals")) if rise is not None else None
        if base is None:
            return lambda row: False
        unedited = math.log(base["perplexity"])
        return lambda row: row["heldout_nll"] - unedited > rise

    def _record_collapse(self, m, tok, at: int, checkpoints: Sequence[int], store, on_row) -> None:
        """Store the rows of a chain that collapsed at edit ``at``: each later edit's trace and each
        checkpoint from ``checkpoints`` (all at or after ``at``) scored as a model that produces
        nothing (:func:`helpers.evaluation.collapsed_examples`). No edit is made, now or on resume."""
        vocab = int(m.get_output_embeddings().weight.shape[0])
        floor_nll = math.log(vocab)
        for i in range(at + 1, self.chain.edits + 1):
            if store.get(self.trace_key(i)) is None:
                store.put(self.trace_key(i), {"heldout_nll": floor_nll, "norms": {}, "norm_growth": math.nan,
                                              "top_singular_growth": math.nan, "finite": False, "collapsed": True,
                                              "collapsed_at": at, "seconds": 0.0})
                on_row(f"{self.chain.label}: edit {i}, collapsed at {at}")
        for count in checkpoints:
            for task in self.tasks if count in self.chain.task_points else ():
                if store.get(self.row_key(count, task)) is not None:
                    continue
                ev = collapsed_examples(tok, task, n=self.n, seed=self.seed, protocol=self.protocol,
                                        vocab_size=vocab, after_edit=True)
                store.put_examples(self.row_key(count, task), ev.records)
                store.put(self.row_key(count, task), {**ev.row, "collapsed_at": at})
                on_row(f"{self.chain.label}: {count} edits, {task}, collapsed at {at}")
            for measure in self.measures_at(count):
                key = self.measure_key(count, measure)
                if store.get(key) is not None:
                    continue
                if measure == "signals":
                    windows = heldout_records(m, tok).assign(collapsed=True)
                    windows["nll_sum"] = windows.tokens * floor_nll
                    row = {"perplexity": float(vocab), "heldout_tokens": int(windows.tokens.sum()), "matrices": {},
                           **{k: math.nan for k in ("norm_growth", "top_singular_growth", "condition",
                                                    "condition_growth")}}
                    records = windows
                else:
                    edited = [r for batch in self.batches[:count] for r in batch]
                    records = pd.DataFrame({"case_id": [r.case_id for r in edited], "reliability": 0.0,
                                            "generalization": 0.0, "locality": 0.0, "collapsed": True})
                    row = {"reliability": 0.0, "generalization": 0.0, "locality": 0.0, "n": len(edited)}
                store.put_examples(key, records)
                store.put(key, {**row, "collapsed_at": at, "seconds": 0.0})
                on_row(f"{self.chain.label}: {count} edits, {measure}, collapsed at {at}")

    @staticmethod
    def _as_out_in(model, values: dict) -> dict:
        return {n: from_param_layout(w, get_module(model, n.rsplit(".", 1)[0])) for n, w in values.items()}

    def _evaluate(self, m, tok, count: int, cache, store, on_row, originals: dict, reference) -> None:
        for task in self.tasks if count in self.chain.task_points else ():
            if store.get(self.row_key(count, task)) is not None:
                continue
            with phase(self.chain.label, "evaluation"):
                ev = evaluate_examples(m, tok, task, n=self.n, seed=self.seed, protocol=self.protocol,
                                       lower_layers=cache, after_edit=count > 0, progress=False)
            store.put_examples(self.row_key(count, task), ev.records)  # first: a stored row has its records
            store.put(self.row_key(count, task), ev.row)
            on_row(f"{self.chain.label}: {count} edits, {task}")
        for measure in self.measures_at(count):
            key = self.measure_key(count, measure)
            if store.get(key) is not None:
                continue
            started = time.perf_counter()
            with phase(self.chain.label, f"measure:{measure}"):
                if measure == "signals":
                    records, row = self._signals(m, tok, originals)
                else:
                    records, row = self._editing(m, tok, count, reference)
            store.put_examples(key, records)
            store.put(key, {**row, "seconds": time.perf_counter() - started})
            on_row(f"{self.chain.label}: {count} edits, {measure}")

    def _signals(self, m, tok, originals: dict) -> tuple[pd.DataFrame, dict]:
        windows = heldout_records(m, tok)
        params = dict(m.named_parameters())
        matrices = {n: matrix_signals(w0, params[n].detach()) for n, w0 in originals.items()}
        row = {"perplexity": perplexity(windows), "heldout_tokens": int(windows.tokens.sum()), "matrices": matrices}
        for k in ("norm_growth", "top_singular_growth", "condition", "condition_growth"):
            # the most changed matrix (1.0, the unedited value, before any edit)
            row[k] = max((v[k] for v in matrices.values()), default=1.0 if k != "condition" else None)
        if row["condition"] is None:
            row["condition"] = float("nan")
        return windows, row

    @staticmethod
    def _trace(m, tok, originals: dict, tops: dict[str, float]) -> dict:
        """What one edit did, cheaply (about a second on 2 cores for SmolLM2): the held-out text's NLL
        per token; each edited matrix's norm growth ‖W‖/‖W₀‖ (the largest as ``norm_growth``) and
        top singular value growth σ₁(W)/σ₁(W₀) (``top_singular_growth``, ``tops``: σ₁(W₀) by name,
        filled as read); ``finite``: every edited weight finite; ``collapsed``: not finite, or the
        held-out NLL not (the chain then ends: :meth:`_record_collapse`)."""
        started = time.perf_counter()
        windows = heldout_records(m, tok)
        params = dict(m.named_parameters())
        heldout_nll = float(windows.nll_sum.sum() / windows.tokens.sum())
        norms, singular, finite = {}, {}, True
        for n, w0 in originals.items():
            w = params[n].detach().float()
            norms[n] = float(w.norm() / w0.float().norm())
            if n not in tops:
                tops[n] = float(torch.linalg.matrix_norm(w0.float(), ord=2))
            if bool(torch.isfinite(w).all()):
                singular[n] = float(torch.linalg.matrix_norm(w, ord=2)) / tops[n]
            else:
                finite, singular[n] = False, math.nan
        collapsed = not finite or not math.isfinite(heldout_nll)
        if collapsed:  # scored from here on as a model that produces nothing (the uniform model's NLL)
            heldout_nll = math.log(int(m.get_output_embeddings().weight.shape[0]))
        return {"heldout_nll": heldout_nll, "norms": norms, "norm_growth": max(norms.values(), default=1.0),
                "top_singular": singular, "top_singular_growth": max(singular.values(), default=1.0),
                "finite": finite, "collapsed": collapsed, "seconds": time.perf_counter() - started}

    def _editing(self, m, tok, count: int, reference: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        edited = [r for batch in self.batches[:count] for r in batch]
        result = editing_metrics(m, tok, edited, reference.iloc[:len(edited)].reset_index(drop=True))
        records = result.drop(columns=["loc_argmax", "portability"])
        row = {k: float(records[k].mean()) for k in ("reliability", "generalization", "locality")}
        return records, {**row, "n": len(records)}


def _batch_reading(method: str, hparams, files: str) -> str | None:
    """The ``batch_edit`` of ``method``'s hparams on the model whose files are named ``files`` (None
    where the method has no such setting, or its hparams cannot be read here: the edit says why)."""
    spec = method_spec(method)
    if not spec.batchable:
        return None
    try:
        return getattr(load_hparams(spec.hparams, spec.key, files, hparams, folder=spec.hparams_dir), "batch_edit", None)
    except EdithurtError:
        return None


def wide(df: pd.DataFrame, measure: str = "value") -> pd.DataFrame:
    """Rows of :func:`side_effects` as a table: one line per (chain, edits), one column per task
    (the mean over the chain's orderings where it ran several)."""
    out = df.pivot_table(index=["chain", "edits"], columns="task", values=measure, sort=False)
    return out.reindex(columns=list(dict.fromkeys(df.task))).reset_index()  # a task all NaN stays, as NaN


# the grid's names, where the sweep's callers have always found them
__all__ = ["run", "Sweep", "Chain", "ChainUnit", "chains", "rescue_chains", "checkpoint_measures", "edit_traces", "side_effect_records",
           "side_effects", "wide",
           "CHECKPOINT_MEASURES", "SweepError",
           "SweepInterrupted"]
