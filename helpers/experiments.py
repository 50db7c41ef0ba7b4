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
