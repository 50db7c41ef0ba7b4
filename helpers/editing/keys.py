"""What identifies an edit's computation in a stored row's settings: the method, the values its
hparams stand for, and the revision of the method's code (results of another revision are
recomputed, never mixed in)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .hparams import HparamsError, read_yaml, shipped_file
from .registry import method_spec


def hparams_identity(hparams, method: str, model: str) -> object:
    """What identifies ``hparams`` (None, a YAML path, a dict of overrides, or an hparams
    object) for ``method`` on ``model`` (the name its shipped files use,
    ``helpers.model.files_name``): the values they stand for, so that a changed YAML file (the one
    shipped for the model, or the user's) changes the key and its results are recomputed. A path:
    ``{"file", "values"}``; None or overrides: ``{"shipped": the shipped file's values (None where
    there is none), "overrides"}``; an hparams object: its ``repr`` (every value)."""
    if isinstance(hparams, (str, os.PathLike)):
        return {"file": str(hparams), "values": _yaml_values(Path(hparams))}
    if hparams is None or isinstance(hparams, dict):
        folder = method_spec(method).hparams_dir
        return {"shipped": _yaml_values(shipped_file(method, model, folder)), "overrides": hparams}
    return repr(hparams)


def _yaml_values(path: Path) -> dict | None:
    """The values of the YAML file at ``path`` (None where there is none or it cannot be read:
    the edit that reads it reports that, naming the file)."""
    try:
        return read_yaml(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, HparamsError):
        return None


def edit_key(method: str, hparams, model: str) -> dict:
    """The settings fragment of ``method``'s edits with ``hparams`` on ``model`` (the name its
    shipped hparams files use): ``{"method", "hparams", "methods_revision"}``."""
    spec = method_spec(method)
    return {"method": spec.key, "hparams": hparams_identity(hparams, method, model),
            "methods_revision": spec.revision}


__all__ = ["edit_key", "hparams_identity"]
