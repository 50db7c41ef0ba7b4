"""Running a sweep's chains on a Ray cluster (``backend="ray"``; ``pip install .[ray]``).

A unit of work is one chain (:class:`helpers.sweep.Chain`: one method, regulariser, model and
seed, edited in sequence and evaluated at its checkpoints). One actor per worker slot (a GPU, or
``cpus_per_worker`` CPUs) loads the model once and takes units one after another. Workers never
write the results store: they send each row (and each checkpoint's edited matrices) to the
driver through a queue the moment it is computed, and the driver alone appends them — so rows
from many workers never collide, and a worker killed mid-unit loses only the evaluation it was
in. Resume works as in local mode: a unit is given the rows and edit states already stored and
skips them. A unit whose worker dies, or that raises, is run again (on any worker, from what is
stored by then); one that fails the same way twice is reported with its error and the others go on.

The cluster is the one ``RAY_ADDRESS`` names, or a local one started here. Resources per worker
come from the profile's ``resources`` (``cpus_per_worker``, ``gpus_per_worker``,
``memory_gb_per_worker``, ``workers``), passed on as ``EDITHURT_RAY_RESOURCES`` (JSON).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from .errors import EdithurtError
from .results import settings_key


class UnitsFailedError(EdithurtError, RuntimeError):
    """Units of a sweep that failed twice the same way; every other unit finished and is stored."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EdithurtError("backend='ray' needs Ray: `pip install .[ray]` (`make setup` installs it)") from None
    return ray


def resources_from_env() -> dict:
    raw = os.environ.get("EDITHURT_RAY_RESOURCES")
    return json.loads(raw) if raw else {}


class ForwardingStore:
    """What a worker sees as the results store: the rows and edit states the driver had when
    the unit started, and a queue to the driver for everything new (never a file)."""

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
        self.queue.put(("tensors", settings, {k: v.detach().cpu().clone() for k, v in tensors.items()}))

    def __len__(self):
        return len(self.rows)


class SweepWorker:
    """A Ray actor: one model in memory, chains run one after another."""

    def __init__(self, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)

    def pid(self) -> int:
        return os.getpid()

    def run(self, chain, params: dict, rows: dict, states: dict, queue) -> int:
        from .sweep import side_effects

        store = ForwardingStore(rows, states, queue)
        side_effects([chain], params["model"], params["tasks"], params["n"], params["seed"], params["protocol"],
                     hparams=params["hparams"], store=store, progress=False, backend="local")
        return os.getpid()


def run_plans(plans: Sequence, store, params: dict, bar) -> None:
    """Compute every missing row of ``plans`` (see :func:`helpers.sweep.side_effects`) on Ray,
    writing them to ``store`` (the driver's :class:`~helpers.results.ResultStore`)."""
    ray = _import_ray()
    from ray.util.queue import Queue

    if store is None:
        raise EdithurtError("backend='ray' needs store= a path: the workers' rows reach the driver through it")
    resources = resources_from_env()
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        # the workers find the data, caches and hub folders the driver uses
        env = {k: os.environ[k] for k in ("EDITHURT_DATA", "EDITHURT_CACHE", "HF_HOME", "HF_HUB_OFFLINE")
               if k in os.environ}
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None,
                 **({} if address else {"num_cpus": resources.get("cluster_cpus") or os.cpu_count()}))
    cpus = resources.get("cpus_per_worker", 1)
    gpus = resources.get("gpus_per_worker", 0)
    cluster = ray.cluster_resources()
    slots = max(1, int(cluster.get("GPU", 0) // gpus) if gpus else int(cluster.get("CPU", 1) // cpus))
    workers_wanted = min(resources.get("workers") or slots, slots)
    options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": -1}
    if resources.get("memory_gb_per_worker"):
        options["memory"] = int(resources["memory_gb_per_worker"] * 2**30)
    actor = ray.remote(SweepWorker)
    workers = [actor.options(**options).remote(resources.get("threads_per_worker") or cpus)
               for _ in range(workers_wanted)]
    queue = Queue(actor_options={"num_cpus": 0})  # holds no CPU a worker needs

    def drain():
        while not queue.empty():
            kind, settings, payload = queue.get()
            if kind == "row":
                if store.get(settings) is None:  # two units sharing a row write it once
                    store.put(settings, payload)
                    bar.update()
            else:
                store.put_tensors(settings, payload)

    # the unedited rows first (every chain of the same model and sample shares them), then the chains
    first = [p for p in plans if p.missing_at(0)]
    phases = [[_unedited(first[0])]] if first else []
    phases.append([p for p in plans if p.missing()])
    failed = []
    try:
        for units in phases:
            failed += _run_units(ray, units, workers, store, params, queue, drain)
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


def _unedited(plan):
    """A unit computing only ``plan``'s unedited point."""
    import copy

    from .sweep import Chain

    unit = copy.copy(plan)
    unit.chain = Chain(plan.chain.method, plan.chain.batch_size, (0,), plan.chain.regularizer, plan.chain.setting,
                       plan.chain.seed)
    return unit


def _known(plan, store) -> tuple[dict, dict]:
    rows = {settings_key(plan.row_key(c, t)): store.get(plan.row_key(c, t))
            for c in plan.chain.checkpoints for t in plan.tasks}
    states = {}
    for c in plan.chain.checkpoints:
        if c > 0:
            t = store.get_tensors(plan.state_key(c))
            if t is not None:
                states[settings_key(plan.state_key(c))] = t
    return {k: v for k, v in rows.items() if v is not None}, states


def _run_units(ray, units, workers, store, params, queue, drain) -> list[tuple[str, str]]:
    from ray.exceptions import RayActorError

    todo = list(units)
    errors: dict[int, list[str]] = {}
    running = {}  # future -> (unit index, worker)
    idle = list(workers)
    failed = []
    while todo or running:
        while todo and idle:
            unit = todo.pop(0)
            worker = idle.pop(0)
            rows, states = _known(unit, store)
            fut = worker.run.remote(unit.chain, params, rows, states, queue)
            running[fut] = (unit, worker)
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        drain()
        for fut in done:
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
                    failed.append((unit.chain.label, msg))
                else:
                    todo.append(unit)
                if isinstance(e, RayActorError):
                    time.sleep(0.5)  # the actor restarts (max_restarts=-1) before it takes the next unit
            idle.append(worker)
    return failed


__all__ = ["run_plans", "UnitsFailedError", "ForwardingStore", "SweepWorker"]
