"""The side-effect sweep runner on a tiny random model: shared prefixes, resume, restore."""
import pytest
import torch

import helpers.runs.chain
import helpers.runs.sweep
from helpers.errors import UnknownNameError
from helpers.model import LoadedModel
from helpers.runs.sweep import Chain, SweepError, chains, side_effects
from tests.numerics import assert_values_close

pytestmark = [pytest.mark.data]

TASKS = ["sentiment", "nli"]
MEASURES = ["value", "gold_nll", "label_acc", "valid_rate"]


def _hp(model):
    gpt2 = type(model).__name__.startswith("GPT2")
    fmt = "transformer.h.{}" if gpt2 else "model.layers.{}"
    return {"ROME": {"layers": [2], "rewrite_module_tmp": fmt + (".mlp.c_proj" if gpt2 else ".mlp.down_proj"),
                     "layer_module_tmp": fmt, "mlp_module_tmp": fmt + ".mlp", "v_num_grad_steps": 3,
                     "context_templates": ["{}", "I think that. {}"], "mom2_adjustment": False}}


def _run(model_tok, chain_list, **kw):
    model, tok = model_tok
    return side_effects(chain_list, LoadedModel("tiny", model, tok), TASKS, n=2, seed=0, hparams=_hp(model),
                        progress=False, **kw)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_points_of_one_chain_equal_separate_chains_and_the_model_is_restored(tiny_deep_model):
    model, _ = tiny_deep_model
    before = _snapshot(model)
    long = _run(tiny_deep_model, [Chain("ROME", 1, (0, 1, 2))])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    short = _run(tiny_deep_model, [Chain("ROME", 1, (2,))])
    at2 = long[long.edits == 2].reset_index(drop=True)
    assert at2[["task", "value", "valid_rate"]].equals(short[["task", "value", "valid_rate"]])
    # the lower-layer cache filled at point 1 serves point 2: the same numbers as a fresh read
    assert_values_close(at2.gold_nll, short.gold_nll)
    # the edits did something: the gold answers' NLL moved
    base = long[long.edits == 0].gold_nll.to_numpy()
    assert (abs(at2.gold_nll.to_numpy() - base) > 1e-6).any()


def test_an_interrupted_chain_resumes_from_its_last_checkpoint(tiny_deep_model, tmp_path, monkeypatch):
    model, _ = tiny_deep_model
    before = _snapshot(model)
    chain = [Chain("ROME", 1, (0, 1, 2, 3))]
    reference = _run(tiny_deep_model, chain, store=tmp_path / "reference.jsonl")

    calls = {"edit": 0, "eval": 0}
    # the names the sweep calls (the chain runner's edit, the sweep's evaluate_examples)
    real_edit, real_eval = helpers.runs.chain.edit, helpers.runs.sweep.evaluate_examples

    def counting_edit(*a, **k):
        calls["edit"] += 1
        return real_edit(*a, **k)

    def failing_eval(*a, **k):
        calls["eval"] += 1
        if fail_at is not None and calls["eval"] == fail_at:
            raise KeyboardInterrupt("killed")
        return real_eval(*a, **k)

    monkeypatch.setattr(helpers.runs.chain, "edit", counting_edit)
    monkeypatch.setattr(helpers.runs.sweep, "evaluate_examples", failing_eval)
    fail_at = 2 * len(TASKS) + 2  # the second task of the third point (2 edits)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_deep_model, chain, store=tmp_path / "run.jsonl")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert (calls["edit"], calls["eval"]) == (2, fail_at)

    calls.update(edit=0, eval=0)
    fail_at = None
    resumed = _run(tiny_deep_model, chain, store=tmp_path / "run.jsonl")
    # from the state stored right after edit 2: edit 3 only; the 3 missing evaluations only
    assert (calls["edit"], calls["eval"]) == (1, 1 + len(TASKS))
    cols = ["edits", "task", "value", "valid_rate"]
    assert resumed[cols].equals(reference[cols])
    assert_values_close(resumed.gold_nll, reference.gold_nll)

    calls.update(edit=0, eval=0)
    again = _run(tiny_deep_model, chain, store=tmp_path / "run.jsonl")
    assert calls == {"edit": 0, "eval": 0} and again[cols].equals(resumed[cols])


