"""``make reproduce``: run every notebook of a profile headlessly (papermill) into
``figures/<profile>/``.

A profile (``profiles/<name>.yaml``) gives the model, the seed and, per notebook, the
parameters that set its scale. Executed notebooks land in ``figures/<profile>/notebooks/``,
their tables and figures beside them; result rows are stored as they come, so a rerun
resumes where a crash stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import yaml

from ..errors import DataNotFoundError
from ..paths import REPO_ROOT, data_dir
from ..runs import timing

PROFILES = REPO_ROOT / "profiles"
NOTEBOOKS = REPO_ROOT / "notebooks"


# a cell that runs longer than this is stuck, not slow (the longest cpu-profile cell takes minutes)
CELL_TIMEOUT_S = 4 * 3600
# a profile's top level: model and seed go to every notebook that declares them; requires: gpu;
# resources: what one Ray worker asks for (helpers.runs.backends.get_backend), used with --backend ray
PROFILE_KEYS = ("model", "seed", "requires", "resources", "extensions", "notebooks")


def load_profile(name: str) -> dict:
    path = PROFILES / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"unknown profile {name!r}: choose one of {', '.join(known)} (files in {PROFILES})")
    with open(path, encoding="utf8") as f:
        profile = yaml.safe_load(f)
    extra = set(profile) - set(PROFILE_KEYS)
    if extra:
        raise SystemExit(f"{path}: unknown top-level key(s) {sorted(extra)}; valid: {', '.join(PROFILE_KEYS)} "
                         "(a notebook's own parameters go under notebooks.<name>)")
    missing = [nb for nb in profile.get("notebooks", {}) if not (NOTEBOOKS / f"{nb}.ipynb").exists()]
    if missing:
        raise SystemExit(f"{path} names notebooks that do not exist in {NOTEBOOKS}: {missing}")
    return profile


def figures_dir(profile: str) -> Path:
    """Where ``make reproduce PROFILE=<profile>`` writes: figures, tables, claims, and the results
    store (``results/``) that later runs, the notebooks and the tests read back."""
    return REPO_ROOT / "figures" / profile


def run_notebook(name: str, out_path: Path, parameters: dict, timeout_s: float = CELL_TIMEOUT_S) -> None:
    """Execute ``notebooks/<name>.ipynb`` headlessly with ``parameters`` into ``out_path``.

    The kernel talks to papermill over local IPC sockets, not TCP ports: nothing listens on the
    network, and ipykernel has no reason to warn that its traffic is unencrypted. The sockets live
    in a folder of their own for each kernel: by default jupyter_client names them
    ``kernel-ipc-<n>`` in the working directory, where a kernel that was killed leaves its files
    and two kernels (a notebook and a test's, a crashed run's) can meet on one name — a client then
    waits on a kernel that never hears it.
    """
    import tempfile

    import papermill
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="edithurt-kernel-") as sockets:
        config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        papermill.execute_notebook(NOTEBOOKS / f"{name}.ipynb", out_path, parameters=parameters, cwd=str(NOTEBOOKS),
                                   progress_bar=False, kernel_name="python3", execution_timeout=timeout_s,
                                   config=config)


def notebook_parameters(profile_name: str, profile: dict, notebook: str, out_dir: Path,
                        backend: str = "local") -> dict:
    """The parameters papermill injects into ``notebook``: the profile's common keys, its name
    and the ``backend`` where the notebook declares them, then its own section. A key the notebook's ``parameters`` cell does not declare is
    an error naming the valid ones (a typo would otherwise be silently ignored)."""
    import difflib

    declared = notebook_declared_parameters(notebook)
    own = profile["notebooks"][notebook] or {}
    unknown_keys = [k for k in own if k not in declared]
    if unknown_keys:
        hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, declared, n=1)[0]!r}?)"
                 if difflib.get_close_matches(k, declared, n=1) else repr(k) for k in unknown_keys]
        raise SystemExit(f"profile {profile_name!r}, notebook {notebook}: unknown parameter(s) {', '.join(hints)}. "
                         f"Valid: {', '.join(sorted(declared))}")
    run = {**profile, "backend": backend, "profile": profile_name}  # what every notebook may declare
    # a .py file named by the profile is found from the repository's root (the notebooks run in notebooks/)
    run["extensions"] = [str(REPO_ROOT / e) if str(e).endswith(".py") and not Path(e).is_absolute() else e
                         for e in profile.get("extensions") or []]
    common = {k: v for k, v in run.items() if k != "notebooks" and k in declared}
    return {**common, **own, "out_dir": str(out_dir)}


def _parameters_cell(notebook: str):
    """The statements of ``notebook``'s cell tagged ``parameters`` (parsed, never run)."""
    import ast

    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf8"))["cells"]
    for c in cells:
        if "parameters" in c.get("metadata", {}).get("tags", []):
            return ast.parse("".join(c["source"])).body
    raise SystemExit(f"notebook {notebook} has no cell tagged 'parameters'")


