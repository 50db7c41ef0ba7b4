"""``make bench``, evaluation: the engine on a seeded mix of the 8 tasks against the released
scripts' loop, a raw forward and the measured matrix-multiply peak; prefill shapes; the lower-
layer cache; the full test sets' size. Keys ``eval.*`` (see :mod:`bench.run`)."""
from __future__ import annotations

import time

import torch

from helpers import TASKS, evaluate_tasks, get_task, load_task
from helpers.model.batching import like_length_groups, pad, pad_id, positions


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


def released_loop(model, tok, mix) -> dict:
    pad_with = pad_id(tok)
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for _, text, new in mix:
            ids = tok(text).input_ids[-1024:]
            tokens += len(ids)
            batch, mask = pad([ids], pad_with, width=1024)  # as the scripts: left-padded to 1024 tokens
            model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=new, do_sample=False,
                           pad_token_id=pad_with)
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


def scoring(model, tok, per_task: int, flops: Flops, raw: dict, peak: float) -> dict:
    """The teacher-forced scoring path (:func:`helpers.model.score.score`, no decoding) on the
    mix's prompts with their gold continuations: tokens read per second (prompt and
    continuation), against the raw forward (each prompt alone, last logits only) and the
    matrix-multiply peak; with any padding in a group (the default) and at most 10%."""
    from helpers.model.score import score

    pairs = [(p.text, p.gold_text) for name in TASKS for ex in load_task(name, n=per_task, seed=0)
             for p in get_task(name).prompts(ex, "paper") if p.gold_text]
    prompts, conts = [p for p, _ in pairs], [c for _, c in pairs]
    score(model, tok, prompts[:4], conts[:4])  # warm-up
    out = {}
    for name, tolerance in (("", float("inf")), ("pad_tolerance_0.1.", 0.1)):
        start = time.perf_counter()
        scored = score(model, tok, prompts, conts, pad_tolerance=tolerance)
        sec = time.perf_counter() - start
        lengths = [len(tok(p).input_ids) + len(s.tokens) - 1 for p, s in zip(prompts, scored)]
        gflop = sum(flops.prompt(n, logits=len(s.tokens)) for n, s in zip(lengths, scored)) / 1e9
        rate = sum(lengths) / sec
        out.update({f"{name}seconds": sec, f"{name}prompt_tokens_per_s": rate,
                    f"{name}fraction_of_raw_forward": rate / raw["prompt_tokens_per_s"],
                    f"{name}mfu": gflop / sec / peak})
    out["pairs"] = len(pairs)
    return out


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
    pad_with = pad_id(tok)
    enc = sorted((tok(t).input_ids for _, t, _ in mix), key=len, reverse=True)
    real = sum(map(len, enc))

    def run(groups):
        slots, start = 0, time.perf_counter()
        with torch.inference_mode():
            for g in groups:
                ids, mask = pad(enc[g], pad_with)
                slots += ids.numel()
                model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), logits_to_keep=1)
        sec = time.perf_counter() - start
        return {"prompt_tokens_per_s": real / sec, "padding_share": 1 - real / slots, "batches": len(groups)}

    out = {}
    for size in (1, 8, 32):
        out[f"padded_batches_of_{size}"] = run([slice(i, i + size) for i in range(0, len(enc), size)])
    out["groups_of_like_length"] = run(like_length_groups([len(e) for e in enc], 2048, 0.1))
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
    for key, value in scoring(model, tok, args.per_task, flops, raw, res["eval.matmul_peak_gflops"]).items():
        res[f"eval.scoring.{key}"] = value
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