def test_a_sweep_whose_rows_are_stored_reads_them_while_another_process_holds_the_store(tiny_deep_model, tmp_path):
    import subprocess
    import sys
    import threading

    store = tmp_path / "r.jsonl"
    chain = [Chain("ROME", 1, (0, 1))]
    first = _run(tiny_deep_model, chain, store=store)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom helpers.runs.store import store_lock\n"
                               "with store_lock(sys.argv[1]):\n    print('HOLDING', flush=True)\n    time.sleep(600)",
                               str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HOLDING"
        out = {}
        reader = threading.Thread(target=lambda: out.update(df=_run(tiny_deep_model, chain, store=store)))
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "a sweep with nothing to compute waited for the store's writer"
        assert out["df"].equals(first)
    finally:
        holder.kill()
        holder.wait()


def test_chains_read_a_profile_grid():
    grid = chains({"ROME": [0, 5, 1]}, {"MEMIT": [1, 10]}, {"MEND": {"batch_size": 4, "edits": [0, 1, 2]}})
    assert [(c.method, c.setting, c.batch_size, c.checkpoints) for c in grid] == [
        ("ROME", "instance-sequential", 1, (0, 1, 5)), ("MEMIT", "batch-single", 1, (0, 1)),
        ("MEMIT", "batch-single", 10, (0, 1)), ("MEND", "batch-sequential", 4, (0, 1, 2))]


def test_bad_chains_are_named():
    with pytest.raises(SweepError, match="one fact at a time"):
        Chain("ROME", 2)
    with pytest.raises(UnknownNameError, match="Did you mean 'MEMIT'"):
        Chain("MEMT")
    with pytest.raises(SweepError, match=">= 0"):
        Chain("ROME", 1, (-1, 2))
    with pytest.raises(SweepError, match="batch_size: B, edits"):
        chains(batch_sequential={"MEMIT": [1, 2]})


def test_every_edit_leaves_a_trace_and_a_store_without_traces_replays_to_add_them(tiny_deep_model, tmp_path):
    model, tok = tiny_deep_model
    chain = [Chain("ROME", 1, (0, 3))]  # one checkpoint after 3 edits: traces after edits 1, 2 and 3
    store = tmp_path / "run.jsonl"
    _run(tiny_deep_model, chain, store=store)
    call = dict(model=LoadedModel("tiny", model, tok), tasks=TASKS, n=2, seed=0, hparams=_hp(model), store=store)
    traces = helpers.runs.sweep.edit_traces(chain, **call)
    assert traces.edits.tolist() == [0, 1, 2, 3] and (traces.norm_growth.iloc[1:] != 1.0).all()
    assert traces.norm_growth.iloc[0] == 1.0 and traces.heldout_nll.nunique() == 4  # each edit moved the text's NLL
    # the held-out NLL after the last edit is the checkpoint's perplexity, read apart
    signals = helpers.runs.sweep.checkpoint_measures(chain, "signals", **call)
    assert traces.heldout_nll.iloc[-1] == pytest.approx(float(torch.tensor(signals.perplexity.iloc[-1]).log()),
                                                        rel=1e-4)
    # a store written before traces were kept: the chain is not skipped over its stored state, it is replayed
    lines = [line for line in store.read_text().splitlines() if "side_effects_trace" not in line]
    store.write_text("\n".join(lines) + "\n")
    with pytest.raises(SweepError, match="no trace"):
        helpers.runs.sweep.edit_traces(chain, **call)
    _run(tiny_deep_model, chain, store=store)
    again = helpers.runs.sweep.edit_traces(chain, **call)
    assert_values_close(again.heldout_nll, traces.heldout_nll)
