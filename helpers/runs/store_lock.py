"""The results store's lock: one writer at a time (``flock`` on ``<store>.lock``), shared and
counted within a process, saying which process holds it while another waits."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

_HELD: dict[str, dict] = {}  # lock files this process holds: {path: {"fd", "count", "pid"}}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def store_lock(path: str | os.PathLike, wait_message_every: float = 60.0):
    """The exclusive lock of the store at ``path`` (``flock`` on ``<path>.lock``): waits for
    another process that holds it, saying which one. Within one process it is shared and counted
    (a second ``flock`` would wait for the process itself); it is released when its last user
    leaves."""
    lock_path = Path(path).with_name(Path(path).name + ".lock")
    key = str(lock_path.resolve())
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is not None and entry["pid"] == os.getpid():
            entry["count"] += 1
        else:
            entry = None
    if entry is None:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            told = None
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if told is None or now - told >= wait_message_every:
                        holder = os.pread(fd, 4096, 0).decode("utf8", "replace").strip() or "another process"
                        tqdm.write(f"results store {path} is being written by {holder}; waiting for it to finish "
                                   "(its rows are then read, not computed again)", file=sys.stderr)  # above a bar
                        sys.stderr.flush()
                        told = now
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200] or 'python'})".encode("utf8"), 0)
        except BaseException:  # Ctrl-C while waiting or just after: closing the descriptor releases the lock
            os.close(fd)
            raise
        entry = {"fd": fd, "count": 1, "pid": os.getpid()}
        with _HELD_GUARD:
            _HELD[key] = entry
    try:
        yield
    finally:
        with _HELD_GUARD:
            entry["count"] -= 1
            last = entry["count"] == 0
            if last:
                _HELD.pop(key, None)
        if last:
            os.ftruncate(entry["fd"], 0)
            os.close(entry["fd"])  # closing the descriptor releases the lock


__all__ = ["store_lock"]
