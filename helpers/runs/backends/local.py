"""The local backend: every unit here, in this process, one after another."""
from __future__ import annotations

from ..session import Session


class LocalBackend:
    name = "local"

    def run(self, phases, model, store, on_row) -> None:
        """Run every unit of ``phases`` on ``model`` (a name or a loaded model), in order."""
        session = Session(model)
        for units in phases:
            for unit in units:
                unit.run(session, store, on_row)
