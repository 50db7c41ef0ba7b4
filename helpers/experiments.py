"""Experiments as independent units whose result rows are stored as they come.

A unit is one evaluation under fixed settings; its row goes to a :class:`ResultStore` the
moment it is computed, and a rerun skips every unit already there (resume after a crash).
The model is loaded once, and only if some unit still has to run.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd
import torch

from .evaluate import evaluate_tasks
from .models import load_model

_LOADED: dict = {}


def shared_model(name: str):
    """``load_model(name)``, once per process: every runner here (and the sweep runner) edits
    the model in place and restores it, so the notebooks' successive runs share one copy
    instead of loading the weights again for each."""
    if name not in _LOADED:
        _LOADED.clear()  # one model in memory at a time
        _LOADED[name] = load_model(name)
    return _LOADED[name]
from .results import ResultStore
from .tasks import TASKS, check_protocol, get_task


def unedited_baseline(model: str = "smollm2-135m", tasks: Sequence[str] = TASKS, n: int | None = 200,
                      seed: int = 0, protocols: Sequence[str] = ("paper", "released"), *,
                      store: str | os.PathLike | ResultStore | None = None, hint: bool = True,
                      prompt_form: str = "plain", data_dir=None, progress: bool = True) -> pd.DataFrame:
    """The unedited model on every task under every protocol: one row per (task, protocol)."""
    for t in tasks:
        get_task(t)
    for p in protocols:
        check_protocol(p)
    store = store if isinstance(store, ResultStore) or store is None else ResultStore(store)
    loaded = None
    rows = []
    for protocol in protocols:
        for task in tasks:
            settings = {"experiment": "unedited_baseline", "model": model, "task": task, "protocol": protocol,
                        "n": n, "seed": seed, "hint": hint, "prompt_form": prompt_form}
            row = store.get(settings) if store is not None else None
            if row is None:
                loaded = loaded or shared_model(model)
                row = evaluate_tasks(*loaded, [task], n=n, seed=seed, protocol=protocol, data_dir=data_dir,
                                     hint=hint, prompt_form=prompt_form, progress=progress).iloc[0].to_dict()
                if store is not None:
                    store.put(settings, row)
            rows.append(row)
    return pd.DataFrame(rows)


def edit_sample(records, n: int, seed: int, method: str, hparams=None):
    """``n`` ZsRE records drawn at random (seeded); for MEND only from its held-out split."""
    import random

    pool = list(records)
    if method.upper() == "MEND":
        from .editing.mend import MENDHyperParams, split_zsre

        given = vars(hparams) if isinstance(hparams, MENDHyperParams) else hparams if isinstance(hparams, dict) else {}
        fraction = given.get("train_fraction", MENDHyperParams.train_fraction)
        split_seed = given.get("seed", MENDHyperParams.seed)
        pool = split_zsre(pool, fraction, split_seed)[1]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def editing_performance(model: str = "smollm2-135m", method: str = "ROME", n: int = 20, seed: int = 0, *,
                        hparams=None, store: str | os.PathLike | ResultStore | None = None,
                        progress: bool = True) -> pd.DataFrame:
    """Single edits of ``n`` random ZsRE records, each undone before the next: one row per
    record with reliability, generalization, locality, portability and the seconds it took."""
    import time

    from tqdm.auto import tqdm

    from .data import load_zsre
    from .editing import edit
    from .metrics import editing_metrics

    store = store if isinstance(store, ResultStore) or store is None else ResultStore(store)
    sample = edit_sample(load_zsre(), n, seed, method, hparams)
    loaded, rows = None, []
    for req in tqdm(sample, desc=f"{method} single edits", disable=not progress):
        settings = {"experiment": "editing_performance", "model": model, "method": method.upper(),
                    "case_id": req.case_id, "hparams": hparams if isinstance(hparams, (dict, str, type(None))) else repr(hparams)}
        row = store.get(settings) if store is not None else None
        if row is None:
            loaded = loaded or shared_model(model)
            m, tok = loaded
            ref = editing_metrics(m, tok, [req])
            start = time.perf_counter()
            res = edit(m, tok, req, method, hparams)
            seconds = time.perf_counter() - start
            met = editing_metrics(m, tok, [req], reference=ref).iloc[0]
            res.restore()
            row = {"case_id": req.case_id, "reliability": met.reliability, "generalization": met.generalization,
                   "locality": met.locality, "portability": met.portability, "seconds": seconds,
                   "delta_norm": float(sum(d.float().norm() ** 2 for d in res.deltas.values()) ** 0.5)}
            if store is not None:
                store.put(settings, row)
        rows.append(row)
    return pd.DataFrame(rows)


def _store(store) -> ResultStore | None:
    return store if isinstance(store, ResultStore) or store is None else ResultStore(store)


def _hp_key(hparams):
    return hparams if isinstance(hparams, (dict, str, type(None))) else repr(hparams)


def _changes(model, results) -> tuple[dict, dict]:
    """``({parameter: ΔW [out, in]}, {parameter: weight_change_stats})`` of the parameters the
    EditResults ``results`` (applied in order) changed, against their values before the first."""
    from .editing.layers import from_param_layout, get_module
    from .weight_stats import weight_change_stats

    first: dict = {}
    for r in results:
        for name, w in r._originals.items():
            first.setdefault(name, w)
    params = dict(model.named_parameters())
    delta, stats = {}, {}
    for name, w in first.items():
        module = get_module(model, name.rsplit(".", 1)[0])
        w0, w1 = from_param_layout(w, module), from_param_layout(params[name].detach(), module)
        delta[name] = (w1 - w0).clone()
        stats[name] = weight_change_stats(w0, w1)
    return delta, stats


def _set_values(model, values: dict):
    """Put stored parameter values (their own layout) into ``model`` exactly; the returned
    EditResult restores the previous ones."""
    from .editing import EditResult

    params = dict(model.named_parameters())
    res = EditResult("resume", {}, None, {}, model)
    with torch.no_grad():
        for name, v in values.items():
            res._originals[name] = params[name].detach().clone()
            params[name].copy_(v)
    return res


def weight_change(model: str = "smollm2-135m", method: str = "ROME", max_edits: int = 15, n_single: int = 20,
                  seed: int = 0, *, hparams=None, store=None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Paper Table 1 / Fig. 5: how much ``method`` changes the matrices it edits.

    Returns ``(rows, cumulative)``. ``rows``: one per edited matrix of each single edit of
    ``n_single`` random records (``setting="single"``, each from the unedited model) and of
    each point ``1..max_edits`` of one sequential chain of random records
    (``setting="sequential"``), with :func:`helpers.weight_stats.weight_change_stats`.
    ``cumulative``: ``{number of edits: {parameter: ΔW [out, in] since the unedited model}}``
    of the chain, kept in the store so that a slider over the number of edits needs no new
    edit. An interrupted chain resumes from its last stored point."""
    from tqdm.auto import tqdm

    from .data import load_zsre
    from .editing import apply_update, edit

    store = _store(store)
    records = load_zsre()
    base = {"model": model, "method": method.upper(), "hparams": _hp_key(hparams)}
    loaded, rows = None, []
    for req in tqdm(edit_sample(records, n_single, seed, method, hparams), desc=f"{method} single edits",
                    disable=not progress):
        settings = {"experiment": "weight_change", "setting": "single", "case_id": req.case_id, **base}
        row = store.get(settings) if store is not None else None
        if row is None:
            loaded = loaded or shared_model(model)
            # the update as the regulariser ablation stores it: one edit serves both
            res = apply_update(loaded[0], raw_updates(loaded, model, req, method, hparams, store), method=method)
            row = {"stats": _changes(loaded[0], [res])[1]}
            res.restore()
            if store is not None:
                store.put(settings, row)
        rows += [{"setting": "single", "edits": 1, "case_id": req.case_id, "parameter": n, **st}
                 for n, st in row["stats"].items()]

    chain = edit_sample(records, max_edits, seed + 1, method, hparams)
    if len(chain) < max_edits:
        raise ValueError(f"only {len(chain)} records can be edited with {method}; max_edits={max_edits} is too many")
    chain_key = {"experiment": "weight_change", "setting": "sequential", "seed": seed, **base}

    def point(count):  # keyed by the records edited so far: a longer chain extends a shorter one
        return {**chain_key, "chain": [r.case_id for r in chain[:count]], "edits": count}

    cumulative, stats, done = {}, {}, 0
    while store is not None and done < max_edits:
        key = point(done + 1)
        row, tensors = store.get(key), store.get_tensors(key)
        if row is None or tensors is None:
            break
        done += 1
        cumulative[done] = {n[len("delta/"):]: t for n, t in tensors.items() if n.startswith("delta/")}
        stats[done], values = row["stats"], tensors
    if done < max_edits:
        loaded = loaded or shared_model(model)
        m, tok = loaded
        applied = [_set_values(m, {n[len("value/"):]: t for n, t in values.items() if n.startswith("value/")})] \
            if done else []  # back to the last stored point, bit for bit
        try:
            for count in tqdm(range(done + 1, max_edits + 1), desc=f"{method} sequential edits", disable=not progress):
                applied.append(edit(m, tok, chain[count - 1], method, hparams))
                cumulative[count], stats[count] = _changes(m, applied)
                if store is not None:
                    params = dict(m.named_parameters())
                    store.put_tensors(point(count), {**{f"delta/{n}": d for n, d in cumulative[count].items()},
                                                     **{f"value/{n}": params[n].detach() for n in cumulative[count]}})
                    store.put(point(count), {"stats": stats[count]})
        finally:
            for res in reversed(applied):
                res.restore()
    for count in range(1, max_edits + 1):
        rows += [{"setting": "sequential", "edits": count, "case_id": chain[count - 1].case_id, "parameter": n, **st}
                 for n, st in stats[count].items()]
    return pd.DataFrame(rows), cumulative


