"""The results store: one JSON line per result row, keyed by the settings that produced it.

Rows are appended (and flushed to disk) as soon as they are computed, so a crash loses at
most the unit in progress; a rerun with the same settings finds them and skips the work.
JSON only (never pickle).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd


def settings_key(settings: dict) -> str:
    """A stable hash of a settings dict (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResultStore:
    """Append-only JSONL file of ``{"key", "settings", "row"}`` records."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, dict] = {}
        if self.path.exists():
            for lineno, line in enumerate(self.path.read_text(encoding="utf8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # A line cut short by a crash: everything before it is kept, it is redone.
                    continue
                self._rows[rec["key"]] = rec

    def get(self, settings: dict) -> dict | None:
        rec = self._rows.get(settings_key(settings))
        return None if rec is None else rec["row"]

    def put(self, settings: dict, row: dict) -> None:
        rec = {"key": settings_key(settings), "settings": settings, "row": row}
        with open(self.path, "a", encoding="utf8") as f:
            f.write(json.dumps(rec, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._rows[rec["key"]] = json.loads(json.dumps(rec, default=_jsonable))

    def __len__(self) -> int:
        return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """Every stored row, with its settings as extra columns."""
        return pd.DataFrame([{**r["settings"], **r["row"]} for r in self._rows.values()])


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"cannot store {type(x).__name__} in a result row")


def write_table(df: pd.DataFrame, path: str | os.PathLike, floatfmt: str = ".3f") -> None:
    """``df`` as CSV at ``path`` and as a Markdown table beside it (same name, ``.md``);
    each written to a temporary file first and renamed, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path.with_suffix(".csv"), df.to_csv(index=False))
    _atomic_write(path.with_suffix(".md"), to_markdown(df, floatfmt) + "\n")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf8")
    os.replace(tmp, path)
