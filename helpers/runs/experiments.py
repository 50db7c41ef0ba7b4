"""Experiments on single edits and on the unedited model, one result row per unit of work.

A unit is one evaluation or one edit under fixed settings; its row goes to a
:class:`~helpers.runs.store.ResultStore` the moment it is computed (``store.row(settings,
compute)``), and a rerun skips every unit already there. The model is loaded once, and only
if some unit still has to run. ``model`` is a name (loaded on first need, once per process)
or a :class:`~helpers.model.LoadedModel`; its name keys the rows.
"""
from __future__ import annotations

import functools
import inspect
import os
import random
import time
from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..data import load_zsre
from ..editing import EditSequence, Regularizer, apply_update, edit, editing_metrics, method_spec, single_updates
from ..editing.weight_stats import accumulated_change
from ..evaluation import TASKS, evaluate_examples, get_task
from ..evaluation.tasks import check_protocol, scoring_key
from ..editing.keys import edit_key
from ..model.loading import LoadedModel
from .chain import ChainRun
from ..model.loading import files_name
from .session import model_name, shared_model
from .store import ResultStore, open_store

Store = str | os.PathLike | ResultStore | None


def writes_store(fn):
    """Run ``fn`` in a lazy ``writing`` block of its ``store`` (:meth:`ResultStore.writing`):
    from its first missing result on it holds the store's lock, so a second process writing the
    same store waits, then finds this one's rows instead of computing them again; a call whose
    results are all stored reads them without waiting for another writer."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        store = bound.arguments["store"] = open_store(bound.arguments["store"])
        with store.writing(lazy=True):
            return fn(*bound.args, **bound.kwargs)

    return run


@writes_store
def unedited_baseline(model: str | LoadedModel = "smollm2-135m", tasks: Sequence[str] = TASKS, n: int | None = 200,
                      seed: int = 0, protocols: Sequence[str] = ("paper", "released"), *, store: Store = None,
                      hint: bool = True, prompt_form: str = "plain", data_dir=None, progress: bool = True) -> pd.DataFrame:
    """The unedited model on every task under every protocol: one row per (task, protocol)
    (each with its per-prompt records in the store, :meth:`ResultStore.get_examples`)."""
    for t in tasks:
        get_task(t)
    for p in protocols:
        check_protocol(p)
    store = open_store(store)
    rows = []
    for protocol in protocols:
        for task in tasks:
            settings = {"experiment": "unedited_baseline", "model": model_name(model), "task": task,
                        **scoring_key(protocol, task), "n": n, "seed": seed, "hint": hint, "prompt_form": prompt_form}
            if store.get(settings) is None:
                ev = evaluate_examples(*shared_model(model), task, n=n, seed=seed, protocol=protocol,
                                       data_dir=data_dir, hint=hint, prompt_form=prompt_form, progress=progress)
                store.put_examples(settings, ev.records)
                store.put(settings, ev.row)
            rows.append(store.get(settings))
    return pd.DataFrame(rows)


def edit_sample(records, n: int, seed: int, method: str, hparams=None):
    """``n`` ZsRE records drawn at random (seeded), from those ``method`` may edit (its spec's
    ``editable``: MEND, its held-out split)."""
    editable = method_spec(method).editable
    pool = list(records) if editable is None else list(editable(records, hparams))
    return random.Random(seed).sample(pool, min(n, len(pool)))


def _update_norm(result) -> float:
    return float(sum(d.float().norm() ** 2 for d in result.deltas.values()) ** 0.5)


@writes_store
def editing_performance(model: str | LoadedModel = "smollm2-135m", method: str = "ROME", n: int = 20, seed: int = 0,
                        *, hparams=None, store: Store = None, progress: bool = True) -> pd.DataFrame:
    """Single edits of ``n`` random ZsRE records, each undone before the next: one row per
    record with reliability, generalization, locality, portability and the seconds it took."""
    store = open_store(store)

    def compute(req):
        m, tok = shared_model(model)
        ref = editing_metrics(m, tok, [req])
        start = time.perf_counter()
        res = edit(m, tok, req, method, hparams, sequence=EditSequence())  # on its own: a fresh run of the reference
        seconds = time.perf_counter() - start
        try:
            met = editing_metrics(m, tok, [req], reference=ref).iloc[0]
        finally:  # an interrupt leaves the shared model unedited for the next call
            res.restore()
        return {"case_id": req.case_id, "reliability": met.reliability, "generalization": met.generalization,
                "locality": met.locality, "portability": met.portability, "seconds": seconds,
                "delta_norm": _update_norm(res)}

    rows = []
    base = {"experiment": "editing_performance", "model": model_name(model),
            **edit_key(method, hparams, files_name(model))}
    for req in tqdm(edit_sample(load_zsre(), n, seed, method, hparams), desc=f"{method} single edits",
                    disable=not progress):
        settings = {**base, "case_id": req.case_id}
        rows.append(store.row(settings, lambda: compute(req)))
    return pd.DataFrame(rows)


def _raw_update_key(model, req, method: str, hparams) -> dict:
    return {"experiment": "raw_update", "model": model_name(model), **edit_key(method, hparams, files_name(model)),
            "case_id": req.case_id}


def raw_updates(model: str | LoadedModel, req, method: str, hparams=None, store: Store = None) -> dict:
    """``{parameter: ΔW [out, in]}`` that ``method`` computes for ``req`` on the unedited model,
    computed once and kept in the store (the model is left unedited)."""
    def compute():
        res = edit(*shared_model(model), req, method, hparams, sequence=EditSequence())
        res.restore()
        return res.updates

    return open_store(store).tensors(_raw_update_key(model, req, method, hparams), compute)


@writes_store
def prefetch_raw_updates(model: str | LoadedModel, requests, method: str, hparams=None, store: Store = None) -> None:
    """Compute the :func:`raw_updates` of those ``requests`` the store lacks in one batched call
    (:func:`helpers.editing.single_updates`: ROME's and MEMIT's values optimised together) and
    store them, so that the per-request calls that follow find them."""
    store = open_store(store)
    missing = [r for r in requests if store.get_tensors(_raw_update_key(model, r, method, hparams)) is None]
    if missing:
        for r, upd in zip(missing, single_updates(*shared_model(model), missing, method, hparams)):
            store.put_tensors(_raw_update_key(model, r, method, hparams), upd)


@writes_store
def weight_change(model: str | LoadedModel = "smollm2-135m", method: str = "ROME", max_edits: int = 15,
                  n_single: int = 20, seed: int = 0, *, hparams=None, store: Store = None,
                  progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Paper Table 1 / Fig. 5: how much ``method`` changes the matrices it edits.

    Returns ``(rows, cumulative)``. ``rows``: one per edited matrix of each single edit of
    ``n_single`` random records (``setting="single"``, each from the unedited model) and of
    each point ``1..max_edits`` of one sequential chain of random records
    (``setting="sequential"``), with :func:`helpers.editing.weight_change_stats`.
    ``cumulative``: ``{number of edits: {parameter: ΔW [out, in] since the unedited model}}``
    of the chain, kept in the store so that a slider over the number of edits needs no new
    edit. An interrupted chain resumes from its last stored point."""
    store = open_store(store)
    records = load_zsre()
    base = {"model": model_name(model), **edit_key(method, hparams, files_name(model))}

    def single(req):
        # the update as the regulariser ablation stores it: one edit serves both
        res = apply_update(shared_model(model).model, raw_updates(model, req, method, hparams, store), method=method)
        stats = accumulated_change(res.model, [res])[1]
        res.restore()
        return {"stats": stats}

    rows = []
    sample = edit_sample(records, n_single, seed, method, hparams)
    if any(store.get({"experiment": "weight_change", "setting": "single", "case_id": r.case_id, **base}) is None
           for r in sample):
        prefetch_raw_updates(model, sample, method, hparams, store)
    for req in tqdm(sample, desc=f"{method} single edits", disable=not progress):
        row = store.row({"experiment": "weight_change", "setting": "single", "case_id": req.case_id, **base},
                        lambda: single(req))
        rows += [{"setting": "single", "edits": 1, "case_id": req.case_id, "parameter": n, **st}
                 for n, st in row["stats"].items()]

    chain = edit_sample(records, max_edits, seed + 1, method, hparams)
    if len(chain) < max_edits:
        raise ValueError(f"only {len(chain)} records can be edited with {method}; max_edits={max_edits} is too many")
    chain_key = {"experiment": "weight_change", "setting": "sequential", "seed": seed, **base}

    def point(count):  # keyed by the records edited so far: a longer chain extends a shorter one
        return {**chain_key, "chain": [r.case_id for r in chain[:count]], "edits": count}

    cumulative, stats = {}, {}
    done, values = 0, {}  # the points stored in full (row and tensors), from the first on; the last one's weights
    while done < max_edits:
        row, tensors = store.get(point(done + 1)), store.get_tensors(point(done + 1))
        if row is None or tensors is None:
            break
        done += 1
        cumulative[done] = {n[len("delta/"):]: t for n, t in tensors.items() if n.startswith("delta/")}
        stats[done] = row["stats"]
        values = {n[len("value/"):]: t for n, t in tensors.items() if n.startswith("value/")}
    if done < max_edits:
        m, tok = shared_model(model)

        def stored(count):  # the weights at the last stored point, bit for bit
            return values if count == done else None

        def record(count):
            cumulative[count], stats[count] = accumulated_change(m, run.applied)
            params = dict(m.named_parameters())
            store.put_tensors(point(count), {**{f"delta/{n}": d for n, d in cumulative[count].items()},
                                             **{f"value/{n}": params[n].detach() for n in cumulative[count]}})
            found = store.get(point(count))
            if found is None:
                store.put(point(count), {"stats": stats[count]})
            else:  # a clone without the weights edits again for the figure; the committed row stands
                stats[count] = found["stats"]
            bar.update()

        with ChainRun(m, tok, method, hparams, [[r] for r in chain]) as run, \
                tqdm(total=max_edits - done, desc=f"{method} sequential edits", disable=not progress) as bar:
            run.resume(done, stored, points=[done])
            run.advance(done)  # a method that carries state replays the stored edits, unrecorded
            run.advance(max_edits, record)
    for count in range(1, max_edits + 1):
        rows += [{"setting": "sequential", "edits": count, "case_id": chain[count - 1].case_id, "parameter": n, **st}
                 for n, st in stats[count].items()]
    return pd.DataFrame(rows), cumulative


