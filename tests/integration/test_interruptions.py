"""A sweep killed (SIGKILL) or interrupted (Ctrl-C, SIGINT) mid-way, then restarted: finished
rows are not recomputed, no file is corrupt, and the table equals an uninterrupted run's.
The same settings and seed give the same table twice, and rows record what produced them."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.runs.store import FORMAT, ResultStore

pytestmark = [pytest.mark.data, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EVALS = 4 * 2  # 4 points (0..3 edits) x 2 tasks
MEASURES = 4 + 3  # the collapse signals at every point, the editing performance after each edit
TRACES = 3  # the held-out NLL and norm growth after every edit
ROWS = EVALS + MEASURES + TRACES


def _start(store, log, hold_at=0):
    return subprocess.Popen([sys.executable, "-m", "tests.integration.sweep_child", str(store), str(log), str(hold_at)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = next(l for l in out.splitlines() if l.startswith("TABLE"))
    return pd.DataFrame(json.loads(line[len("TABLE"):]))


def _count(log, what):
    return sum(1 for l in Path(log).read_text().splitlines() if l == what) if Path(log).exists() else 0


def _wait_for(log, what, n, proc, timeout=300):
    end = time.monotonic() + timeout
    while _count(log, what) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, f"no {n} '{what}' lines in {timeout} s"
        time.sleep(0.02)


def _lines(store):
    return [json.loads(l) for l in Path(store).read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    return _finish(_start(tmp / "store.jsonl", tmp / "log"))


def test_the_same_settings_and_seed_give_the_same_table_and_rows_record_their_origin(reference, tmp_path):
    again = _finish(_start(tmp_path / "store.jsonl", tmp_path / "log"))
    pd.testing.assert_frame_equal(again, reference)  # every value, bit for bit (timings excluded)
    recs = _lines(tmp_path / "store.jsonl")
    assert len(recs) == ROWS
    for rec in recs:
        assert rec["format"] == FORMAT
        assert {"edithurt", "torch", "transformers"} <= set(rec["made_by"])
    tasks = [r for r in recs if r["settings"]["experiment"] == "side_effects"]
    assert len(tasks) == EVALS and all(r["settings"]["task_seed"] == 0 and r["settings"]["n"] == 2 for r in tasks)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_an_interrupted_sweep_resumes_without_recomputing_or_losing_rows(reference, tmp_path, how):
    store, log = tmp_path / "store.jsonl", tmp_path / "log"
    proc = _start(store, log, hold_at=6)
    # strike during the 6th task evaluation, which waits for it: 5 task rows are stored, the measures of points 0
    # and 1 (point 0's signals; point 1's signals and editing performance: 3 rows) and the traces of edits 1 and 2;
    # the 6th is in progress
    _wait_for(log, "eval start", 6, proc)
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=120)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode != 0
        assert (f"SweepInterrupted: interrupted after 10 of {ROWS} evaluations (tasks, checkpoint measures and edit "
                "traces); 10 rows are stored in") in err
        assert "run the same call again to resume from there" in err
    done = _count(log, "eval")
    assert done == 5
    assert len(ResultStore(store)) == done + 3 + 2  # opens cleanly: no corrupt line

    log2 = tmp_path / "log2"
    resumed = _finish(_start(store, log2))
    assert _count(log2, "eval") == EVALS - done  # finished rows are not recomputed
    # from the edit state stored at the last checkpoint, not from the start
    assert _count(log2, "edit") == 1
    # numbers to 1e-4 of their size (the NLLs are float32 sums; scores and counts agree exactly)
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, rtol=1e-4, atol=0)
    recs = _lines(store)
    assert len(recs) == ROWS and len({r["key"] for r in recs}) == ROWS  # none lost, none twice
