"""Methods and tasks of a user's own, loaded by name: each entry of a profile's ``extensions`` (or
of a notebook's ``extensions`` parameter) is a module that registers them — with
:func:`helpers.editing.register_method` and :func:`helpers.evaluation.register_task` — when
imported, or in a ``register()`` function it defines (docs/extending.md)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import EdithurtError


class ExtensionError(EdithurtError, ImportError):
    """An extension that cannot be found or loaded."""


def load_extensions(extensions: Sequence[str]) -> list:
    """Import each of ``extensions`` — a dotted module name (installed, or on ``sys.path``) or the
    path of a ``.py`` file — and call its ``register()`` where it defines one. Returns the modules.
    Loading one twice registers it again (registrations replace their own)."""
    modules = []
    for entry in extensions or []:
        entry = str(entry)
        if entry.endswith(".py"):
            path = Path(entry).expanduser().resolve()
            if not path.is_file():
                raise ExtensionError(f"extension {entry!r}: no such file ({path})")
            name = f"edithurt_extension_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                module = importlib.import_module(entry)
            except ModuleNotFoundError as e:
                raise ExtensionError(f"extension {entry!r} cannot be imported ({e}); give an installed module's "
                                     "dotted name, or the path of a .py file") from None
        if callable(getattr(module, "register", None)):
            module.register()
        modules.append(module)
    return modules


__all__ = ["load_extensions", "ExtensionError"]
