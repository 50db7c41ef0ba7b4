"""Writing files so that a crash never leaves half of one, and reading back the tensor files
this package wrote (safetensors only: a file of any other kind is refused, never executed)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import CacheError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` to ``path`` through a temporary file renamed over it: a reader sees the old
    file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf8")
    os.replace(tmp, path)


def _durable_rename(tmp: Path, path: Path) -> None:
    """``tmp`` renamed over ``path`` after its bytes reach the disk, and the rename itself made
    durable: a row stored after this call never points at an empty or missing file after a
    power cut."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_safetensors(tensors: dict, path: str | os.PathLike) -> None:
    """``tensors`` (name -> tensor) to ``path`` as safetensors, atomically (a temporary file
    renamed over it; on failure nothing half-written is kept and the error is raised)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        _durable_rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def save_parquet(frame, path: str | os.PathLike) -> None:
    """``frame`` (a pandas DataFrame) to ``path`` as Parquet, atomically (a temporary file
    renamed over it; on failure nothing half-written is kept and the error is raised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        _durable_rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def load_parquet(path: str | os.PathLike, fix: str):
    """A Parquet file this package wrote, as a DataFrame; a damaged one is a
    :class:`CacheError` saying ``fix``."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise CacheError(f"{path} is not a readable Parquet file ({e}); it was damaged or not written by this "
                         f"package: {fix}") from None


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def load_safetensors(path: str | os.PathLike, fix: str) -> dict:
    """The tensors of a safetensors file this package wrote as a cache. Anything else found
    there (a damaged file, a pickle) is refused with :class:`CacheError` — never executed.
    ``fix``: what the user should do about it (said in the error)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CacheError(f"{path} is not a readable safetensors file ({e}); it was damaged or not written by this "
                         f"package, and is not loaded: {fix}") from None
