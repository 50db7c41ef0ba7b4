"""The results store: one JSON line per result row, keyed by the settings that produced it.

Rows are appended (and flushed to disk) as soon as they are computed, so a crash loses at
most the unit in progress; a rerun with the same settings finds them and skips the work.
Every record carries the store's format number and what produced it (package, torch and
transformers versions; the seed and settings are the key's). JSON only (never pickle).

A line cut short by a crash can only be the last one: a reader skips it (it may be another
writer's line in progress), and the next writer, holding the lock, cuts the file back to its last
complete line. Anything else that cannot be read — a bad line before the end, a record of another
format — is an error naming the file and line.

Beside the rows: tensors (safetensors, ``<store>_tensors/<key>.safetensors``) and per-example
records (Parquet, ``<store>_examples/<key>.parquet``), each named by its row's key.

One writer at a time: a run that computes rows holds the store's lock (:meth:`ResultStore.writing`,
a lock file ``<store>.lock`` beside it); a second process that wants to write waits for it,
saying which process holds it, and then reads what the first stored instead of computing it
again. ``writing(lazy=True)`` takes the lock only at the first result the store lacks, so a run
whose results are all stored reads them while another process writes other rows.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from ..errors import EdithurtError
from ..files import atomic_write_text, is_disk_full, load_parquet, load_safetensors, save_parquet, save_safetensors
from .keys import settings_key
from .store_lock import store_lock

FORMAT = 2  # 1: records without "format" or provenance (before 2026-11-26)


class StoreError(EdithurtError, ValueError):
    """A results store (or a tensor file beside it) that cannot be read or written."""


class DiskFullError(StoreError, OSError):
    """The disk filled up while a result was written; the store is intact up to the last row."""


def provenance() -> dict:
    """The versions that produce a row (recorded with it, not part of its key)."""
    from importlib import metadata

    import torch
    import transformers

    try:
        package = metadata.version("edithurt")
    except metadata.PackageNotFoundError:
        package = "source"
    return {"edithurt": package, "torch": torch.__version__, "transformers": transformers.__version__}


class ResultStore:
    """Append-only JSONL file of ``{"format", "key", "settings", "row", "made_by"}`` records,
    and tensor files beside it. ``ResultStore(None)`` keeps everything in memory only (a run
    that was given no store still shares rows between its parts, but cannot resume)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path)
        self._rows: dict[str, dict] = {}
        self._tensors: dict[str, dict] = {}  # in-memory stores only
        self._examples: dict[str, pd.DataFrame] = {}  # in-memory stores only
        self._made_by = None
        self._lock_depth = 0
        self._lazy_depth = 0  # open writing(lazy=True) blocks
        self._held = None  # the lock a lazy block took at its first miss, released when the block ends
        self._lazy_wait = 60.0  # the outermost lazy block's wait_message_every
        self._size = 0  # bytes of the file read so far (a reader reloads when it grows)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._load()

    def _load(self, repair: bool = False) -> None:
        """Read every complete line. A last line without its newline is a write cut short by a
        crash — or, without the lock, another process's write in progress: it is skipped, and
        cut from the file only by the lock's holder (``repair``)."""
        self._rows = {}
        data = self.path.read_bytes()
        self._size = len(data)
        lines = data.split(b"\n")
        if lines and lines[-1].strip():  # no newline at the end
            if repair:
                self._cut_to(len(data) - len(lines[-1]), lines[-1])
                self._size = len(data) - len(lines[-1])
            lines = lines[:-1]
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise StoreError(
                    f"{self.path}, line {lineno}: not a JSON record ({e.__class__.__name__}: {e}); the file was "
                    "changed by hand or damaged. Delete that line (its row is recomputed) or move the file away "
                    "to start afresh") from None
            if not isinstance(rec, dict) or rec.get("format", 1) != FORMAT:
                found = rec.get("format", 1) if isinstance(rec, dict) else "?"
                hint = (f"convert it with `python -m helpers.runs.store upgrade {self.path}` (keeps every row) or move it "
                        "away to recompute" if found == 1 else "use the version of this package that wrote it, or "
                        "move the file away to recompute")
                raise StoreError(f"{self.path}, line {lineno}: a record of results-store format {found}; this "
                                 f"version reads format {FORMAT}: {hint}")
            if not {"key", "settings", "row"} <= set(rec):
                raise StoreError(f"{self.path}, line {lineno}: a record without key/settings/row; delete that line "
                                 "or move the file away")
            self._rows[rec["key"]] = rec

    def _cut_to(self, size: int, tail: bytes) -> None:
        import warnings

        warnings.warn(f"{self.path}: dropped an unfinished last line ({len(tail)} bytes, a write cut short by a "
                      "crash); its row will be recomputed", stacklevel=3)
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    @contextlib.contextmanager
    def writing(self, wait_message_every: float = 60.0, *, lazy: bool = False):
        """Hold this store's lock while computing and writing rows: another process that asks
        for it waits (saying which process holds it, again every ``wait_message_every``
        seconds) and, once it has it, reads the rows written meanwhile, so nothing is computed
        twice. Re-entrant; store objects of one process share the lock; in-memory stores need
        none.

        ``lazy``: take the lock only when the block first misses a result (a ``get``,
        ``get_tensors`` or ``get_examples`` that finds nothing, or a write), then hold it to the
        block's end; after taking it the store is read again, so a result another process
        stored meanwhile is found, not computed. A block whose results are all stored never
        waits. Every computation must follow a miss (the store's own ``row`` and ``tensors``
        do)."""
        if self.path is None or self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        if lazy:
            if not self._lazy_depth:
                self._lazy_wait = wait_message_every
            self._lazy_depth += 1
            try:
                yield self
            finally:
                self._lazy_depth -= 1
                if not self._lazy_depth and self._held is not None:
                    held, self._held, self._lock_depth = self._held, None, 0
                    held.close()
            return
        if self._lazy_depth:  # inside a lazy block: take the lock now and keep it to that block's end
            self._take_lock(wait_message_every)
            with self.writing():
                yield self
            return
        with store_lock(self.path, wait_message_every):
            self._lock_depth = 1
            try:
                if self.path.exists():
                    self._load(repair=True)  # what another process or store object stored meanwhile
                yield self
            finally:
                self._lock_depth = 0

    def _take_lock(self, wait_message_every: float = 60.0) -> None:
        """Inside a lazy ``writing`` block: take the lock (waiting for another writer), kept
        until the block ends, and read the store again."""
        self._held = contextlib.ExitStack()  # set first: an interrupt from here on is released with the block
        self._held.enter_context(store_lock(self.path, wait_message_every))
        self._lock_depth = 1
        if self.path.exists():
            self._load(repair=True)

    def _missed(self) -> bool:
        """Whether a miss must take the lock first (inside a lazy block that has not taken it);
        if so it is taken here and the caller looks again."""
        if self.path is None or self._lock_depth or not self._lazy_depth:
            return False
        self._take_lock(self._lazy_wait)
        return True

    def get(self, settings: dict) -> dict | None:
        rec = self._rows.get(settings_key(settings))
        if rec is None and self.path is not None and self._size != _size_of(self.path):
            self._load(repair=bool(self._lock_depth))  # the file grew: rows another writer stored
            rec = self._rows.get(settings_key(settings))
        if rec is None and self._missed():  # the lock taken and the store read again
            rec = self._rows.get(settings_key(settings))
        return None if rec is None else rec["row"]

    def put(self, settings: dict, row: dict) -> None:
        if self._made_by is None:
            self._made_by = provenance()
        rec = {"format": FORMAT, "key": settings_key(settings), "settings": settings, "row": row,
               "made_by": self._made_by}
        data = (json.dumps(rec, default=_jsonable) + "\n").encode("utf8")
        if self.path is None:
            self._rows[rec["key"]] = json.loads(data)
            return
        with self.writing():
            self._append(data)
            self._size = _size_of(self.path)
        self._rows[rec["key"]] = json.loads(data)

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except BaseException as e:  # a full disk, or Ctrl-C between two writes
                os.ftruncate(fd, size)  # no half line left behind
                if isinstance(e, OSError) and is_disk_full(e):
                    raise DiskFullError(
                        f"the disk is full: a result row could not be written to {self.path}. The store is intact "
                        "up to its last complete row; free some space and run the same command again to resume "
                        "from there") from e
                raise
        finally:
            os.close(fd)

    def row(self, settings: dict, compute) -> dict:
        """The stored row of ``settings``, or ``compute()`` — stored as it returns (holding
        the store's lock while computing)."""
        if self.get(settings) is not None:
            return self.get(settings)
        with self.writing():
            return _stored_or_computed(self.get, self.put, settings, compute)

    def tensors(self, settings: dict, compute) -> dict:
        """The stored tensors of ``settings``, or ``compute()`` — stored as it returns (holding
        the store's lock while computing)."""
        found = self.get_tensors(settings)
        if found is not None:
            return found
        with self.writing():
            return _stored_or_computed(self.get_tensors, self.put_tensors, settings, compute)

    def __len__(self) -> int:
        return len(self._rows)

    # tensors (edit updates) beside the rows: safetensors files named by the settings' key
    def _tensor_path(self, settings: dict) -> Path:
        return self.path.parent / f"{self.path.stem}_tensors" / f"{settings_key(settings)}.safetensors"

    def put_tensors(self, settings: dict, tensors: dict) -> None:
        if self.path is None:
            self._tensors[settings_key(settings)] = {k: v.detach().cpu().clone() for k, v in tensors.items()}
            return
        _save_beside(save_safetensors, tensors, self._tensor_path(settings))

    def get_tensors(self, settings: dict) -> dict | None:
        if self.path is None:
            return self._tensors.get(settings_key(settings))
        path = self._tensor_path(settings)
        if not path.exists() and not (self._missed() and path.exists()):
            return None
        return load_safetensors(path, "delete it and it is recomputed")

    # per-example records beside the rows: Parquet files named by the settings' key
    def _examples_path(self, settings: dict) -> Path:
        return self.path.parent / f"{self.path.stem}_examples" / f"{settings_key(settings)}.parquet"

    def put_examples(self, settings: dict, records: pd.DataFrame) -> None:
        """The per-example records behind the row of ``settings`` (written before the row, so
        a stored row always has its records)."""
        if self.path is None:
            self._examples[settings_key(settings)] = records.copy()
            return
        _save_beside(save_parquet, records, self._examples_path(settings))

    def get_examples(self, settings: dict) -> pd.DataFrame | None:
        if self.path is None:
            found = self._examples.get(settings_key(settings))
            return None if found is None else found.copy()
        path = self._examples_path(settings)
        if not path.exists() and not (self._missed() and path.exists()):
            return None
        return load_parquet(path, "delete it and its row's line in the store, and both are recomputed")

    def frame(self) -> pd.DataFrame:
        """Every stored row, with its settings as extra columns."""
        return pd.DataFrame([{**r["settings"], **r["row"]} for r in self._rows.values()])


