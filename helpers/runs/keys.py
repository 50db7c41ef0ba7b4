"""What keys a stored row: a stable hash of the settings that produced it. The settings are
composed by the runs from the fragments each layer hands them (an edit's:
:func:`helpers.editing.keys.edit_key`; a task's scoring: :func:`helpers.evaluation.scoring_key`),
so the store itself knows nothing of editing or evaluation."""
from __future__ import annotations

import hashlib
import json


def settings_key(settings: dict) -> str:
    """A stable hash of a settings dict (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


__all__ = ["settings_key"]
