"""``make reproduce``: run every notebook of a profile headlessly (papermill) into
``figures/<profile>/``.

A profile (``profiles/<name>.yaml``) gives the model, the seed and, per notebook, the
parameters that set its scale. Executed notebooks land in ``figures/<profile>/notebooks/``,
their tables and figures beside them; result rows are stored as they come, so a rerun
resumes where a crash stopped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from .errors import DataNotFoundError
from .paths import REPO_ROOT, data_dir

PROFILES = REPO_ROOT / "profiles"
NOTEBOOKS = REPO_ROOT / "notebooks"


# a cell that runs longer than this is stuck, not slow (the longest cpu-profile cell takes minutes)
CELL_TIMEOUT_S = 4 * 3600


def load_profile(name: str) -> dict:
    path = PROFILES / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"unknown profile {name!r}: choose one of {', '.join(known)} (files in {PROFILES})")
    with open(path, encoding="utf8") as f:
        profile = yaml.safe_load(f)
    missing = [nb for nb in profile.get("notebooks", {}) if not (NOTEBOOKS / f"{nb}.ipynb").exists()]
    if missing:
        raise SystemExit(f"{path} names notebooks that do not exist in {NOTEBOOKS}: {missing}")
    return profile


def notebook_parameters(profile_name: str, profile: dict, notebook: str, out_dir: Path) -> dict:
    common = {k: v for k, v in profile.items() if k != "notebooks"}
    return {**common, **(profile["notebooks"][notebook] or {}), "profile": profile_name, "out_dir": str(out_dir)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (names without .ipynb)")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    try:
        data_dir()
    except DataNotFoundError as e:
        print(f"make reproduce: {e}", file=sys.stderr)
        return 2
    import papermill

    out_dir = REPO_ROOT / "figures" / args.profile
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    for name in profile["notebooks"]:
        if args.only and name not in args.only:
            continue
        params = notebook_parameters(args.profile, profile, name, out_dir)
        print(f"[{args.profile}] {name}: {params}", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(NOTEBOOKS / f"{name}.ipynb", out_dir / "notebooks" / f"{name}.ipynb",
                                   parameters=params, cwd=str(NOTEBOOKS), progress_bar=False,
                                   kernel_name="python3", execution_timeout=CELL_TIMEOUT_S)
        print(f"[{args.profile}] {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"figures and tables in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
