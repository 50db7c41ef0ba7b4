"""Where the data and the caches live.

The paper's data folder is found, in this order, at ``$EDITHURT_DATA``, at ``data/`` in the
repository, and at ``../shared/data/edithurt`` beside the repository. Caches (the dequantised
embedded model, key statistics) go to ``$EDITHURT_CACHE``, default ``~/.cache/edithurt``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a folder must hold to be the released layout.
REQUIRED = ("edited-data/zsre.json", "task-data")

HOW_TO_GET_DATA = (
    "Get the paper's data with `make data` (clones the authors' repository when the network "
    "allows), or put the released folders `edited-data/` and `task-data/` in `data/`, or point "
    "EDITHURT_DATA at a folder that holds them."
)


def candidate_data_dirs() -> list[tuple[str, Path]]:
    out = []
    if os.environ.get("EDITHURT_DATA"):
        out.append(("EDITHURT_DATA", Path(os.environ["EDITHURT_DATA"]).expanduser()))
    out.append(("data/", REPO_ROOT / "data"))
    out.append(("../shared/data/edithurt", REPO_ROOT.parent / "shared" / "data" / "edithurt"))
    return out


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder to use: ``explicit`` if given, else the first complete candidate.

    An explicit folder, or ``$EDITHURT_DATA``, that lacks the released layout is an error
    (never silently skipped): the user asked for that folder.
    """
    if explicit is not None:
        return _checked(Path(explicit).expanduser(), "data_dir")
    tried = []
    for origin, path in candidate_data_dirs():
        if origin == "EDITHURT_DATA":
            return _checked(path, "EDITHURT_DATA")
        if all((path / r).exists() for r in REQUIRED):
            return path
        tried.append(str(path))
    raise DataNotFoundError(f"no data folder found (looked in {', '.join(tried)}). {HOW_TO_GET_DATA}")


def _checked(path: Path, origin: str) -> Path:
    missing = [r for r in REQUIRED if not (path / r).exists()]
    if missing:
        raise DataNotFoundError(
            f"{origin} names {path}, which lacks {', '.join(missing)}. {HOW_TO_GET_DATA}"
        )
    return path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("EDITHURT_CACHE") or Path.home() / ".cache" / "edithurt")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
