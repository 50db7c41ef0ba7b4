"""Hyperparameters as dataclasses, read from EasyEdit-format YAML files as they are.

``load_hparams(method, model_name, hparams)`` accepts None (the file shipped for that model in
``helpers/editing/hparams/<METHOD>/<model>.yaml``), a YAML path, a dict of overrides on the
shipped file, or an hparams object. Unknown keys are an error naming the closest valid key;
EasyEdit's bookkeeping keys that do not change the algorithm (device, fp16, stats_dir, ...)
are accepted and ignored. Numbers written as ``5e-1`` (which YAML reads as text) are read as
floats, as EasyEdit's ``construct_float_from_scientific_notation`` does.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import EdithurtError

HPARAMS_DIR = Path(__file__).resolve().parent / "hparams"
# EasyEdit keys that say where or how to run, not what the algorithm does.
IGNORED_KEYS = {"alg_name", "model_name", "device", "model_parallel", "fp16", "stats_dir",
                "max_length", "batch_size", "archive", "results_dir", "bf16", "alg", "model_class",
                "tokenizer_class", "tokenizer_name", "debug", "train_base", "no_grad_layers",
                "val_batch_size", "accumulate_bs", "val_steps", "log_interval", "val_interval",
                "early_stop_patience", "early_stop_key", "eval_only", "half", "save", "verbose",
                "silent", "max_epochs", "max_iters", "grad_clip", "opt", "final_eval", "model_save_pt",
                "hidden_dim", "n_epochs", "model_name_or_path",
                # MEMIT: read by EasyEdit's hparams class and used by no computation
                "layer_selection",
                # KN: read and unused by the reference (it has no limit on the tokens it edits)
                "n_toks",
                # MEND training bookkeeping: how often to log and evaluate
                "eval_log_interval"}


class HparamsError(EdithurtError, ValueError):
    """An hparams file or dict that cannot be used; the message names the key."""


def shipped_file(method: str, model_name: str, folder: str | os.PathLike | None = None) -> Path:
    """``hparams/<method>/<model>.yaml`` (the method's folder matched in any case: ``AlphaEdit``),
    or ``<folder>/<model>.yaml`` for a method that ships its files elsewhere."""
    if folder is not None:
        return Path(folder) / f"{Path(str(model_name)).name}.yaml"
    folders = {p.name.upper(): p for p in HPARAMS_DIR.iterdir() if p.is_dir()}
    folder = folders.get(method.upper(), HPARAMS_DIR / method.upper())
    return folder / f"{Path(str(model_name)).name}.yaml"


def from_mapping(cls, values: dict, source: str = "hparams"):
    """``cls(**values)`` after checking every key is known and every required key is given."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields and key not in IGNORED_KEYS:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise HparamsError(f"{source}: unknown {cls.__name__} key {key!r}{hint}")
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise HparamsError(f"{source}: missing {cls.__name__} key(s) {missing}")
    return cls(**{k: _typed(fields[k], v, source) for k, v in values.items() if k in fields})


def _typed(f, value, source):
    """A YAML value as the field's type where YAML read a float as text (``5e-1``)."""
    if isinstance(value, str) and (f.type is float or str(f.type).startswith("float")):
        try:
            return float(value)
        except ValueError:
            raise HparamsError(f"{source}: {f.name} should be a number, got {value!r}") from None
    return value


def read_yaml(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise HparamsError(f"{path}: expected a mapping of hparams keys, got {type(data).__name__}")
    return data


def load_hparams(cls, method: str, model_name: str, hparams: Any = None, folder: str | os.PathLike | None = None):
    """Resolve ``hparams`` (None, path, dict of overrides, or ``cls`` instance) to a ``cls``;
    ``folder``: where the method's shipped files are (None: the package's own)."""
    if isinstance(hparams, cls):
        return hparams
    if isinstance(hparams, (str, os.PathLike)):
        values = read_yaml(hparams)
        named = values.get("alg_name")
        if named is not None and str(named).upper() != method.upper():
            raise HparamsError(f"{hparams} is a {named} file (alg_name: {named}), not {method.upper()}")
        return from_mapping(cls, values, str(hparams))
    shipped = shipped_file(method, model_name, folder)
    if not shipped.exists():
        if isinstance(hparams, dict) and not (set(f.name for f in dataclasses.fields(cls)) - set(hparams) - _defaults(cls)):
            return from_mapping(cls, hparams)
        have = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
        raise HparamsError(f"no {method.upper()} hparams shipped for model {model_name!r} (shipped: {have}); "
                           "pass hparams= a YAML path or a complete dict")
    base = read_yaml(shipped)
    if hparams is None:
        return from_mapping(cls, base, str(shipped))
    if isinstance(hparams, dict):
        return from_mapping(cls, {**base, **hparams}, f"{shipped} + overrides")
    raise HparamsError(f"hparams must be None, a YAML path, a dict or a {cls.__name__}, got {type(hparams).__name__}")


def _defaults(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
