"""``make bench``: throughput of the decoding engine on the embedded model.

Measures, in one run and on the same prompts, evaluation throughput (prompt tokens per second)
for several batch token budgets and for one-prompt-at-a-time decoding (batch size 1, what the
released scripts do, minus their reload and their padding to 1024 tokens). Writes
``bench/results/engine-<date>.json`` and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

from helpers import get_task, load_model, load_task
from helpers.generate import generate
from helpers.results import to_markdown

RESULTS = Path(__file__).resolve().parent / "results"


def workload(tasks, n, seed=0):
    out = []
    for name in tasks:
        task = get_task(name)
        prompts = [p for e in load_task(name, n=n, seed=seed) for p in task.prompts(e, "paper")]
        conts = [([p.gold_text] if p.gold_text else []) + list(task.labels or ()) for p in prompts]
        out.append((name, task.max_new_tokens, [p.text for p in prompts], conts))
    return out


def run(model, tok, work, batch_tokens, max_batch_size):
    rows = []
    for name, new, prompts, conts in work:
        start = time.perf_counter()
        gens = generate(model, tok, prompts, new, conts, batch_tokens=batch_tokens,
                        max_batch_size=max_batch_size, progress=False)
        sec = time.perf_counter() - start
        tokens = sum(g.prompt_tokens for g in gens)
        rows.append({"task": name, "batch_tokens": batch_tokens, "max_batch_size": max_batch_size,
                     "prompts": len(prompts), "prompt_tokens": tokens, "new_tokens": sum(len(g.tokens) for g in gens),
                     "seconds": round(sec, 2), "prompt_tokens_per_s": round(tokens / sec, 1)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--tasks", nargs="*", default=["nli", "summarization", "ner"])
    ap.add_argument("--budgets", nargs="*", type=int, default=[2048, 4096, 8192, 16384])
    args = ap.parse_args(argv)
    model, tok = load_model()
    work = workload(args.tasks, args.n)
    run(model, tok, [(w[0], w[1], w[2][:4], w[3][:4]) for w in work], 4096, 64)  # warm-up
    rows = run(model, tok, work, 1_000_000, 1)  # one prompt at a time
    for b in args.budgets:
        rows += run(model, tok, work, b, 64)
    import pandas as pd

    df = pd.DataFrame(rows)
    total = df.groupby(["batch_tokens", "max_batch_size"], as_index=False)[["prompt_tokens", "seconds"]].sum()
    total["prompt_tokens_per_s"] = (total.prompt_tokens / total.seconds).round(1)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
    RESULTS.mkdir(exist_ok=True)
    meta = {"date": stamp, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor(), "n": args.n}
    (RESULTS / f"engine-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / f"engine-{stamp}.md").write_text(
        f"# Decoding engine throughput ({stamp})\n\n{json.dumps(meta)}\n\n## Per task\n\n{to_markdown(df, '.1f')}\n\n"
        f"## All tasks\n\n{to_markdown(total, '.1f')}\n")
    print(to_markdown(total, ".1f"))
    print(f"written to {RESULTS / f'engine-{stamp}.md'}")


if __name__ == "__main__":
    main()
