"""Regularisers through helpers.edit for all four methods, and the k slider's function."""
import pytest
import torch

from helpers import EditRequest, Regularizer, edit
from helpers.editing import apply_update
from helpers.report.sliders import metrics_at
from helpers.editing.performance import editing_metrics
from helpers.editing.regularize import kept_count

REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="Danielle Darrieux speaks",
                  locality_prompt="The capital of France is", locality_answer="Paris")
TEMPLATES = ["{}", "I think that. {}"]


def _hp(model, method):
    gpt2 = type(model).__name__.startswith("GPT2")
    proj = "transformer.h.{}.mlp.c_proj" if gpt2 else "model.layers.{}.mlp.down_proj"
    common = {"rewrite_module_tmp": proj, "layers": [1]}
    if method in ("ROME", "MEMIT"):
        return {**common, "v_num_grad_steps": 3, "context_templates": TEMPLATES,
                "layer_module_tmp": "transformer.h.{}" if gpt2 else "model.layers.{}",
                "mlp_module_tmp": "transformer.h.{}.mlp" if gpt2 else "model.layers.{}.mlp",
                "mom2_adjustment": False}
    return {**common, "steps": 4, "batch_size": 4}


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    from helpers.editing import key_stats as stats

    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    monkeypatch.setattr(stats, "_MEMORY", {})


@pytest.mark.parametrize("method", ["ROME", "MEMIT", "KN"])
@pytest.mark.parametrize("how", ["rect", "random", "pca"])
def test_a_regularizer_shapes_every_update_in_the_out_in_view(tiny_model, tmp_cache, method, how):
    model, tok = tiny_model
    hp = _hp(model, method)
    if method == "MEMIT":
        hp = {**hp, "layers": [0, 1], "mom2_n_samples": 6, "mom2_update_weight": 1.0}
    res = edit(model, tok, REQ, method, hp, regularizer=Regularizer(how, 0.4, seed=3))
    try:
        for name, raw in res.updates.items():
            from helpers.editing.modules import from_param_layout, get_module

            module = get_module(model, name.rsplit(".", 1)[0])
            shaped = from_param_layout(res.deltas[name], module)
            if how == "pca":
                assert (shaped.T[:, kept_count(shaped.shape[0], 0.4):] == 0).all()
            else:
                kept = shaped != 0
                assert int(kept.sum()) <= kept_count(raw.numel(), 0.4)
                assert torch.equal(shaped[kept], raw.to(shaped.dtype)[kept])
    finally:
        res.restore()


def test_apply_update_is_all_or_nothing(tiny_model):
    model, tok = tiny_model
    res = edit(model, tok, REQ, "ROME", _hp(model, "ROME"))
    res.restore()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    (name, upd), = res.updates.items()
    bad = {name: upd, "lm_head.weight" if "lm_head.weight" in before else name + "x": upd}
    with pytest.raises(Exception):
        apply_update(model, bad)
    nan = {name: upd.clone().fill_(float("nan"))}
    with pytest.raises(ValueError, match="non-finite"):
        apply_update(model, nan)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_metrics_at_k_one_equals_the_unregularized_edit(tiny_model):
    model, tok = tiny_model
    res = edit(model, tok, REQ, "ROME", _hp(model, "ROME"))
    res.restore()
    ref = editing_metrics(model, tok, [REQ])
    full = metrics_at(model, tok, [REQ], [res.updates], [ref], Regularizer("none"))
    same = metrics_at(model, tok, [REQ], [res.updates], [ref], Regularizer("rect", 1.0))
    direct = edit(model, tok, REQ, "ROME", _hp(model, "ROME"))
    try:
        after = editing_metrics(model, tok, [REQ], reference=ref)
    finally:
        direct.restore()
    for col in ("reliability", "generalization", "locality"):
        assert full[col].iloc[0] == same[col].iloc[0] == pytest.approx(after[col].iloc[0])


def test_mend_updates_take_a_regularizer_through_apply_update(tiny_model):
    """MEND's updates (both MLP matrices; GPT-2's are Conv1D) shaped by RECT when applied —
    the path helpers.edit takes for every method."""
    from helpers.editing import mend
    from helpers.editing.modules import from_param_layout, get_module

    from tests.integration.test_mend import inner_names

    model, tok = tiny_model
    names = inner_names(model)
    hp = mend.MENDHyperParams(inner_params=names, rank=8)
    factors = mend.gradient_factors(model, tok, [REQ], names)
    with torch.no_grad():
        upd = mend.MEND(model, hp).updates(factors)
    res = apply_update(model, upd, Regularizer("rect", 0.4), method="MEND")
    try:
        for name in names:
            module = get_module(model, name.rsplit(".", 1)[0])
            shaped = from_param_layout(res.deltas[name], module)
            assert shaped.shape == upd[name].shape
            assert int((shaped != 0).sum()) == kept_count(shaped.numel(), 0.4)
    finally:
        res.restore()


def _readout(view):
    return next(w for w in view.children if "edithurt-readout" in getattr(w, "_dom_classes", ()))


def test_the_k_view_shows_the_metrics_of_each_setting_it_is_moved_to(tiny_model):
    import matplotlib

    matplotlib.use("Agg")
    from helpers.report.sliders import ablation_readout, rect_k_view

    model, tok = tiny_model
    res = edit(model, tok, REQ, "ROME", _hp(model, "ROME"))
    res.restore()
    ref = editing_metrics(model, tok, [REQ])
    view = rect_k_view(model, tok, {"ROME": ([REQ], [res.updates], [ref])}, k=0.4)
    (method, how), slider = view.children[0].children, view.children[1]
    shown = []
    for k, reg in ((0.4, "rect"), (0.05, "rect"), (0.05, "random")):
        how.value, slider.value = reg, k
        expected = metrics_at(model, tok, [REQ], [res.updates], [ref], Regularizer(reg, k))
        assert _readout(view).value == "ROME + " + ablation_readout(reg, k, expected)
        shown.append(_readout(view).value)
    assert len(set(shown)) == 3  # each move changed what is shown
