"""ROME on tiny random GPT-2 (Conv1D) and Llama (Linear) models, and on SmolLM2."""
import copy
import dataclasses

import pytest
import torch

from helpers import EditRequest
from helpers.editing import EditError, HparamsError, LayerError, apply_update, edit, rome
from helpers.errors import UnknownNameError
from tests.numerics import assert_close

REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="Danielle Darrieux speaks",
                  locality_prompt="The capital of France is", locality_answer="Paris")
TEMPLATES = ["{}", "I think that. {}", "The story goes. {}"]


def tiny_hparams(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    hp = {
        "layers": [1], "v_num_grad_steps": 8, "v_lr": 0.5, "context_templates": TEMPLATES,
        "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj" if gpt2 else "model.layers.{}.mlp.down_proj",
        "layer_module_tmp": "transformer.h.{}" if gpt2 else "model.layers.{}",
        "mlp_module_tmp": "transformer.h.{}.mlp" if gpt2 else "model.layers.{}.mlp",
    }
    return {**hp, **over}


def test_rome_update_is_rank_one_in_the_parameters_layout(tiny_model):
    model, tok = tiny_model
    res = edit(model, tok, REQ, "ROME", tiny_hparams(model))
    try:
        (name, delta), = res.deltas.items()
        w = dict(model.named_parameters())[name]
        assert delta.shape == w.shape
        assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) == 1
    finally:
        res.restore()


def test_rome_maps_the_key_to_the_value_and_spares_orthogonal_keys(tiny_model):
    model, tok = tiny_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model))
    u = rome.compute_u(model, tok, REQ, hp, 1, TEMPLATES)
    v, k, out = rome.compute_v(model, tok, REQ, hp, 1, TEMPLATES)
    upd = rome.rome_update(model, tok, REQ, hp, TEMPLATES)
    (delta,) = upd.values()  # [out, in]
    assert torch.allclose(out + delta @ k, v, atol=1e-4 * v.norm())  # W' k = v
    x = torch.randn(k.shape[0], dtype=torch.float64)
    x -= (x @ u.double()) * u.double()  # orthogonal to u
    assert (delta.double() @ x).norm() < 1e-5 * (delta.double().norm() * x.norm())


def test_restore_is_bit_exact_and_sequential_edits_stack(tiny_model):
    model, tok = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    r1 = edit(model, tok, REQ, "ROME", tiny_hparams(model))
    r2 = edit(model, tok, REQ, "ROME", tiny_hparams(model, layers=[0]))
    (n1,), (n2,) = r1.deltas, r2.deltas
    assert n1 != n2 and not torch.equal(dict(model.named_parameters())[n1], before[n1])
    r2.restore()
    r1.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_conv1d_and_linear_give_the_same_update_on_equivalent_weights(smol_tokenizer):
    from tests.conftest import _tiny

    tok = smol_tokenizer
    conv = _tiny("gpt2", len(tok))
    lin = copy.deepcopy(conv)
    for block in lin.transformer.h:
        c = block.mlp.c_proj
        layer = torch.nn.Linear(c.weight.shape[0], c.weight.shape[1])
        with torch.no_grad():
            layer.weight.copy_(c.weight.T)
            layer.bias.copy_(c.bias)
        block.mlp.c_proj = layer
    hp = tiny_hparams(conv)
    d_conv = edit(conv, tok, REQ, "ROME", hp).deltas["transformer.h.1.mlp.c_proj.weight"]
    d_lin = edit(lin, tok, REQ, "ROME", hp).deltas["transformer.h.1.mlp.c_proj.weight"]
    assert d_conv.shape == d_lin.T.shape
    assert_close(d_conv, d_lin.T)  # a transposed layout read wrongly moves every element by O(1)


def test_regularizer_shapes_the_update_that_is_added(tiny_model):
    model, tok = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = edit(model, tok, REQ, "ROME", tiny_hparams(model), regularizer=lambda d, w: d * 0.5)
    (name, delta), = res.deltas.items()
    added = dict(model.named_parameters())[name] - before[name]
    # (W + δ) − W is exact to float32's rounding of W's elements, whatever δ's size
    assert_close(added, delta, scale=before[name].abs().max() + delta.abs().max())
    res.restore()


