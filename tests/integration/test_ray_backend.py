"""The sweep on a local Ray cluster of 2 CPU workers: the smoke profile's side-effect grid gives
the local backend's table, with one worker process killed mid-run and nothing lost; a unit that
fails twice the same way is reported while the others finish."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.data, pytest.mark.model, pytest.mark.slow]

ray = pytest.importorskip("ray", reason="the ray extra: pip install .[ray] (make setup installs it)")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"UnitWorker" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _lines(path) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


# a mix of generation and classification tasks with short answers: the backend's bookkeeping is the
# same for all 8
TASKS = ["sentiment", "closed_qa", "ner", "nli"]


def _smoke_grid():
    """The smoke profile's ROME and MEMIT chains — four units: a ROME chain, two MEMIT batches and a
    MEMIT batch-sequential chain — on 4 of the 8 tasks. KN and MEND are left out: their cost (KN's
    attributions over every layer, MEND's network trained in each worker) tests those methods, not
    the backend, and their own tests pin them."""
    from helpers.report import reproduce
    from helpers.runs import sweep

    p = reproduce.load_profile("smoke")["notebooks"]["01_side_effects"]
    grid = sweep.chains(p["instance_sequential"], p["batch_single"], p["batch_sequential"])
    return [c for c in grid if c.method in ("ROME", "MEMIT")], p


def test_the_smoke_grid_on_two_ray_workers_with_one_killed_equals_the_local_table(cluster, tmp_path):
    from helpers.runs import sweep

    grid, p = _smoke_grid()
    run = dict(model="smollm2-135m", tasks=TASKS, n=p["n"], seed=0, hparams=p["hparams"], progress=False)
    start = time.perf_counter()
    local = sweep.side_effects(grid, store=tmp_path / "local.jsonl", backend="local", **run)
    local_s = time.perf_counter() - start

    out, store = {}, tmp_path / "ray.jsonl"

    def ray_run():
        try:
            out["df"] = sweep.side_effects(grid, store=store, backend="ray", **run)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    start = time.perf_counter()
    thread = threading.Thread(target=ray_run)
    thread.start()
    while len(_lines(store)) < 10 and thread.is_alive():
        time.sleep(0.2)
    killed = _worker_pids()
    assert killed, "no Ray worker process found to kill"
    os.kill(killed[0], signal.SIGKILL)
    rows_at_kill = len(_lines(store))
    thread.join(timeout=1800)
    ray_s = time.perf_counter() - start
    assert "error" not in out, repr(out.get("error"))
    print(f"local {local_s:.0f} s, ray (2 workers, one killed after {rows_at_kill} rows) {ray_s:.0f} s")

    keys = [l.split('"key": "')[1][:16] for l in _lines(store)]
    # nothing lost, nothing written twice (chains share their unedited rows: fewer rows than table lines)
    assert len(keys) == len(set(keys)) == len(_lines(tmp_path / "local.jsonl"))
    cols = ["chain", "edits", "task", "metric"]
    a = local.sort_values(cols).reset_index(drop=True)
    b = out["df"].sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[cols + ["value", "valid_rate", "n"]], b[cols + ["value", "valid_rate", "n"]],
                                  check_exact=False, atol=1e-6)
    assert b.gold_nll.tolist() == pytest.approx(a.gold_nll.tolist(), abs=1e-3, nan_ok=True)


def test_a_unit_failing_twice_the_same_way_is_reported_and_the_others_finish(cluster, tmp_path):
    from helpers.runs import sweep
    from helpers.runs.backends.ray_cluster import UnitsFailedError

    grid = [sweep.Chain("KN", 1, (0, 1)), sweep.Chain("ROME", 1, (0, 1))]
    kn = {"steps": 2, "batch_size": 2}  # few integrated-gradient steps: this tests the backend, not KN
    with pytest.raises(UnitsFailedError, match=r"ROME \(instance-sequential\): HparamsError: .*'v_num_grad_step'"):
        sweep.side_effects(grid, "smollm2-135m", ["sentiment"], n=1, hparams={"ROME": {"v_num_grad_step": 3}, "KN": kn},
                           store=tmp_path / "s.jsonl", backend="ray", progress=False)
    done = sweep.side_effects([grid[0]], "smollm2-135m", ["sentiment"], n=1, hparams={"KN": kn},
                              store=tmp_path / "s.jsonl", backend="local", progress=False)
    rows = [json.loads(l)["settings"] for l in _lines(tmp_path / "s.jsonl")]
    # KN's two points were stored by the ray run: their task rows, the checkpoint measures (signals at 0 and 1
    # edits, editing performance at 1) and the trace of its one edit
    assert sum(r["experiment"] == "side_effects" for r in rows) == 2
    assert len(rows) == 6
    assert done.edits.tolist() == [0, 1]
