"""Runs: the results store (:mod:`.store`), the model a run works on (:mod:`.session`),
experiments on single edits (:mod:`.experiments`), side-effect sweeps over chains of edits
(:mod:`.sweep`) and where their units execute (:mod:`.backends`)."""
from .session import shared_model
from .store import ResultStore, open_store

__all__ = ["ResultStore", "open_store", "shared_model"]
