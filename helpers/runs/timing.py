"""Where a run's time goes: wall and CPU seconds per (notebook, chain, phase).

``make reproduce`` names a log file in ``EDITHURT_TIMING`` (``figures/<profile>/results/timing_log.csv``,
committed with the store) and the notebook it runs in ``EDITHURT_NOTEBOOK``; every :func:`phase`
then appends one line when it ends. Nothing is written when ``EDITHURT_TIMING`` is unset (a
notebook run by hand, the tests). A phase's seconds exclude the phases nested in it, so the lines
of a notebook add up. The log only grows: a build that lands in pieces, session after session,
keeps each piece's lines, and :func:`summarize` adds them into ``timing.csv``.

Phases: ``edit`` (the edits of a chain, one line per stretch of edits between checkpoints),
``trace`` (the per-edit signals: held-out NLL, norms, top singular values), ``evaluation`` (one
task's examples at a checkpoint), ``measure:<name>`` (a checkpoint's held-out windows or editing
metrics), ``notebook`` (what the notebook spent outside those: loading, statistics, figures).
"""
from __future__ import annotations

import csv
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

LOG_ENV = "EDITHURT_TIMING"
NOTEBOOK_ENV = "EDITHURT_NOTEBOOK"
COLUMNS = ["notebook", "chain", "phase", "seconds", "cpu_seconds", "pid", "finished"]
_open: list[list[float]] = []  # per open phase: [wall, cpu] spent in the phases nested in it


def append(path: str | os.PathLike, notebook: str, chain: str, name: str, seconds: float, cpu_seconds: float) -> None:
    """One line of the log (its header first when the file is new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(COLUMNS)
        w.writerow([notebook, chain, name, f"{seconds:.3f}", f"{cpu_seconds:.3f}", os.getpid(),
                    time.strftime("%Y-%m-%dT%H:%M:%S")])


@contextmanager
def phase(chain: str, name: str):
    """Time the block as phase ``name`` of ``chain`` (a no-op unless ``EDITHURT_TIMING`` is set)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        yield
        return
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _open.append([0.0, 0.0])
    try:
        yield
    finally:
        inner_wall, inner_cpu = _open.pop()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if _open:
            _open[-1][0] += wall
            _open[-1][1] += cpu
        append(path, os.environ.get(NOTEBOOK_ENV, ""), chain, name, wall - inner_wall, cpu - inner_cpu)


def read_log(path: str | os.PathLike) -> pd.DataFrame:
    """The log as a frame (empty with its columns when there is none)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, keep_default_na=False, dtype={"notebook": str, "chain": str, "phase": str})


def summarize(log: pd.DataFrame) -> pd.DataFrame:
    """``timing.csv``: per (notebook, chain, phase) the count of lines and their wall and CPU
    seconds, then a ``total`` line per notebook (chain ``""``) and one for the whole build
    (notebook ``"all"``). Of a notebook's ``notebook`` lines only the last counts: the time
    of the run whose figures landed, not of every piece's or reread's."""
    cols = ["notebook", "chain", "phase", "count", "seconds", "cpu_seconds"]
    if not len(log):
        return pd.DataFrame(columns=cols)
    log = log.assign(chain=log.chain.fillna("").astype(str), seconds=log.seconds.astype(float),
                     cpu_seconds=log.cpu_seconds.astype(float))
    # each piece of a build, and each rerun that only rereads the store, redraws the notebook's figures: the
    # figures that landed are the last run's, so only its notebook line counts (a rerun does not grow the total)
    outside = log[log.phase == "notebook"]
    log = log.drop(outside.index.difference(outside.groupby("notebook").tail(1).index))
    g = log.groupby(["notebook", "chain", "phase"], sort=False)
    parts = g.agg(count=("seconds", "size"), seconds=("seconds", "sum"), cpu_seconds=("cpu_seconds", "sum")).reset_index()
    totals = log.groupby("notebook", sort=False).agg(count=("seconds", "size"), seconds=("seconds", "sum"),
                                                     cpu_seconds=("cpu_seconds", "sum")).reset_index()
    totals = totals.assign(chain="", phase="total")
    every = pd.DataFrame([{"notebook": "all", "chain": "", "phase": "total", "count": len(log),
                           "seconds": log.seconds.sum(), "cpu_seconds": log.cpu_seconds.sum()}])
    out = pd.concat([parts, totals, every], ignore_index=True)[cols]
    return out.round({"seconds": 1, "cpu_seconds": 1})


def summary_lines(table: pd.DataFrame) -> list[str]:
    """One line per notebook from :func:`summarize`'s totals: its time, and its largest phase."""
    lines = []
    for r in table[table.phase == "total"].itertuples():
        part = table[(table.notebook == r.notebook) & (table.phase != "total")]
        by_phase = part.groupby("phase").seconds.sum().sort_values(ascending=False)
        top = (f"; largest phase {by_phase.index[0]} ({100 * by_phase.iloc[0] / max(r.seconds, 1e-9):.0f} %)"
               if len(by_phase) else "")
        lines.append(f"{r.notebook}: {r.seconds / 60:.1f} min wall, {r.cpu_seconds / 60:.1f} min CPU{top}")
    return lines


__all__ = ["LOG_ENV", "NOTEBOOK_ENV", "phase", "append", "read_log", "summarize", "summary_lines"]