def test_bad_edits_are_refused_with_a_clear_error(tiny_model):
    model, tok = tiny_model
    hp = tiny_hparams(model)
    with pytest.raises(UnknownNameError, match="unknown method 'ROEM'.*'ROME'"):
        edit(model, tok, REQ, "ROEM", hp)
    with pytest.raises(EditError, match="one fact at a time"):
        edit(model, tok, [REQ, REQ], "ROME", hp)
    with pytest.raises(EditError, match="does not occur in the prompt"):
        edit(model, tok, dataclasses.replace(REQ, subject="Edith Piaf"), "ROME", hp)
    with pytest.raises(EditError, match="empty target_new"):
        edit(model, tok, dataclasses.replace(REQ, target_new="  "), "ROME", hp)
    with pytest.raises(LayerError, match=r"out of range: the model has 2 layers \(0..1\)"):
        edit(model, tok, REQ, "ROME", {**hp, "layers": [7]})
    with pytest.raises(HparamsError, match="unknown ROMEHyperParams key 'v_num_grad_step'; did you mean 'v_num_grad_steps'"):
        edit(model, tok, REQ, "ROME", {**hp, "v_num_grad_step": 3})
    with pytest.raises(HparamsError, match="exactly one"):
        edit(model, tok, REQ, "ROME", {**hp, "context_templates": ["no slot"]})


def test_shipped_hparams_files_read_as_they_are():
    from helpers.editing.hparams import load_hparams

    for model_name, layer, module in [("gpt2-xl", 17, "transformer.h.{}.mlp.c_proj"),
                                      ("llama-7b", 5, "model.layers.{}.mlp.down_proj")]:
        hp = load_hparams(rome.ROMEHyperParams, "ROME", model_name)
        assert hp.layers == [layer] and hp.rewrite_module_tmp == module and hp.mom2_adjustment is False
    hp = load_hparams(rome.ROMEHyperParams, "ROME", "smollm2-135m", {"v_lr": 0.1})
    assert hp.v_lr == 0.1 and hp.rewrite_module_tmp == "model.layers.{}.mlp.down_proj"


@pytest.mark.model
@pytest.mark.slow
def test_rome_on_smollm2_makes_the_target_the_greedy_continuation(smollm2):
    from helpers import generate
    from helpers.editing.performance import editing_metrics

    model, tok = smollm2
    req = EditRequest(prompt="The name of the country of citizenship of Leonardo DiCaprio is",
                      subject="Leonardo DiCaprio", target_new="Syria", ground_truth="United States",
                      rephrase="Leonardo DiCaprio is a citizen of", locality_prompt="The capital of France is",
                      locality_answer="Paris")
    ref = editing_metrics(model, tok, [req])
    before = generate(model, tok, [req.prompt, req.locality_prompt], 3, progress=False)
    assert not before[0].text.strip().startswith("Syria")
    res = edit(model, tok, req, "ROME", {"context_templates": TEMPLATES, "v_num_grad_steps": 20})
    try:
        after = generate(model, tok, [req.prompt, req.locality_prompt], 3, progress=False)
        assert after[0].text.strip().startswith("Syria")
        assert after[1].text == before[1].text  # the unrelated prompt keeps its answer
        met = editing_metrics(model, tok, [req], reference=ref).iloc[0]
        assert met.reliability == 1.0 and met.locality == 1.0
    finally:
        res.restore()


def test_mom2_adjustment_whitens_the_key(tiny_model, tmp_path, monkeypatch):
    """With mom2_adjustment, u is C⁻¹k normalised, C the cached key second moment."""
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    from helpers.editing import key_stats as stats

    monkeypatch.setattr(stats, "_MEMORY", {})
    model, tok = tiny_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model, mom2_adjustment=True, mom2_n_samples=6))
    inv = stats.inverse_key_covariance(model, tok, hp.rewrite_module_tmp.format(1), hp)
    plain = rome.compute_u(model, tok, REQ, hp, 1, TEMPLATES)
    adjusted = rome.compute_u(model, tok, REQ, hp, 1, TEMPLATES, inv)
    expected = inv @ plain
    assert_close(adjusted, expected / expected.norm())
    res = edit(model, tok, REQ, "ROME", tiny_hparams(model, mom2_adjustment=True, mom2_n_samples=6))
    (delta,) = res.deltas.values()
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) == 1
    res.restore()