def notebook_declared_parameters(notebook: str) -> list[str]:
    """The names assigned in ``notebook``'s cell tagged ``parameters``."""
    import ast

    return [t.id for node in _parameters_cell(notebook) if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def notebook_defaults(notebook: str) -> dict:
    """``{name: value}`` of ``notebook``'s parameters cell (its values are literals)."""
    import ast

    return {t.id: ast.literal_eval(node.value) for node in _parameters_cell(notebook) if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def check_device(profile_name: str, profile: dict) -> None:
    """A profile that needs GPUs (``requires: gpu``) refuses to start on a machine without one,
    instead of beginning a multi-day CPU run."""
    if profile.get("requires") != "gpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"profile {profile_name!r} runs the paper's models on the full test sets and needs a GPU "
                         f"(this machine has none; on 2 CPU cores it would take days). Use PROFILE=cpu (the embedded "
                         f"model, about an hour) or PROFILE=smoke (minutes), or run it on a GPU machine.")


def timing_log(out_dir: Path) -> Path:
    """The build's timing log, committed with the results store (:mod:`helpers.runs.timing`)."""
    return out_dir / "results" / "timing_log.csv"


@contextlib.contextmanager
def timed_notebook(out_dir: Path, name: str):
    """Run a notebook with its phases logged (the kernel inherits ``EDITHURT_TIMING``), then log
    what it spent outside them as its ``notebook`` phase (wall; CPU: the kernel's, read when it
    has exited). A rerun that computed nothing (every row stored) logs nothing where the log
    already holds the notebook's build: the committed log is left as the build wrote it."""
    log = timing_log(out_dir)
    earlier = timing.read_log(log)
    before, built = len(earlier), bool(((earlier.notebook == name) & (earlier.phase == "notebook")).any())
    saved = {k: os.environ.get(k) for k in (timing.LOG_ENV, timing.NOTEBOOK_ENV)}
    os.environ[timing.LOG_ENV], os.environ[timing.NOTEBOOK_ENV] = str(log), name
    wall0, cpu0 = time.perf_counter(), _children_cpu()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        inner = timing.read_log(log).iloc[before:]
        inner = inner[inner.notebook == name]
        wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
        if not (built and inner.empty):  # (no return here: it would swallow the notebook's error)
            timing.append(log, name, "", "notebook", max(0.0, wall - inner.seconds.astype(float).sum()),
                          max(0.0, cpu - inner.cpu_seconds.astype(float).sum()))


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def write_timing(out_dir: Path):
    """``<out_dir>/timing.csv`` from the log (:func:`helpers.runs.timing.summarize`); returns it."""
    summary = timing.summarize(timing.read_log(timing_log(out_dir)))
    summary.to_csv(out_dir / "timing.csv", index=False)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (names without .ipynb)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="where the side-effect sweeps' chains run: here, or on the Ray cluster named by "
                         "RAY_ADDRESS (a local one when unset)")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    check_device(args.profile, profile)
    try:
        data_dir()
    except DataNotFoundError as e:
        print(f"make reproduce: {e}", file=sys.stderr)
        return 2
    from .claims_report import write_claims

    out_dir = figures_dir(args.profile)
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    names = [n for n in profile["notebooks"] if not args.only or n in args.only]
    if args.only and set(args.only) - set(names):
        raise SystemExit(f"--only names unknown notebook(s) {sorted(set(args.only) - set(names))}; "
                         f"this profile has {list(profile['notebooks'])}")
    all_params = {name: notebook_parameters(args.profile, profile, name, out_dir, args.backend)
                  for name in names}  # fail early
    begin = time.perf_counter()
    for name in names:
        params = all_params[name]
        print(f"[{args.profile}] {name}: {params}", flush=True)
        try:
            with timed_notebook(out_dir, name):
                run_notebook(name, out_dir / "notebooks" / f"{name}.ipynb", params)
        except KeyboardInterrupt:
            print(f"\n[{args.profile}] interrupted during {name}. Every finished result is stored under "
                  f"{out_dir / 'results'}; run `make reproduce PROFILE={args.profile}` again to resume "
                  "(finished results are not recomputed).", file=sys.stderr, flush=True)
            return 130
        finally:
            summary = write_timing(out_dir)
        line = next((x for x in timing.summary_lines(summary) if x.startswith(f"{name}:")), name)
        print(f"[{args.profile}] done; over every build that landed in {out_dir}: {line}", flush=True)
    claims = write_claims(out_dir, args.profile)
    print(f"[{args.profile}] all notebooks in {time.perf_counter() - begin:.0f} s; figures and tables in {out_dir}; "
          f"claims in {claims}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
