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

    # tensors (edit updates) beside the rows: safetensors files named by the settings' key
    def _tensor_path(self, settings: dict) -> Path:
        return self.path.parent / f"{self.path.stem}_tensors" / f"{settings_key(settings)}.safetensors"

    def put_tensors(self, settings: dict, tensors: dict) -> None:
        from safetensors.torch import save_file

        path = self._tensor_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)

    def get_tensors(self, settings: dict) -> dict | None:
        from safetensors.torch import load_file

        path = self._tensor_path(settings)
        return load_file(str(path)) if path.exists() else None

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


def mean_sd(df: pd.DataFrame, by, columns) -> pd.DataFrame:
    """Mean, standard deviation and count of ``columns`` per group of ``by`` (groups in the
    order they first appear): columns ``<c>``, ``<c>_sd`` and ``n``."""
    by = [by] if isinstance(by, str) else list(by)
    g = df.groupby(by, sort=False)
    out = g[list(columns)].mean()
    for c in columns:
        out[f"{c}_sd"] = g[c].std(ddof=1)
    out["n"] = g.size()
    return out.reset_index()


def save_figure(fig, path_without_suffix) -> None:
    """``<path>.png`` and ``<path>.pdf``."""
    path = Path(path_without_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=130)
    fig.savefig(path.with_suffix(".pdf"))
