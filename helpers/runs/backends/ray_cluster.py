"""The Ray backend (``backend="ray"``; ``pip install .[ray]``): a run's units on a Ray cluster.

One actor per worker slot (a GPU, or ``cpus_per_worker`` CPUs) loads the model once and takes
units one after another (for a sweep, a unit is one chain: one method, regulariser and seed,
edited in sequence and evaluated at its checkpoints). Workers never write the results store:
they send each row (and each tensor state) to the driver through a queue the moment it is
computed, and the driver alone appends them — so rows from many workers never collide, and a
worker killed mid-unit loses only the evaluation it was in. Resume works as in local mode: a
unit is given the rows and states already stored and skips them. A unit whose worker dies, or
that raises, is run again (on any worker, from what is stored by then); one that fails the
same way twice is reported with its error and the others go on.

The cluster is the one ``RAY_ADDRESS`` names, or a local one started here.
"""
from __future__ import annotations

import os
import time

from ...errors import EdithurtError
from ..session import Session, model_name
from ..keys import settings_key


class UnitsFailedError(EdithurtError, RuntimeError):
    """Units of a run that failed twice the same way; every other unit finished and is stored."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EdithurtError("backend='ray' needs Ray: `pip install .[ray]` (`make setup` installs it)") from None
    return ray


class ForwardingStore:
    """What a worker sees as the results store: the rows and states the driver had when the
    unit started, and a queue to the driver for everything new (never a file)."""

    def __init__(self, rows: dict, states: dict, queue):
        self.rows, self.states, self.queue = dict(rows), dict(states), queue
        self.path = "the driver's results store"

    def get(self, settings):
        return self.rows.get(settings_key(settings))

    def put(self, settings, row):
        self.rows[settings_key(settings)] = row
        self.queue.put(("row", settings, row))

    def get_tensors(self, settings):
        return self.states.get(settings_key(settings))

    def put_tensors(self, settings, tensors):
        tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        self.states[settings_key(settings)] = tensors
        self.queue.put(("tensors", settings, tensors))

    def put_examples(self, settings, records):
        # the records travel before their row, so the driver stores them first too
        self.queue.put(("examples", settings, records))

    def __len__(self):
        return len(self.rows)


class UnitWorker:
    """A Ray actor: one model in memory, units run one after another."""

    def __init__(self, model: str, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.session = Session(model)

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit, rows: dict, states: dict, queue) -> int:
        unit.run(self.session, ForwardingStore(rows, states, queue), lambda note="": None)  # the driver counts rows
        return os.getpid()


class RayBackend:
    name = "ray"

    def __init__(self, resources: dict):
        self.resources = dict(resources)

    def run(self, phases, model, store, on_row) -> None:
        """Compute every unit of ``phases`` on Ray, writing to ``store`` (the driver's
        :class:`~helpers.runs.store.ResultStore`); ``on_row()`` per row received."""
        ray = _import_ray()
        from ray.util.queue import Queue

        if store.path is None:
            raise EdithurtError("backend='ray' needs store= a path: the workers' rows reach the driver through it")
        res = self.resources
        started = not ray.is_initialized()
        if started:
            address = os.environ.get("RAY_ADDRESS")
            # the workers find the data, caches and hub folders the driver uses
            env = {k: os.environ[k] for k in ("EDITHURT_DATA", "EDITHURT_CACHE", "HF_HOME", "HF_HUB_OFFLINE")
                   if k in os.environ}
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None,
                     **({} if address else {"num_cpus": res.get("cluster_cpus") or os.cpu_count()}))
        cpus = res.get("cpus_per_worker", 1)
        gpus = res.get("gpus_per_worker", 0)
        cluster = ray.cluster_resources()
        slots = max(1, int(cluster.get("GPU", 0) // gpus) if gpus else int(cluster.get("CPU", 1) // cpus))
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": -1}
        if res.get("memory_gb_per_worker"):
            options["memory"] = int(res["memory_gb_per_worker"] * 2**30)
        actor = ray.remote(UnitWorker)
        workers = [actor.options(**options).remote(model_name(model), res.get("threads_per_worker") or cpus)
                   for _ in range(min(res.get("workers") or slots, slots))]
        queue = Queue(actor_options={"num_cpus": 0})  # holds no CPU a worker needs

        def drain():
            while not queue.empty():
                kind, settings, payload = queue.get()
                if kind == "row":
                    if store.get(settings) is None:  # two units sharing a row write it once
                        store.put(settings, payload)
                        on_row()
                elif kind == "examples":
                    if store.get(settings) is None:
                        store.put_examples(settings, payload)
                else:
                    store.put_tensors(settings, payload)

        failed = []
        try:
            for units in phases:
                failed += _run_units(ray, [u for u in units if u.missing(store)], workers, store, queue, drain)
            drain()
        finally:
            # the workers' models leave the cluster's memory; a cluster started here stops (rather than
            # at the interpreter's exit, where Ray's shutdown under SIGTERM prints stack traces)
            for w in workers:
                ray.kill(w)
            if started:
                ray.shutdown()
        if failed:
            raise UnitsFailedError("these units failed twice the same way (every other unit finished and is stored):\n"
                                   + "\n".join(f"- {label}: {err}" for label, err in failed))


def _known(unit, store) -> tuple[dict, dict]:
    """The rows and tensor states already stored that ``unit`` may read, by key."""
    row_settings, state_settings = unit.settings()
    rows = {settings_key(s): store.get(s) for s in row_settings}
    states = {settings_key(s): store.get_tensors(s) for s in state_settings}
    return ({k: v for k, v in rows.items() if v is not None}, {k: v for k, v in states.items() if v is not None})


RESTART_WAIT_S = 600  # a restarted worker loads the model again: on a busy machine, minutes


def _run_units(ray, units, workers, store, queue, drain) -> list[tuple[str, str]]:
    from ray.exceptions import RayActorError

    todo = list(units)
    errors: dict[int, list[str]] = {}
    running = {}  # future -> (unit, worker)
    # A worker whose process died is restarted by Ray (max_restarts=-1), but a call made before its
    # constructor has run again fails at once with RayActorError: it gets no unit until a probe
    # (its pid) answers, so a restart never counts as a unit's failure.
    probing = {}  # probe future -> (worker, when its restart began)
    idle = list(workers)
    failed = []
    while todo or running:
        while todo and idle:
            unit = todo.pop(0)
            worker = idle.pop(0)
            rows, states = _known(unit, store)
            running[worker.run.remote(unit, rows, states, queue)] = (unit, worker)
        done, _ = ray.wait(list(running) + list(probing), num_returns=1, timeout=0.5)
        drain()
        for fut in done:
            if fut in probing:
                worker, since = probing.pop(fut)
                try:
                    ray.get(fut)
                    idle.append(worker)
                except RayActorError:
                    if time.monotonic() - since < RESTART_WAIT_S:  # else the worker is left out of the run
                        time.sleep(0.5)
                        probing[worker.pid.remote()] = (worker, since)
                continue
            unit, worker = running.pop(fut)
            try:
                ray.get(fut)
            except Exception as e:  # noqa: BLE001 - any failure of a unit is retried once, then reported
                drain()
                cause = getattr(e, "cause", None) or e  # a RayTaskError wraps what the unit raised
                msg = "its worker died (killed, or out of memory)" if isinstance(e, RayActorError) else \
                    f"{type(cause).__name__}: {str(cause).strip()}"
                history = errors.setdefault(id(unit), [])
                history.append(msg)
                if len(history) >= 2 and history[-1] == history[-2]:
                    failed.append((unit.label, msg))
                else:
                    todo.append(unit)
                if isinstance(e, RayActorError):
                    probing[worker.pid.remote()] = (worker, time.monotonic())
                    continue
            idle.append(worker)
        if todo and not idle and not running and not probing:  # every worker is gone for good
            failed += [(u.label, "no worker came back after a restart") for u in todo]
            break
    return failed


__all__ = ["RayBackend", "UnitsFailedError", "ForwardingStore", "UnitWorker"]
