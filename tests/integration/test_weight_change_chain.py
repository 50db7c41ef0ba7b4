"""Notebook 02's weight-change chain runs on the one chain runner: a longer chain resumes from the
shorter one's stored point (jumping to its weights, editing only what is new) and gives what one
uninterrupted chain gives."""
import pytest

import helpers.runs.chain
from helpers.model import LoadedModel
from helpers.runs import experiments
from tests.integration.test_rome import tiny_hparams

pytestmark = [pytest.mark.data]


def test_a_longer_chain_resumes_from_the_stored_one_and_equals_one_run(tiny_model, tmp_path, monkeypatch):
    model, tok = tiny_model
    loaded = LoadedModel(f"tiny-{type(model).__name__}", model, tok)
    run = dict(method="ROME", n_single=0, seed=0, hparams=tiny_hparams(model), progress=False)
    whole, _ = experiments.weight_change(loaded, max_edits=3, store=tmp_path / "whole.jsonl", **run)

    experiments.weight_change(loaded, max_edits=2, store=tmp_path / "parts.jsonl", **run)
    edits = []
    real = helpers.runs.chain.edit
    monkeypatch.setattr(helpers.runs.chain, "edit", lambda *a, **k: edits.append(1) or real(*a, **k))
    resumed, cumulative = experiments.weight_change(loaded, max_edits=3, store=tmp_path / "parts.jsonl", **run)
    assert len(edits) == 1  # edits 1 and 2 were read back: the chain jumped to their weights
    assert sorted(cumulative) == [1, 2, 3]
    keys = ["edits", "parameter"]
    assert resumed[keys].values.tolist() == whole[keys].values.tolist()
    # the same weights reached by the same edits: equal up to float32 rounding
    assert resumed.manhattan.tolist() == pytest.approx(whole.manhattan.tolist(), rel=1e-5)


def test_a_clone_without_the_weights_edits_again_and_keeps_the_committed_rows(tiny_model, tmp_path):
    # weights are not committed: a fresh clone replays the chain for Fig. 5, but must not append its rows
    # again (that would change the committed store on every clone)
    import shutil

    model, tok = tiny_model
    loaded = LoadedModel(f"tiny-{type(model).__name__}", model, tok)
    run = dict(method="ROME", n_single=0, seed=0, hparams=tiny_hparams(model), progress=False)
    store = tmp_path / "edits.jsonl"
    first, _ = experiments.weight_change(loaded, max_edits=2, store=store, **run)
    committed = store.read_bytes()
    shutil.rmtree(tmp_path / "edits_tensors")
    again, cumulative = experiments.weight_change(loaded, max_edits=2, store=store, **run)
    assert store.read_bytes() == committed
    assert again.equals(first)
    assert sorted(cumulative) == [1, 2]
