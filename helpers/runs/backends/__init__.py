"""Where a run's units of work execute: here, one after another (``local``), or on a Ray cluster
(``ray``). Backends know nothing of what a unit computes; a unit is any object with

``label``                          a name for messages
``run(session, store, on_row)``    compute what is missing, writing each row (and any tensors)
                                   to ``store`` as it comes and calling ``on_row(note)`` per row
``missing(store) -> set[str]``     the keys of the rows it has still to compute
``settings() -> (rows, states)``   the settings of every row and tensor state it may read

and a run is a list of phases, each a list of units that may run in any order once the
phases before it have finished. ``session`` is a :class:`helpers.runs.session.Session`.
"""
from __future__ import annotations

from ...errors import unknown

BACKENDS = ("local", "ray")


def get_backend(name: str = "local", resources: dict | None = None):
    """The backend called ``name``. ``resources`` (Ray only): what one worker asks for —
    ``cpus_per_worker``, ``gpus_per_worker``, ``memory_gb_per_worker``, ``workers``,
    ``threads_per_worker``, ``cluster_cpus`` (a profile's ``resources`` section)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from .ray_cluster import RayBackend  # imports Ray only when asked for

        return RayBackend(resources or {})
    raise unknown("backend", name, BACKENDS)


__all__ = ["BACKENDS", "get_backend"]
