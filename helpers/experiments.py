"""Experiments as independent units whose result rows are stored as they come.

A unit is one evaluation under fixed settings; its row goes to a :class:`ResultStore` the
moment it is computed, and a rerun skips every unit already there (resume after a crash).
The model is loaded once, and only if some unit still has to run.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from .evaluate import evaluate_tasks
from .models import load_model
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
                loaded = loaded or load_model(model)
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
        from .editing.hparams import load_hparams
        from .editing.mend import MENDHyperParams, split_zsre

        hp = hparams if isinstance(hparams, MENDHyperParams) else None
        fraction, split_seed = (hp.train_fraction, hp.seed) if hp else (MENDHyperParams.train_fraction, MENDHyperParams.seed)
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
            loaded = loaded or load_model(model)
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