def upgrade(path: str | os.PathLike) -> int:
    """Rewrite a format-1 store as format 2 (rows unchanged; ``made_by`` marked unknown).
    Returns the number of records converted."""
    path = Path(path)
    with store_lock(path):  # no writer appends while the file is rewritten
        return _upgrade(path)


def _upgrade(path: Path) -> int:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a cut-short line: recomputed
        if rec.get("format", 1) == 1:
            rec = {"format": FORMAT, **rec, "made_by": {"edithurt": "unknown (written before format 2)"}}
        out.append(json.dumps(rec))
    atomic_write_text(path, "\n".join(out) + "\n")
    return len(out)


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"cannot store {type(x).__name__} in a result row")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "upgrade":
        sys.exit("usage: python -m helpers.runs.store upgrade STORE.jsonl")
    print(f"{sys.argv[2]}: {upgrade(sys.argv[2])} records now in format {FORMAT}")


def _save_beside(save, value, path: Path) -> None:
    """``save(value, path)`` (an atomic writer of :mod:`helpers.files`), a full disk said plainly."""
    try:
        save(value, path)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(f"the disk is full: {path} could not be written (nothing half-written was "
                                "kept); free some space and run the same command again to resume") from e
        raise


def _size_of(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _stored_or_computed(get, put, settings, compute):
    found = get(settings)
    if found is None:
        found = compute()
        put(settings, found)
    return found


def open_store(store: str | os.PathLike | ResultStore | None) -> ResultStore:
    """``store`` as a :class:`ResultStore`: a path opens (or creates) that file, None gives an
    in-memory store, a store is returned as it is."""
    return store if isinstance(store, ResultStore) else ResultStore(store)
