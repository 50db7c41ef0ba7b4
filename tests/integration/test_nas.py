"""NAS (helpers/editing/nas.py) pinned to its defining computations, computed here independently on
a tiny model: each solved value is rescaled to the anchor's norm in its own direction (a value
above skip_factor × the anchor is not written); the anchor is the trimmed mean of the solved
values' norms on the unedited model. And NAS was added through the registry alone."""
from pathlib import Path

import pytest
import torch

import helpers
from helpers import EditRequest
from helpers.editing import EditSequence, hparams_for, memit, nas
from helpers.editing.modules import get_module
from helpers.editing.targets import optimize_targets
from tests.integration.test_reference_losses import _output_at, _subject_last
from tests.numerics import assert_close

pytestmark = [pytest.mark.data]

REQS = [
    EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "Old Norse", "French",
                "Danielle Darrieux speaks", "The capital of France is", "Paris"),
    EditRequest("Apple A5 was created by", "Apple A5", "Google", "Apple", "Apple A5 was made by", "The sky is", "blue"),
    EditRequest("The Eiffel Tower is in", "Eiffel Tower", "Rome", "Paris", "The Eiffel Tower stands in", "Two plus two is",
                "four"),
    EditRequest("Toyota was founded in", "Toyota", "Brazil", "Japan", "Toyota began in", "Water is", "wet"),
]
TEMPLATES = ["{}", "I think that. {}"]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    from helpers.editing import key_stats

    monkeypatch.setattr(key_stats, "_MEMORY", {})
    monkeypatch.setattr(nas, "_ANCHORS", {})
    return tmp_path


def _hp(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    base = "transformer.h.{}" if gpt2 else "model.layers.{}"
    return hparams_for(model, "NAS", {
        "layers": [0, 1], "context_templates": TEMPLATES, "v_num_grad_steps": 6, "v_lr": 0.5,
        "mom2_update_weight": 5.0, "mom2_n_samples": 6, "clamp_norm_factor": 4.0, "nullspace_threshold": 1e3,
        "anchor_requests": 4, "anchor_batch": 2, "anchor_trim": 0.25,
        "rewrite_module_tmp": base + (".mlp.c_proj" if gpt2 else ".mlp.down_proj"), "layer_module_tmp": base,
        "mlp_module_tmp": base + ".mlp", **over})


def _here(model, tok, hp, requests):
    """(h₀, v₀) of each request: the last edited block's and its MLP's outputs at the subject's
    last token, read by hooks here."""
    layer = hp.layers[-1]
    block = get_module(model, hp.layer_module_tmp.format(layer))
    mlp = get_module(model, hp.mlp_module_tmp.format(layer))
    out = []
    for module in (block, mlp):
        out.append(torch.stack([_output_at(model, module, tok(r.prompt).input_ids, _subject_last(tok, r.prompt, r.subject))
                                for r in requests]))
    return out


def test_each_value_is_rescaled_to_the_anchor_in_its_own_direction(tiny_model, tmp_cache, monkeypatch):
    model, tok = tiny_model
    hp = _hp(model)
    setting = memit.edit_setting(model, tok, hp)
    layer = hp.layers[-1]
    block = get_module(model, hp.layer_module_tmp.format(layer))
    plain = optimize_targets(model, tok, REQS, hp, block, TEMPLATES, layer)  # MEMIT's targets, unscaled
    h0, v0 = _here(model, tok, hp, REQS)
    v_plain = v0 + plain - h0
    norms = v_plain.norm(dim=-1)
    rho = float(norms.median())  # two values above it, two below; none beyond 2ρ unless far apart
    monkeypatch.setattr(nas, "anchor", lambda *a, **k: rho)
    zs, skipped = nas.anchored_targets(model, tok, REQS, hp, setting)
    expect_skip = norms > 2 * rho
    assert skipped.tolist() == expect_skip.tolist()
    v = v0 + zs - h0  # the value NAS asks for
    for i in range(len(REQS)):
        if expect_skip[i]:
            assert_close(zs[i], h0[i], what="a skipped request: the block's output unchanged")
        else:
            assert_close(v[i].norm(), torch.tensor(rho), what="the anchor's norm")
            assert_close(v[i] / v[i].norm(), v_plain[i] / norms[i], what="the solved value's direction")
    # a small anchor: every value is more than twice it, nothing is written
    monkeypatch.setattr(nas, "anchor", lambda *a, **k: float(norms.min()) / 3)
    zs, skipped = nas.anchored_targets(model, tok, REQS, hp, setting)
    assert skipped.all()
    assert_close(zs, h0, what="every request skipped")


def test_the_anchor_is_the_trimmed_mean_of_the_solved_values_norms(tiny_model, tmp_cache):
    model, tok = tiny_model
    hp = _hp(model)
    layer = hp.layers[-1]
    block = get_module(model, hp.layer_module_tmp.format(layer))
    rho = nas.anchor(model, tok, hp, layer, records=REQS)
    # independently: every request solved on its bare prompt, the largest 25% (one of four) left out
    bare = nas.NASHyperParams(**{**hp.__dict__, "context_templates": ["{}"]})
    pool = sorted(REQS, key=lambda r: r.case_id)
    import random

    random.Random(hp.anchor_seed).shuffle(pool)
    h0, v0 = _here(model, tok, hp, pool)
    z = torch.cat([optimize_targets(model, tok, pool[i:i + 2], bare, block, ["{}"], layer) for i in (0, 2)])
    norms = sorted((v0 + z - h0).norm(dim=-1).tolist())
    assert rho == pytest.approx(sum(norms[:3]) / 3, rel=1e-5)
    files = list((tmp_cache / "nas").glob("*.json"))
    assert len(files) == 1
    nas._ANCHORS.clear()
    assert nas.anchor(model, tok, hp, layer, records=[]) == pytest.approx(rho)  # read back, nothing solved


def test_nas_edits_through_helpers_edit(tiny_model, tmp_cache, monkeypatch):
    model, tok = tiny_model
    monkeypatch.setattr(nas, "anchor", lambda *a, **k: 5.0)
    hp = _hp(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequence = EditSequence()
    res = helpers.edit(model, tok, REQS[0], "NAS", hp, sequence=sequence)
    assert set(res.deltas) == {f"{hp.rewrite_module_tmp.format(l)}.weight" for l in hp.layers}
    assert set(sequence.states["NAS"]) == {hp.rewrite_module_tmp.format(l) for l in hp.layers}
    res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(Exception, match="nas_base 'x'"):
        helpers.edit(model, tok, REQS[0], "NAS", {**hp.__dict__, "nas_base": "x"})


def test_nas_was_added_without_touching_the_dispatch_code():
    root = Path(helpers.__file__).resolve().parent
    dispatch = [root / "editing" / "__init__.py", root / "editing" / "registry.py", *sorted((root / "runs").rglob("*.py"))]
    for path in dispatch:
        text = path.read_text()
        assert "NAS" not in text.replace("NaN", "") and "nas." not in text, path
    assert "NAS" in helpers.method_names()
