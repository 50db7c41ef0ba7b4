"""``make bench``: speed and memory of the package on this machine, in one run.

Writes ``bench/results.json`` (flat keys, below) and ``bench/results.md``. Every number comes
from the same process on the same machine, so ratios between them are meaningful:

``eval.released_loop``   the released scripts' way: one prompt at a time, left-padded to 1024
                         tokens, ``model.generate`` with the task's new-token count
``eval.engine``          ``evaluate_tasks`` on the mix (generation and scoring included)
``eval.raw_forward``     one unpadded forward per prompt, logits of the last position only
``eval.flop_limit``      the mix's prompt FLOPs over the matrix-multiply peak measured here
``eval.mfu``             the engine's model FLOPs (prompts, generated and scored tokens) per
                         second over that peak
``eval.prefill_shapes``  reading the prompts in different batch shapes (why padding loses)
``eval.engine_cached_below_layer_<L>``  the engine at a later point of a sweep whose edits lie
                         at or above layer L: the layers below L are not run for the prompts
``edit.<M>.seconds_per_edit``  ROME, MEMIT, KN, MEND on ZsRE requests (caches warm), and the
                         rescues (ROME+RECT, R-ROME, AlphaEdit, ENCORE, NAS) with
                         ``edit.<R>.over_<M>``, each over its plain method timed in the same run
``edit.NAS.anchor_seconds``  NAS's anchor, read once per model (its hparams' anchor_requests solved)
``edit.ROME.floor_seconds_at_matmul_peak``  the matrix-product GFLOP of one ROME edit (counted
                         by torch.profiler) over the measured peak: the fastest it could be
``stats.tokens_per_s``   key second moments (MEMIT's statistics), corpus sampling included
``regularize.*``         RECT and its baselines on a 6400×1600 update
``memory.*``             peak resident memory of this run; of a 20-edit sequential ROME run
                         (a child process), beyond its libraries, in float32 model sizes

The measurements live by what they measure: :mod:`bench.evaluation`, :mod:`bench.editing`,
:mod:`bench.memory`; this module runs them and writes the results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import torch

from helpers import load_model
from helpers.report.tables import to_markdown

from .editing import bench_edit, bench_rescues
from .evaluation import bench_eval

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-task", type=int, default=6, help="examples per task in the mix (default 6)")
    ap.add_argument("--released-per-task", type=int, default=2, help="of which timed the released way")
    ap.add_argument("--edits", type=int, default=4, help="edits timed per method (after one warm-up)")
    ap.add_argument("--memory-edits", type=int, default=20, help="sequential edits for the memory check (0: skip)")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--batched-sizes", type=int, nargs="+", default=[8, 32],
                    help="independent requests optimised together (ROME single updates, MEMIT batches)")
    ap.add_argument("--repeats", type=int, default=3, help="alternated timings of the raw forward and the engine")
    ap.add_argument("--cached-layers", type=int, nargs="*", default=[6, 27],
                    help="sweep points with the layers below these cached (ROME edits layer 6, MEND 27-29)")
    ap.add_argument("--only", choices=["all", "eval", "edit", "rescues"], default="all")
    ap.add_argument("--out", default=None,
                    help="default bench/results.json; with --only, bench/results_<only>.json (the full run's file is kept)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / ("results.json" if args.only == "all" else f"results_{args.only}.json"))

    model, tok = load_model()
    res: dict = {"meta": {"date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "machine": platform.machine(),
                          "processor": _cpu_name(), "per_task": args.per_task}}
    per_task, full = None, {}
    if args.only in ("all", "eval"):
        per_task, full = bench_eval(model, tok, res, args)
    if args.only in ("all", "edit"):
        bench_edit(model, tok, res, args)
    if args.only == "rescues":
        from helpers.data import load_zsre
        from helpers.editing.mend import split_zsre

        bench_rescues(model, tok, res, split_zsre(load_zsre())[1][: args.edits + 1])
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".md").write_text(_markdown(res, per_task, full))
    print(out.with_suffix(".md").read_text())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _markdown(res, per_task, full) -> str:
    lines = [f"# make bench — {res['meta']['date']}", "", "`" + json.dumps(res["meta"]) + "`", "",
             "| key | value |", "|---|---|"]
    for k, v in res.items():
        if k == "meta":
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"| `{k}` | {v} |")
    if per_task is None:
        return "\n".join(lines) + "\n"
    cols = ["task", "prompts", "prompt_tokens", "new_tokens", "scored_tokens", "seconds", "tokens_per_second"]
    lines += ["", "## Engine on the mix, per task", "", to_markdown(per_task[cols], ".1f"), "",
              "## Full test sets (paper protocol)", "", "| task | prompts | prompt tokens | max new tokens |",
              "|---|---|---|---|"]
    lines += [f"| {k} | {v['prompts']} | {v['prompt_tokens']} | {v['max_new_tokens']} |" for k, v in full.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
