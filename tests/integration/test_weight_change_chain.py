"""Notebook 02's weight-change chain runs on the one chain runner: a longer chain resumes from the
shorter one's stored point (jumping to its weights, editing only what is new) and gives what one
uninterrupted chain gives."""
import pytest
import torch

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


def test_a_fresh_clone_draws_the_chain_from_its_committed_factors(tiny_model, tmp_path, monkeypatch):
    # the edited weights (<store>_tensors/) are not committed; the rows and the low-rank factors of
    # every ΔW (<store>_kept/) are: a clone reads those and edits nothing
    import shutil

    model, tok = tiny_model
    loaded = LoadedModel(f"tiny-{type(model).__name__}", model, tok)
    run = dict(method="ROME", n_single=0, seed=0, hparams=tiny_hparams(model), progress=False)
    store = tmp_path / "edits.jsonl"
    first, drawn = experiments.weight_change(loaded, max_edits=3, store=store, **run)
    assert len(list((tmp_path / "edits_kept").glob("*.safetensors"))) == 3
    shutil.rmtree(tmp_path / "edits_tensors")

    edits = []
    real = helpers.runs.chain.edit
    monkeypatch.setattr(helpers.runs.chain, "edit", lambda *a, **k: edits.append(1) or real(*a, **k))
    again, cumulative = experiments.weight_change(loaded, max_edits=3, store=store, **run)
    assert edits == []
    assert again.equals(first)
    for count in (1, 2, 3):
        for name, delta in drawn[count].items():
            assert torch.equal(cumulative[count][name], delta)  # both drawn from the same factors
    assert not (tmp_path / "edits_tensors").exists()


def test_low_rank_factors_give_back_the_update_at_float32_scale():
    from helpers.editing.weight_stats import from_low_rank_factors, low_rank_factors

    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(24, 40, generator=gen)
    update = sum(torch.outer(torch.randn(24, generator=gen), torch.randn(40, generator=gen)) for _ in range(3))
    delta = (w0 + update) - w0  # what the store sees: rank 3 plus float32 rounding
    factors = low_rank_factors({"w": delta})
    assert factors["s/w"].shape == (3,)
    back = from_low_rank_factors(factors)["w"]
    assert (back - delta).abs().max() <= 1e-5 * delta.abs().max()
    assert low_rank_factors({"w": torch.randn(24, 40, generator=gen)}, max_rank=8) is None  # full rank: kept whole


def test_the_k_slider_reads_committed_factors_on_a_fresh_clone(tiny_model, tmp_path, monkeypatch):
    import shutil

    model, tok = tiny_model
    loaded = LoadedModel(f"tiny-{type(model).__name__}", model, tok)
    store = tmp_path / "edits.jsonl"
    run = dict(n=2, seed=0, hparams=tiny_hparams(model), store=store)
    _, first, _ = experiments.ablation_inputs(loaded, "ROME", **run)
    assert len(list((tmp_path / "edits_kept").glob("*.safetensors"))) == 2
    shutil.rmtree(tmp_path / "edits_tensors")

    def no_edit(*a, **k):
        raise AssertionError("a fresh clone edited again")

    monkeypatch.setattr(experiments, "single_updates", no_edit)
    monkeypatch.setattr(experiments, "edit", no_edit)
    _, again, _ = experiments.ablation_inputs(loaded, "ROME", **run)
    for one, other in zip(first, again):
        assert one.keys() == other.keys()
        for name in one:
            assert (one[name] - other[name]).abs().max() <= 1e-5 * one[name].abs().max()