def test_hparams_from_a_yaml_path_an_object_and_bad_files(tmp_path):
    from helpers.editing.hparams import load_hparams

    shipped = (load_hparams.__globals__["HPARAMS_DIR"] / "ROME" / "gpt2-xl.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(shipped.replace("layers: [17]", "layers: [12]"))
    hp = load_hparams(rome.ROMEHyperParams, "ROME", "anything", str(path))
    assert hp.layers == [12] and hp.v_loss_layer == 47
    assert load_hparams(rome.ROMEHyperParams, "ROME", "anything", hp) is hp
    path.write_text(shipped + "\nclamp_norm: 3\n")
    with pytest.raises(HparamsError, match=r"mine.yaml: unknown ROMEHyperParams key 'clamp_norm'; did you mean 'clamp_norm_factor'"):
        load_hparams(rome.ROMEHyperParams, "ROME", "anything", str(path))
    with pytest.raises(HparamsError, match="no ROME hparams shipped for model 'tiny-thing'"):
        load_hparams(rome.ROMEHyperParams, "ROME", "tiny-thing", {"layers": [1]})


def _count_adam_steps(monkeypatch):
    steps = []
    real = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    return steps


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_value_optimisation_makes_one_update_fewer_than_its_steps(tiny_model, monkeypatch, reuse_prefix):
    """The reference's loop breaks at it == v_num_grad_steps - 1 before the backward pass."""
    model, tok = tiny_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model, v_num_grad_steps=5, early_stop_loss=-1.0))
    steps = _count_adam_steps(monkeypatch)
    module = rome.get_module(model, hp.rewrite_module_tmp.format(1))
    rome.optimize_target(model, tok, REQ, hp, module, TEMPLATES, 1, reuse_prefix=reuse_prefix)
    assert len(steps) == 4
    steps.clear()
    rome.optimize_target(model, tok, REQ, dataclasses.replace(hp, v_num_grad_steps=1), module, TEMPLATES, 1)
    assert steps == []  # one step: the initial value, unchanged


def test_several_rome_layers_are_edited_in_turn(tiny_model):
    """rome's execute_rome: lowest layer first, each next layer's u and v computed with the
    layers below already updated; the model is left as it was."""
    model, tok = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    two = rome.ROMEHyperParams(**tiny_hparams(model, layers=[1, 0]))
    upd = rome.rome_update(model, tok, REQ, two, TEMPLATES)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    names = [f"{two.rewrite_module_tmp.format(l)}.weight" for l in (0, 1)]
    assert sorted(upd) == sorted(names)
    first = rome.rome_update(model, tok, REQ, dataclasses.replace(two, layers=[0]), TEMPLATES)
    assert_close(upd[names[0]], first[names[0]])
    res = apply_update(model, first)
    try:
        second = rome.rome_update(model, tok, REQ, dataclasses.replace(two, layers=[1]), TEMPLATES)
    finally:
        res.restore()
    assert_close(upd[names[1]], second[names[1]])  # computed on the unedited layer 0, it would differ by O(1)


def test_settings_rome_would_ignore_are_refused(tiny_model):
    model, tok = tiny_model
    with pytest.raises(HparamsError, match="fact_token 'last' is not implemented"):
        edit(model, tok, REQ, "ROME", tiny_hparams(model, fact_token="last"))
    with pytest.raises(HparamsError, match="ROME reads its loss from the model's output"):
        edit(model, tok, REQ, "ROME", tiny_hparams(model, v_loss_layer=0))
    with pytest.raises(HparamsError, match="out of range"):
        edit(model, tok, REQ, "ROME", tiny_hparams(model, v_loss_layer=9))
    edit(model, tok, REQ, "ROME", tiny_hparams(model, v_loss_layer=1, v_num_grad_steps=2)).restore()  # the last layer
