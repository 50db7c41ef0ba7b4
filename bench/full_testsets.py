"""One evaluation of the embedded model on the 8 full test sets (paper protocol), timed.

``python -m bench.full_testsets`` (about an hour and a half on 2 cores) writes
``bench/full_testsets.csv`` and ``.md``: the scores and, per task, the seconds it took — the
real counterpart of ``make bench``'s ``eval.full_testsets_minutes`` estimate.
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from helpers import evaluate_tasks, load_model
from helpers.report.tables import to_markdown

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--protocol", default="paper")
    ap.add_argument("--out", default=str(HERE / "full_testsets.csv"))
    args = ap.parse_args(argv)
    model, tok = load_model()
    start = time.perf_counter()
    df = evaluate_tasks(model, tok, n=None, protocol=args.protocol)
    minutes = (time.perf_counter() - start) / 60
    out = Path(args.out)
    df.to_csv(out, index=False)
    out.with_suffix(".md").write_text(
        f"# Full test sets, {args.protocol} protocol — {dt.datetime.now().isoformat(timespec='minutes')}\n\n"
        f"{minutes:.1f} minutes in all, {df.prompt_tokens.sum() / (minutes * 60):.0f} prompt tokens/s\n\n"
        f"{to_markdown(df, '.3f')}\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