def paper_regularizers() -> list[Regularizer]:
    """Fig. 7's settings: Unregularized, RECT 80/60/40/20 %, Random 40 %, PCA 40 %."""
    return [Regularizer("none"), *(Regularizer("rect", k) for k in (0.8, 0.6, 0.4, 0.2)),
            Regularizer("random", 0.4), Regularizer("pca", 0.4)]


@writes_store
def regularizer_ablation(model: str | LoadedModel = "smollm2-135m", methods: Sequence[str] = ("ROME", "MEMIT"),
                         regularizers=None, n: int = 20, seed: int = 0, *, hparams: dict | None = None,
                         store: Store = None, progress: bool = True) -> pd.DataFrame:
    """Paper Fig. 7: editing performance of each method's single edits of ``n`` random records
    under each regulariser. Each record's update is computed once; every regulariser is then
    applied to that same update. One row per (method, regulariser, record)."""
    store = open_store(store)
    regularizers = list(regularizers) if regularizers is not None else paper_regularizers()
    hparams = hparams or {}
    rows = []
    for method in methods:
        hp = hparams.get(method)
        sample = edit_sample(load_zsre(), n, seed, method, hp)
        base = {"experiment": "regularizer_ablation", "model": model_name(model),
                **edit_key(method, hp, files_name(model))}

        def key(req, reg, base=base):
            return {**base, "case_id": req.case_id, "how": reg.how, "k": reg.k, "reg_seed": reg.seed}

        todo = [r for r in sample if any(store.get(key(r, reg)) is None for reg in regularizers)]
        if todo:
            prefetch_raw_updates(model, todo, method, hp, store)
        for req in tqdm(sample, desc=f"{method} × regularizers", disable=not progress):
            once: dict = {}  # the unedited metrics and the raw update: once per record, only if needed

            def compute(reg):
                m, tok = shared_model(model)
                if not once:
                    once.update(reference=editing_metrics(m, tok, [req]),
                                updates=raw_updates(model, req, method, hp, store))
                res = apply_update(m, once["updates"], reg, method=method.upper())
                try:
                    met = editing_metrics(m, tok, [req], reference=once["reference"]).iloc[0]
                finally:  # an interrupt leaves the shared model unedited for the next call
                    res.restore()
                return {"reliability": met.reliability, "generalization": met.generalization,
                        "locality": met.locality, "portability": met.portability, "delta_norm": _update_norm(res)}

            for reg in regularizers:
                row = store.row(key(req, reg), lambda: compute(reg))
                rows.append({"method": method.upper(), "regularizer": reg.label, "how": reg.how, "k": reg.k,
                             "case_id": req.case_id, **row})
    return pd.DataFrame(rows)


@writes_store
def ablation_inputs(model: str | LoadedModel, method: str = "ROME", n: int = 20, seed: int = 0, *, hparams=None,
                    store: Store = None):
    """``(requests, updates, references)`` for a slider over k: the same records as
    :func:`regularizer_ablation`, their raw updates (from the store when there) and their
    pre-edit editing metrics (one single-row frame each)."""
    store = open_store(store)
    requests = edit_sample(load_zsre(), n, seed, method, hparams)
    prefetch_raw_updates(model, requests, method, hparams, store)
    updates = [raw_updates(model, r, method, hparams, store) for r in requests]
    unedited = editing_metrics(*shared_model(model), requests)  # all requests in one pass, one row each
    references = [unedited.iloc[[i]].reset_index(drop=True) for i in range(len(requests))]
    return requests, updates, references
