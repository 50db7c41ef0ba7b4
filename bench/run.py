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
``edit.<M>.seconds_per_edit``  ROME, MEMIT, KN, MEND on ZsRE requests (caches warm)
``edit.ROME.floor_seconds_at_matmul_peak``  the matrix-product GFLOP of one ROME edit (counted
                         by torch.profiler) over the measured peak: the fastest it could be
``stats.tokens_per_s``   key second moments (MEMIT's statistics), corpus sampling included
``regularize.*``         RECT and its baselines on a 6400×1600 update
``memory.*``             peak resident memory of this run; of a 20-edit sequential ROME run
                         (a child process), beyond its libraries, in float32 model sizes
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from helpers import TASKS, evaluate_tasks, get_task, load_model, load_task
from helpers.report.tables import to_markdown

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------- the workload
def task_mix(per_task: int, seed: int = 0):
    """``[(task, prompt text, max_new_tokens)]``: ``per_task`` seeded examples of each of the 8
    tasks under the paper protocol (NER: 4 prompts per sentence)."""
    out = []
    for name in TASKS:
        task = get_task(name)
        for ex in load_task(name, n=per_task, seed=seed):
            out += [(name, p.text, task.max_new_tokens) for p in task.prompts(ex, "paper")]
    return out


def matmul_peak(seconds: float = 2.0) -> float:
    """Best float32 GFLOP/s of a 2048×2048 matrix product over ``seconds``."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


class Flops:
    """Model FLOPs by counting: ``2 × weights`` per token through the layers, attention's
    ``QKᵀ`` and ``AV`` (``4 × width × context`` per token and layer), and ``2 × hidden × vocab``
    for each position whose logits are computed."""

    def __init__(self, model):
        from helpers.model.stack import DecoderStack

        stack = DecoderStack(model)
        self.layer_weights = sum(p.numel() for p in stack.layers.parameters() if p.dim() == 2)
        self.layers = stack.num_layers
        cfg = model.config
        self.width = getattr(cfg, "hidden_size", None) or cfg.n_embd
        self.head = 2 * self.width * stack.head.weight.shape[0]

    def token(self, context: int) -> float:
        return 2 * self.layer_weights + 4 * self.layers * self.width * context

    def prompt(self, n: int, logits: int = 1) -> float:
        return 2 * self.layer_weights * n + 2 * self.layers * self.width * n * n + logits * self.head


# ---------------------------------------------------------------------------- evaluation
def released_loop(model, tok, mix) -> dict:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for _, text, new in mix:
            ids = tok(text).input_ids[-1024:]
            tokens += len(ids)
            batch = torch.full((1, 1024), pad, dtype=torch.long)
            mask = torch.zeros((1, 1024), dtype=torch.long)
            batch[0, -len(ids):], mask[0, -len(ids):] = torch.tensor(ids), 1
            model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=new, do_sample=False,
                           pad_token_id=pad)
    sec = time.perf_counter() - start
    return {"prompts": len(mix), "prompt_tokens": tokens, "seconds": sec, "prompts_per_s": len(mix) / sec,
            "prompt_tokens_per_s": tokens / sec}


def raw_forward(model, tok, mix) -> dict:
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for _, text, _ in mix:
            ids = torch.tensor([tok(text).input_ids])
            tokens += ids.shape[1]
            model(input_ids=ids, logits_to_keep=1)
    sec = time.perf_counter() - start
    return {"prompts": len(mix), "prompt_tokens": tokens, "seconds": sec, "prompts_per_s": len(mix) / sec,
            "prompt_tokens_per_s": tokens / sec}


def engine(model, tok, per_task, flops: Flops, batch_tokens: int, **options) -> tuple[dict, object]:
    start = time.perf_counter()
    df = evaluate_tasks(model, tok, n=per_task, seed=0, batch_tokens=batch_tokens, progress=False, **options)
    sec = time.perf_counter() - start
    lengths = [len(tok(t).input_ids) for _, t, _ in task_mix(per_task)]
    model_flops = sum(flops.prompt(n) for n in lengths)
    mean_ctx = sum(lengths) / len(lengths)
    model_flops += (df.new_tokens.sum() + df.scored_tokens.sum()) * (flops.token(mean_ctx) + flops.head)
    return {"prompts": int(df.prompts.sum()), "prompt_tokens": int(df.prompt_tokens.sum()),
            "new_tokens": int(df.new_tokens.sum()), "scored_tokens": int(df.scored_tokens.sum()), "seconds": sec,
            "prompts_per_s": df.prompts.sum() / sec, "prompt_tokens_per_s": df.prompt_tokens.sum() / sec,
            "model_gflop": model_flops / 1e9}, df


def engine_cached(model, tok, per_task, layer, raw) -> dict:
    """The engine at a later sweep point: the lower layers' work, cached at the first point
    (the unedited model, here), is not redone."""
    from helpers.model.lower_layers import LowerLayerCache

    cache = LowerLayerCache(model, layer)
    evaluate_tasks(model, tok, n=per_task, seed=0, lower_layers=cache, progress=False)
    start = time.perf_counter()
    df = evaluate_tasks(model, tok, n=per_task, seed=0, lower_layers=cache, progress=False)
    sec = time.perf_counter() - start
    rate = df.prompt_tokens.sum() / sec
    return {"seconds": sec, "prompt_tokens_per_s": rate, "fraction_of_raw_forward": rate / raw["prompt_tokens_per_s"],
            "cache_mb": cache.bytes / 2**20}


def prefill_shapes(model, tok, mix) -> dict:
    """Why padded batches do not pay on a CPU: reading the mix's prompts (prefill only, last
    logits) in different batch shapes, real prompt tokens per second and the share of padding;
    a batch of 8 equal-length prompts with and without an attention mask (the masked path of
    scaled-dot-product attention); and matrix-multiply speed against the number of rows."""
    from helpers.model.generate import _prefill_groups

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = sorted((tok(t).input_ids for _, t, _ in mix), key=len, reverse=True)
    real = sum(map(len, enc))

    def run(groups):
        slots, start = 0, time.perf_counter()
        with torch.inference_mode():
            for g in groups:
                seqs = enc[g]
                width = len(seqs[0])
                ids = torch.full((len(seqs), width), pad)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, e in enumerate(seqs):
                    ids[r, width - len(e):], mask[r, width - len(e):] = torch.tensor(e), 1
                slots += ids.numel()
                model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                      logits_to_keep=1)
        sec = time.perf_counter() - start
        return {"prompt_tokens_per_s": real / sec, "padding_share": 1 - real / slots, "batches": len(groups)}

    out = {}
    for size in (1, 8, 32):
        out[f"padded_batches_of_{size}"] = run([slice(i, i + size) for i in range(0, len(enc), size)])
    out["groups_of_like_length"] = run(_prefill_groups([len(e) for e in enc], 2048, 0.1))
    same = torch.tensor([enc[len(enc) // 2]] * 8)
    masked = torch.ones_like(same)
    masked[:, 0] = 0  # one padded slot: scaled-dot-product attention must take the explicit-mask path
    for name, kwargs in (("no_mask", {}), ("with_mask", {"attention_mask": masked})):
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(5):
                model(input_ids=same, logits_to_keep=1, **kwargs)
        out[f"equal_length_batch_of_8_{name}_tokens_per_s"] = 5 * same.numel() / (time.perf_counter() - start)
    width = model.config.hidden_size
    w = torch.randn(4 * width, width)
    for rows in (16, 64, 128, 512, 2048):
        x = torch.randn(rows, width)
        torch.nn.functional.linear(x, w)
        reps = max(3, int(3e9 / (2 * rows * width * 4 * width)))
        start = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.linear(x, w)
        out[f"matmul_gflops_{rows}_rows"] = 2 * rows * width * 4 * width * reps / (time.perf_counter() - start) / 1e9
    return out


def full_testset_tokens(tok) -> dict:
    """Prompt tokens of the 8 full test sets (paper protocol), counted with the tokenizer."""
    out = {}
    for name in TASKS:
        task = get_task(name)
        texts = [p.text for ex in load_task(name) for p in task.prompts(ex, "paper")]
        out[name] = {"prompts": len(texts), "prompt_tokens": sum(len(i) for i in tok(texts).input_ids),
                     "max_new_tokens": task.max_new_tokens}
    return out


# ---------------------------------------------------------------------------- editing
def seconds_per_edit(model, tok, method, requests, hparams=None, warm: bool = True) -> float:
    """Mean seconds per edit over ``requests`` (after one untimed edit of the first when
    ``warm``: context templates, statistics and MEND's network are then cached)."""
    from helpers.editing import edit

    if warm:
        edit(model, tok, requests[0], method, hparams).restore()
        requests = requests[1:]
    start = time.perf_counter()
    for r in requests:
        edit(model, tok, r, method, hparams).restore()
    return (time.perf_counter() - start) / len(requests)


def edit_matmul_gflop(model, tok, method, request) -> float:
    """GFLOP of the matrix products one edit runs, counted by ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    from helpers.editing import edit

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        edit(model, tok, request, method).restore()
    return sum(e.flops for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm")) / 1e9


def regularize_speed() -> dict:
    """Seconds for each regulariser at k = 0.4 on a GPT-2 XL-sized update (6400×1600)."""
    from helpers.editing.regularize import regularize

    gen = torch.Generator().manual_seed(0)
    delta, weight = torch.randn(6400, 1600, generator=gen), torch.randn(6400, 1600, generator=gen)
    out = {}
    for how in ("rect", "random", "pca", "pca_lowrank"):
        regularize(delta[:64, :64], weight[:64, :64], how, 0.4)
        start = time.perf_counter()
        regularize(delta, weight, how, 0.4)
        out[how] = time.perf_counter() - start
    return out


def stats_rate(model, tok, n_samples: int) -> float:
    from helpers.editing.key_stats import key_second_moments

    old = os.environ.get("EDITHURT_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EDITHURT_CACHE"] = tmp
        try:
            start = time.perf_counter()
            key_second_moments(model, tok, ["model.layers.4.mlp.down_proj"], "self", n_samples, model_name="bench")
            sec = time.perf_counter() - start
            record = json.loads(next(Path(tmp, "stats").glob("*.json")).read_text())
        finally:
            if old is None:
                os.environ.pop("EDITHURT_CACHE", None)
            else:
                os.environ["EDITHURT_CACHE"] = old
    return record["tokens"] / sec


def sequential_memory(edits: int) -> dict:
    """Memory of a child process that loads the model and makes ``edits`` sequential ROME
    edits (weights changed in place; only the edited matrix's originals are kept). Read from
    /proc (VmHWM: the peak; ``ru_maxrss`` would carry over the parent's peak through exec).
    The weights are a file mapping (safetensors), so they count once the first forward pass
    touches them; ``anon_growth_mb`` is what editing allocated beyond that (after each edit;
    a copy of the model would add its whole size)."""
    code = (
        "import json, re\n"
        "def mb(key):\n"
        "    return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
        "import torch\nfrom helpers import load_model\nfrom helpers.data import load_zsre\n"
        "from helpers.editing import edit\nfrom helpers.editing.mend import split_zsre\n"
        "imports = mb('VmRSS')\nm, t = load_model()\nloaded = mb('VmRSS')\n"
        "size = sum(p.numel() * 4 for p in m.parameters()) / 2**20\n"
        "anon0, anon = mb('RssAnon'), 0\n"
        f"for r in split_zsre(load_zsre())[1][:{edits}]:\n    edit(m, t, r, 'ROME')\n"
        "    anon = max(anon, mb('RssAnon'))\n"
        "print(json.dumps({'imports_mb': imports, 'after_load_mb': loaded, 'peak_mb': mb('VmHWM'), "
        "'model_fp32_mb': size, 'anon_growth_mb': anon - anon0}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-task", type=int, default=6, help="examples per task in the mix (default 6)")
    ap.add_argument("--released-per-task", type=int, default=2, help="of which timed the released way")
    ap.add_argument("--edits", type=int, default=4, help="edits timed per method (after one warm-up)")
    ap.add_argument("--memory-edits", type=int, default=20, help="sequential edits for the memory check (0: skip)")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3, help="alternated timings of the raw forward and the engine")
    ap.add_argument("--cached-layers", type=int, nargs="*", default=[6, 27],
                    help="sweep points with the layers below these cached (ROME edits layer 6, MEND 27-29)")
    ap.add_argument("--only", choices=["all", "eval", "edit"], default="all")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)

    model, tok = load_model()
    res: dict = {"meta": {"date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "machine": platform.machine(),
                          "processor": _cpu_name(), "per_task": args.per_task}}
    per_task, full = None, {}
    if args.only in ("all", "eval"):
        per_task, full = bench_eval(model, tok, res, args)
    if args.only in ("all", "edit"):
        bench_edit(model, tok, res, args)
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".md").write_text(_markdown(res, per_task, full))
    print(out.with_suffix(".md").read_text())


def bench_eval(model, tok, res, args):
    flops = Flops(model)
    mix = task_mix(args.per_task)
    evaluate_tasks(model, tok, ["nli"], n=4, progress=False)  # warm-up
    res["eval.matmul_peak_gflops"] = matmul_peak()
    # alternated and repeated, the fastest of each kept: on a shared 2-core machine a single
    # timing can be off by a quarter, and the ratio of two such timings by more
    raws, engines = [], []
    for _ in range(args.repeats):
        raws.append(raw_forward(model, tok, mix))
        engines.append(engine(model, tok, args.per_task, flops, args.batch_tokens))
    res["eval.raw_forward"] = {**min(raws, key=lambda r: r["seconds"]), "all_seconds": [r["seconds"] for r in raws]}
    best, per_task = min(engines, key=lambda e: e[0]["seconds"])
    res["eval.engine"] = {**best, "all_seconds": [e[0]["seconds"] for e in engines]}
    sub = task_mix(args.released_per_task)
    res["eval.released_loop"] = released_loop(model, tok, sub)
    mix_flops = sum(flops.prompt(len(tok(t).input_ids)) for _, t, _ in mix)
    limit_s = mix_flops / (res["eval.matmul_peak_gflops"] * 1e9)
    res["eval.flop_limit"] = {"seconds": limit_s, "prompt_tokens_per_s": res["eval.raw_forward"]["prompt_tokens"] / limit_s}
    eng, raw, rel = res["eval.engine"], res["eval.raw_forward"], res["eval.released_loop"]
    res["eval.speedup_vs_released_loop"] = eng["prompt_tokens_per_s"] / rel["prompt_tokens_per_s"]
    res["eval.fraction_of_raw_forward"] = eng["prompt_tokens_per_s"] / raw["prompt_tokens_per_s"]
    res["eval.raw_forward_mfu"] = mix_flops / raw["seconds"] / (res["eval.matmul_peak_gflops"] * 1e9)
    res["eval.mfu"] = eng["model_gflop"] / eng["seconds"] / res["eval.matmul_peak_gflops"]
    res["eval.prefill_shapes"] = prefill_shapes(model, tok, mix)
    # the engine's changes one by one, same run: padded length-sorted batches (as before), then
    # prefill groups of like length, then the shared instruction read once (the default)
    for name, options in (("padded_batches", {"pad_tolerance": float("inf"), "share_prefix": False}),
                          ("like_length_groups", {"share_prefix": False})):
        variant, _ = engine(model, tok, args.per_task, flops, args.batch_tokens, **options)
        res[f"eval.engine_variant.{name}"] = {"seconds": variant["seconds"],
                                              "prompt_tokens_per_s": variant["prompt_tokens_per_s"]}
    for layer in args.cached_layers:
        res[f"eval.engine_cached_below_layer_{layer}"] = engine_cached(model, tok, args.per_task, layer, raw)
    full = full_testset_tokens(tok)
    full_tokens = sum(v["prompt_tokens"] for v in full.values())
    res["eval.full_testsets_prompt_tokens"] = full_tokens
    # each task at its own measured rate (generation lengths differ by task)
    rate = dict(zip(per_task.task, per_task.tokens_per_second))
    res["eval.full_testsets_minutes"] = sum(v["prompt_tokens"] / rate[k] for k, v in full.items()) / 60
    return per_task, full


def bench_edit(model, tok, res, args):
    from helpers.data import load_zsre
    from helpers.editing.mend import split_zsre

    reqs = split_zsre(load_zsre())[1][: args.edits + 1]  # held out from MEND's training
    res["edit.ROME.seconds_per_edit"] = seconds_per_edit(model, tok, "ROME", reqs)
    # the same edits the way ROME/MEMIT/EasyEdit's code runs them (whole model, every step)
    res["edit.ROME.seconds_per_edit_whole_model_every_step"] = seconds_per_edit(
        model, tok, "ROME", reqs[1:3], {"reuse_prefix": False}, warm=False)
    res["edit.MEMIT.seconds_per_edit"] = seconds_per_edit(model, tok, "MEMIT", reqs)
    res["edit.MEMIT.seconds_per_edit_whole_model_every_step"] = seconds_per_edit(
        model, tok, "MEMIT", reqs[1:3], {"reuse_prefix": False}, warm=False)
    res["edit.KN.seconds_per_edit"] = seconds_per_edit(model, tok, "KN", reqs)
    res["edit.KN.seconds_per_edit_whole_model_every_layer"] = seconds_per_edit(
        model, tok, "KN", reqs[1:2], {"reuse_prefix": False}, warm=False)
    res["edit.MEND.seconds_per_edit"] = seconds_per_edit(model, tok, "MEND", reqs)
    res["stats.tokens_per_s"] = stats_rate(model, tok, 64)
    res["memory.peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["regularize.seconds_6400x1600"] = regularize_speed()
    if args.memory_edits:
        mem = sequential_memory(args.memory_edits)
        res["memory.sequential_edits"] = {"edits": args.memory_edits, **mem}
        # what the run holds beyond the interpreter and libraries, in float32 model sizes
        res["memory.sequential_peak_over_model_fp32"] = (mem["peak_mb"] - mem["imports_mb"]) / mem["model_fp32_mb"]
    # last: the profiler's records would inflate this process's peak memory above
    res["edit.ROME.matmul_gflop_per_edit"] = edit_matmul_gflop(model, tok, "ROME", reqs[1])
    peak = res.get("eval.matmul_peak_gflops") or matmul_peak()
    # the fastest an edit could be if every matrix product ran at the measured peak and
    # nothing else took time
    res["edit.ROME.floor_seconds_at_matmul_peak"] = res["edit.ROME.matmul_gflop_per_edit"] / peak


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
