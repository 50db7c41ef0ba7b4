"""Two processes writing one results store: the second waits for the first and computes nothing twice."""
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.runs.experiments import writes_store
from helpers.runs.store import ResultStore

CHILD = Path(__file__).with_name("store_writer_child.py")
ROOT = Path(__file__).resolve().parents[2]


def _stderr_until(process, text, timeout=60.0):
    """What ``process`` writes to stderr up to the first line holding ``text`` (or its end, or the
    timeout). Read by a thread: a pipe's buffered lines are invisible to ``select``."""
    lines: queue.Queue = queue.Queue()

    def read_all():
        for line in iter(process.stderr.readline, ""):
            lines.put(line)
        lines.put("")  # the end

    threading.Thread(target=read_all, daemon=True).start()
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if not line:
            break
        seen += line
    return seen, lines


@pytest.mark.parametrize("second_mode", ["whole", "lazy"])
def test_a_second_writer_waits_names_the_holder_and_reuses_its_rows(tmp_path, second_mode):
    store, log = tmp_path / "r.jsonl", tmp_path / "log.txt"
    first = subprocess.Popen([sys.executable, str(CHILD), str(store), str(log), "hold"], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdout.readline().strip() == "HOLDING"  # the first holds the lock before the second starts
    second = subprocess.Popen([sys.executable, str(CHILD), str(store), str(log)] + ["lazy"] * (second_mode == "lazy"),
                              cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting, rest = _stderr_until(second, "being written by")  # the first holds on until the second waits
    finally:
        first.stdin.write("go\n")
        first.stdin.flush()
    out1, err1 = first.communicate(timeout=60)
    out2 = second.stdout.read()
    second.wait(timeout=60)
    err2 = "".join(iter(lambda: rest.get(timeout=10), ""))
    assert first.returncode == 0 and second.returncode == 0, err1 + waiting + err2
    assert f"being written by process {first.pid}" in waiting
    assert "ROWS [0, 1, 2]" in out1 and "ROWS [0, 1, 2]" in out2
    assert log.read_text().splitlines() == ["compute 0", "compute 1", "compute 2"]  # once each, by the first
    assert len(store.read_text().splitlines()) == 3 and len(ResultStore(store)) == 3


def test_the_lock_is_reentrant_and_released(tmp_path):
    s = ResultStore(tmp_path / "r.jsonl")
    with s.writing():
        with s.writing():
            s.put({"a": 1}, {"v": 1})
        s.put({"a": 2}, {"v": 2})
    start = time.monotonic()
    with ResultStore(tmp_path / "r.jsonl").writing() as other:  # free again: no wait
        assert len(other) == 2
    assert time.monotonic() - start < 5


def test_two_store_objects_of_one_process_share_the_lock_instead_of_waiting_for_themselves(tmp_path):
    a, b = ResultStore(tmp_path / "r.jsonl"), ResultStore(tmp_path / "r.jsonl")
    with a.writing():
        a.put({"a": 1}, {"v": 1})
        start = time.monotonic()
        with b.writing():  # would block forever on a second flock
            assert b.get({"a": 1}) == {"v": 1}  # it reads what the other object wrote
            b.put({"a": 2}, {"v": 2})
        assert time.monotonic() - start < 5
    assert len(ResultStore(tmp_path / "r.jsonl")) == 2


@writes_store
def _rows_of(keys, *, store=None):
    return [store.row({"row": k}, lambda k=k: {"value": k}) for k in keys]


def test_a_call_with_its_rows_stored_reads_them_while_another_process_writes_and_one_lacking_a_row_waits(tmp_path):
    store, out = tmp_path / "r.jsonl", {}
    _rows_of([0, 1], store=store)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom helpers.runs.store import store_lock\n"
                               "with store_lock(sys.argv[1]):\n    print('HOLDING', flush=True)\n    time.sleep(600)",
                               str(store)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    writer = threading.Thread(target=lambda: out.update(more=_rows_of([0, 1, 2], store=store)), daemon=True)
    try:
        assert holder.stdout.readline().strip() == "HOLDING"
        reader = threading.Thread(target=lambda: out.update(stored=_rows_of([0, 1], store=store)), daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "a call with nothing to compute waited for the store's writer"
        assert out["stored"] == [{"value": 0}, {"value": 1}]
        writer.start()
        writer.join(timeout=2)
        assert writer.is_alive() and "more" not in out  # row 2 is missing: it waits for the other writer
    finally:
        holder.kill()
        holder.wait()
    writer.join(timeout=60)
    assert out["more"] == [{"value": 0}, {"value": 1}, {"value": 2}]
