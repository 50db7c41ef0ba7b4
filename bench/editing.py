"""``make bench``, editing: seconds per edit of each method, one ROME edit's counted FLOPs and
its floor at the measured peak, key statistics, the regularisers. Keys ``edit.*``, ``stats.*``,
``regularize.*``, ``memory.*`` (see :mod:`bench.run`)."""
from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from .evaluation import matmul_peak
from .memory import sequential_memory


def seconds_per_edit(model, tok, method, requests, hparams=None, warm: bool = True, regularizer=None) -> float:
    """Mean seconds per edit over ``requests`` (after one untimed edit of the first when
    ``warm``: context templates, statistics and MEND's network are then cached)."""
    from helpers.editing import begin_sequence, edit

    begin_sequence(model)  # a method that carries state starts a fresh sequence
    if warm:
        edit(model, tok, requests[0], method, hparams, regularizer=regularizer).restore()
        requests = requests[1:]
    start = time.perf_counter()
    for r in requests:
        edit(model, tok, r, method, hparams, regularizer=regularizer).restore()
    return (time.perf_counter() - start) / len(requests)


def edit_matmul_gflop(model, tok, method, request) -> float:
    """GFLOP of the matrix products one edit runs, counted by ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    from helpers.editing import edit

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        edit(model, tok, request, method).restore()
    return sum(e.flops for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm")) / 1e9


def batched_single_edits(model, tok, requests, sizes=(8, 32)) -> dict:
    """Single ROME updates of independent requests: one at a time (each request's value
    optimised alone, ``value_batch_tokens: 0``) against one batched call
    (:func:`helpers.editing.single_updates`); the batched updates' smallest cosine with the
    one-at-a-time ones. The one-at-a-time time per request is measured on the first
    ``sizes[0]`` requests (it does not depend on how many there are)."""
    from helpers.editing import single_updates

    single_updates(model, tok, requests[:1], "ROME")  # warm: templates
    alone_n = requests[: sizes[0]]
    start = time.perf_counter()
    alone = single_updates(model, tok, alone_n, "ROME", {"value_batch_tokens": 0})
    per_request_alone = (time.perf_counter() - start) / len(alone_n)
    out = {"ROME.one_at_a_time_seconds_per_request": per_request_alone}
    cos = []
    for size in sizes:
        start = time.perf_counter()
        together = single_updates(model, tok, requests[:size], "ROME")
        per_request = (time.perf_counter() - start) / size
        out[f"ROME.batched_{size}_seconds_per_request"] = per_request
        out[f"per_request_speedup_{size}"] = per_request_alone / per_request
        for a, b in zip(alone, together):
            cos += [float(torch.nn.functional.cosine_similarity(a[n].flatten().double(), b[n].flatten().double(), 0))
                    for n in a]
    out["min_cos_vs_single"] = min(cos)
    return out


def memit_seconds_per_fact(model, tok, requests, sizes=(1, 8, 32)) -> dict:
    """Seconds per fact of one MEMIT edit of ``size`` facts, the facts' targets optimised
    together (the default) and one at a time (``value_batch_tokens: 0``, as the reference)."""
    from helpers.editing import edit

    edit(model, tok, requests[:1], "MEMIT").restore()  # warm: templates and statistics
    out = {}
    for size in sizes:
        for name, hp in (("", None), ("_one_at_a_time", {"value_batch_tokens": 0})):
            if size == 1 and hp:
                continue  # the same computation
            start = time.perf_counter()
            edit(model, tok, requests[:size], "MEMIT", hp).restore()
            out[f"batch_{size}{name}"] = (time.perf_counter() - start) / size
    return out


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



# each rescue and the plain method it is compared with
RESCUES = {"ROME+RECT": "ROME", "R-ROME": "ROME", "AlphaEdit": "MEMIT", "ENCORE": "MEMIT", "NAS": "MEMIT"}


def bench_rescues(model, tok, res, reqs) -> None:
    """Seconds per edit of each rescue and of its plain method, in the same run (``edit.<R>.over_<M>``:
    the ratio); NAS's anchor, read once per model, timed on its own."""
    from helpers import Regularizer
    from helpers.editing import hparams_for, nas

    hp = hparams_for(model, "NAS", None)
    saved = os.environ.get("EDITHURT_CACHE")
    with tempfile.TemporaryDirectory() as empty:  # what a machine without the cached anchor pays
        os.environ["EDITHURT_CACHE"] = empty
        try:
            started = time.perf_counter()
            nas.anchor(model, tok, hp, hp.layers[-1])
            res["edit.NAS.anchor_seconds"] = time.perf_counter() - started
        finally:
            if saved is None:
                os.environ.pop("EDITHURT_CACHE", None)
            else:
                os.environ["EDITHURT_CACHE"] = saved
    res["edit.NAS.anchor_requests"] = hp.anchor_requests
    for plain in ("ROME", "MEMIT"):
        res[f"edit.{plain}.seconds_per_edit"] = seconds_per_edit(model, tok, plain, reqs)
    for rescue, plain in RESCUES.items():
        if rescue == "ROME+RECT":
            seconds = seconds_per_edit(model, tok, "ROME", reqs, regularizer=Regularizer("rect", 0.4))
        else:
            seconds = seconds_per_edit(model, tok, rescue, reqs)
        res[f"edit.{rescue}.seconds_per_edit"] = seconds
        res[f"edit.{rescue}.over_{plain}"] = seconds / res[f"edit.{plain}.seconds_per_edit"]


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
    many = split_zsre(load_zsre())[1][: max(args.batched_sizes)]
    for key, value in batched_single_edits(model, tok, many, tuple(args.batched_sizes)).items():
        res[f"edit.batched.{key}"] = value
    for key, value in memit_seconds_per_fact(model, tok, many, (1, *args.batched_sizes)).items():
        res[f"edit.MEMIT.seconds_per_fact.{key}"] = value
    res["edit.KN.seconds_per_edit"] = seconds_per_edit(model, tok, "KN", reqs)
    res["edit.KN.seconds_per_edit_whole_model_every_layer"] = seconds_per_edit(
        model, tok, "KN", reqs[1:2], {"reuse_prefix": False}, warm=False)
    res["edit.MEND.seconds_per_edit"] = seconds_per_edit(model, tok, "MEND", reqs)
    bench_rescues(model, tok, res, reqs)
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
    res["edit.ROME.over_floor"] = res["edit.ROME.seconds_per_edit"] / res["edit.ROME.floor_seconds_at_matmul_peak"]
