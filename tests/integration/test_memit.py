"""MEMIT on tiny random GPT-2 / Llama models: batches, the least-squares update, statistics."""
import json

import pytest
import torch

from helpers import EditRequest
from helpers.editing import edit, memit
from helpers.editing.rome import read_at_subject
from helpers.editing.modules import get_module
from tests.integration.test_rome import TEMPLATES, tiny_hparams
from tests.numerics import assert_close, close

REQS = [
    EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux", target_new="English",
                ground_truth="French", rephrase="x", locality_prompt="y", locality_answer="z"),
    EditRequest(prompt="Apple A5 was created by", subject="Apple A5", target_new="Google",
                ground_truth="Apple", rephrase="x", locality_prompt="y", locality_answer="z"),
]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    from helpers.editing import key_stats as stats

    monkeypatch.setattr(stats, "_MEMORY", {})
    return tmp_path


def memit_hparams(model, **over):
    # joint: one solve over a batch (the released editor's chunks are tests/integration/test_batch_edit.py's)
    return {**tiny_hparams(model, layers=[0, 1]), "mom2_n_samples": 6, "mom2_update_weight": 1.0,
            "clamp_norm_factor": 4.0, "batch_edit": "joint", **over}


def test_memit_batch_moves_the_residual_towards_its_targets(tiny_model, tmp_cache):
    model, tok = tiny_model
    hp = memit.MEMITHyperParams(**memit_hparams(model))
    z_module = get_module(model, hp.layer_module_tmp.format(1))
    from helpers.editing.rome import optimize_target

    zs = torch.stack([optimize_target(model, tok, r, hp, z_module, TEMPLATES) for r in REQS])
    _, before = read_at_subject(model, tok, z_module, [r.prompt for r in REQS], [r.subject for r in REQS])
    res = edit(model, tok, REQS, "MEMIT", memit_hparams(model))
    try:
        _, after = read_at_subject(model, tok, z_module, [r.prompt for r in REQS], [r.subject for r in REQS])
        gap_before = (zs - before).norm(dim=1)
        gap_after = (zs - after).norm(dim=1)
        assert (gap_after < 0.5 * gap_before).all()
        assert len(res.deltas) == 2
        for name, d in res.deltas.items():
            assert d.shape == dict(model.named_parameters())[name].shape
            assert torch.linalg.matrix_rank(d.double(), rtol=1e-6) <= len(REQS)
    finally:
        res.restore()


def test_statistics_are_cached_as_safetensors_with_a_record(tiny_model, tmp_cache):
    from helpers.editing import key_stats as stats

    model, tok = tiny_model
    name = memit.MEMITHyperParams(**memit_hparams(model)).rewrite_module_tmp.format(0)
    m1 = stats.key_second_moments(model, tok, [name], "self", 6, "float32", "tiny")[name]
    files = list((tmp_cache / "stats").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_cache / "stats").glob("*.pkl"))
    record = json.loads(files[0].with_suffix(".json").read_text())
    assert record["corpus"] == "self" and record["n_samples"] == 6 and record["tokens"] > 6
    assert torch.allclose(m1, m1.T) and (torch.linalg.eigvalsh(m1.double()) > -1e-6).all()
    stats._MEMORY.clear()
    m2 = stats.key_second_moments(model, tok, [name], "self", 6, "float32", "tiny")[name]
    assert torch.equal(m1, m2)  # read back from disk


def test_memit_restores_exactly(tiny_model, tmp_cache):
    model, tok = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = edit(model, tok, REQS, "MEMIT", memit_hparams(model))
    res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_shipped_memit_files():
    from helpers.editing.hparams import load_hparams

    hp = load_hparams(memit.MEMITHyperParams, "MEMIT", "gpt2-xl")
    assert hp.layers == [13, 14, 15, 16, 17] and hp.mom2_update_weight == 20000 and hp.clamp_norm_factor == 0.75
    hp = load_hparams(memit.MEMITHyperParams, "MEMIT", "llama-7b")
    assert hp.layers == [4, 5, 6, 7, 8] and hp.mom2_update_weight == 15000


def test_keys_are_averaged_within_template_groups_then_over_groups(tiny_model):
    """memit's compute_ks: the bare prompt (a group of its own) weighs 1/2, not 1/len(templates)."""
    from helpers.editing.modules import module_input_at
    from helpers.editing.positions import in_template, subject_last_index

    model, tok = tiny_model
    hp = memit.MEMITHyperParams(**memit_hparams(model))
    groups = [["{}"], ["I think that. {}", "The story goes. {}", "Once upon a time. {}"]]
    got = memit.keys_at(model, tok, REQS[:1], hp, 0, groups)[0]

    def key(t):
        text, start = in_template(t, REQS[0].prompt, REQS[0].subject)
        idx = subject_last_index(tok, text, REQS[0].subject, start)
        return module_input_at(model, tok, hp.rewrite_module_tmp.format(0), [text], [idx])[0]

    bare, rest = key("{}"), torch.stack([key(t) for t in groups[1]]).mean(0)
    want = (bare + rest) / 2
    assert_close(got, want)  # the one-and-the-rest average; the flat mean below is 1e-2 of the scale away
    flat = (bare + 3 * rest) / 4
    assert not close(got, flat, rel=1e-3)
    # a flat list of fixed templates takes the same two-group form
    assert memit.template_groups(model, tok, memit.MEMITHyperParams(
        **memit_hparams(model, context_templates=["{}", *groups[1]]))) == groups


def test_the_loss_layer_is_read_through_the_final_norm_and_head(tiny_model):
    """memit's compute_z reads the NLL from layer max(v_loss_layer, z layer): read at the last
    block through ln_f and the head it equals the model's own output."""
    from helpers.editing.rome import loss_layer_of, optimize_target

    model, tok = tiny_model
    hp = memit.MEMITHyperParams(**memit_hparams(model, layers=[0], v_num_grad_steps=4, early_stop_loss=-1.0,
                                                ln_f_module="transformer.ln_f" if model.config.model_type == "gpt2"
                                                else "model.norm",
                                                lm_head_module="lm_head"))
    z_module = get_module(model, hp.layer_module_tmp.format(0))
    plain = optimize_target(model, tok, REQS[0], hp, z_module, TEMPLATES, 0)
    at_last = optimize_target(model, tok, REQS[0], hp, z_module, TEMPLATES, 0, loss_layer=1)
    assert_close(at_last, plain)
    at_z = optimize_target(model, tok, REQS[0], hp, z_module, TEMPLATES, 0, loss_layer=0)
    assert not close(at_z, plain, rel=1e-3)
    assert loss_layer_of(model, hp, 0) is None  # -1: the last block, read as the model's output
    assert loss_layer_of(model, memit.MEMITHyperParams(**memit_hparams(model, v_loss_layer=0)), 1) is None
    assert loss_layer_of(model, memit.MEMITHyperParams(**memit_hparams(model, v_loss_layer=0)), 0) == 0