def paper_regularizers():
    """Fig. 7's settings: Unregularized, RECT 80/60/40/20 %, Random 40 %, PCA 40 %."""
    from .regularize import Regularizer

    return [Regularizer("none"), *(Regularizer("rect", k) for k in (0.8, 0.6, 0.4, 0.2)),
            Regularizer("random", 0.4), Regularizer("pca", 0.4)]


def raw_updates(model_tok, model: str, req, method: str, hparams=None, store=None) -> dict:
    """``{parameter: ΔW [out, in]}`` that ``method`` computes for ``req`` on the unedited model,
    computed once and kept in the store (the model is left unedited)."""
    from .editing import edit

    settings = {"experiment": "raw_update", "model": model, "method": method.upper(), "case_id": req.case_id,
                "hparams": _hp_key(hparams)}
    tensors = store.get_tensors(settings) if store is not None else None
    if tensors is None:
        res = edit(*model_tok, req, method, hparams)
        res.restore()
        tensors = res.updates
        if store is not None:
            store.put_tensors(settings, tensors)
    return tensors


def regularizer_ablation(model: str = "smollm2-135m", methods: Sequence[str] = ("ROME", "MEMIT"),
                         regularizers=None, n: int = 20, seed: int = 0, *, hparams: dict | None = None,
                         store=None, progress: bool = True) -> pd.DataFrame:
    """Paper Fig. 7: editing performance of each method's single edits of ``n`` random records
    under each regulariser. Each record's update is computed once; every regulariser is then
    applied to that same update. One row per (method, regulariser, record)."""
    from tqdm.auto import tqdm

    from .data import load_zsre
    from .editing import apply_update
    from .metrics import editing_metrics

    store = _store(store)
    regularizers = list(regularizers) if regularizers is not None else paper_regularizers()
    hparams = hparams or {}
    loaded, rows = None, []
    for method in methods:
        hp = hparams.get(method)
        for req in tqdm(edit_sample(load_zsre(), n, seed, method, hp), desc=f"{method} × regularizers",
                        disable=not progress):
            ref = updates = None
            for reg in regularizers:
                settings = {"experiment": "regularizer_ablation", "model": model, "method": method.upper(),
                            "case_id": req.case_id, "how": reg.how, "k": reg.k, "reg_seed": reg.seed,
                            "hparams": _hp_key(hp)}
                row = store.get(settings) if store is not None else None
                if row is None:
                    loaded = loaded or shared_model(model)
                    m, tok = loaded
                    if ref is None:
                        ref = editing_metrics(m, tok, [req])
                        updates = raw_updates(loaded, model, req, method, hp, store)
                    res = apply_update(m, updates, reg, method=method.upper())
                    met = editing_metrics(m, tok, [req], reference=ref).iloc[0]
                    res.restore()
                    row = {"reliability": met.reliability, "generalization": met.generalization,
                           "locality": met.locality, "portability": met.portability,
                           "delta_norm": float(sum(d.float().norm() ** 2 for d in res.deltas.values()) ** 0.5)}
                    if store is not None:
                        store.put(settings, row)
                rows.append({"method": method.upper(), "regularizer": reg.label, "how": reg.how, "k": reg.k,
                             "case_id": req.case_id, **row})
    return pd.DataFrame(rows)


def ablation_inputs(model: str, method: str = "ROME", n: int = 20, seed: int = 0, *, hparams=None, store=None,
                    loaded=None):
    """``(loaded, requests, updates, references)`` for a slider over k: the same records as
    :func:`regularizer_ablation`, their raw updates (from the store when there) and their
    pre-edit editing metrics."""
    from .data import load_zsre
    from .metrics import editing_metrics

    store = _store(store)
    loaded = loaded or shared_model(model)
    requests = edit_sample(load_zsre(), n, seed, method, hparams)
    updates = [raw_updates(loaded, model, r, method, hparams, store) for r in requests]
    unedited = editing_metrics(*loaded, requests)  # all requests in one pass, one row each
    refs = [unedited.iloc[[i]].reset_index(drop=True) for i in range(len(requests))]
    return loaded, requests, updates, refs
