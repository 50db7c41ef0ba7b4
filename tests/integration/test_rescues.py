"""The later rescues on tiny random models: r-ROME's consistent key, AlphaEdit's null-space
projection, PRUNE's bound on the accumulated update. Each test would fail if the method's
defining property broke."""
import math

import pytest
import torch

from helpers import Prune
from helpers.editing import EditSequence, alphaedit, apply_update, begin_sequence, edit, rome
from helpers.editing.modules import from_param_layout, get_module
from helpers.editing.prune import PruneError, restrain, restrained_values
from tests.integration.test_memit import REQS, memit_hparams, tmp_cache  # noqa: F401 (a fixture)
from tests.integration.test_rome import REQ, TEMPLATES, tiny_hparams
from tests.numerics import assert_close


# r-ROME ---------------------------------------------------------------------------------------

def _output_at(model, hp, layer, key):
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    out = from_param_layout(module.weight.detach(), module).float() @ key
    return out + module.bias.float() if getattr(module, "bias", None) is not None else out


@pytest.mark.parametrize("method", ["ROME", "R-ROME"])
def test_the_update_maps_its_own_key_to_the_value(tiny_model, method):
    """ROME maps the bare prompt's key to v; r-ROME the averaged key, the key u is made of."""
    model, tok = tiny_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model), enable_random_prefix_keys=method == "R-ROME")
    k_bar = rome.template_key(model, tok, REQ, hp, 1, TEMPLATES)
    v, k_prompt, _ = rome.compute_v(model, tok, REQ, hp, 1, TEMPLATES)
    assert (k_bar - k_prompt).norm() > 1e-3 * k_prompt.norm()  # the two keys differ on this model
    res = edit(model, tok, REQ, method, tiny_hparams(model))
    try:
        own, other = (k_bar, k_prompt) if method == "R-ROME" else (k_prompt, k_bar)
        assert torch.allclose(_output_at(model, hp, 1, own), v, atol=1e-4 * v.norm())
        assert not torch.allclose(_output_at(model, hp, 1, other), v, atol=1e-3 * v.norm())
        (delta,) = res.updates.values()  # still rank one along u
        assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) == 1
    finally:
        res.restore()


def test_r_rome_is_rome_with_one_flag(tiny_model):
    model, tok = tiny_model
    a = edit(model, tok, REQ, "ROME", {**tiny_hparams(model), "enable_random_prefix_keys": True})
    a.restore()
    b = edit(model, tok, REQ, "r-rome", tiny_hparams(model))
    b.restore()
    assert b.method == "R-ROME"
    for name in a.updates:
        assert torch.equal(a.updates[name], b.updates[name])


# AlphaEdit ------------------------------------------------------------------------------------

def _alpha_hparams(model, **over):
    return {**memit_hparams(model), "L2": 1e-3, **over}


def _middle_threshold(model, tok, hp_dict):
    """A threshold that splits the tiny model's key spectrum in two (its scale is the model's own)."""
    from helpers.editing import memit

    hp = alphaedit.AlphaEditHyperParams(**hp_dict)
    _, mom2s = memit.edit_setting(model, tok, hp)
    return {n: m.double() for n, m in mom2s.items()}, float(torch.linalg.eigvalsh(
        mom2s[hp.rewrite_module_tmp.format(hp.layers[0])].double()).median())


def test_alphaedit_leaves_the_preserved_keys_outputs_unchanged(tiny_model, tmp_cache):
    model, tok = tiny_model
    mom2s, threshold = _middle_threshold(model, tok, _alpha_hparams(model))
    hp = _alpha_hparams(model, nullspace_threshold=threshold)
    begin_sequence()
    res = edit(model, tok, REQS, "AlphaEdit", hp)
    res.restore()
    for name, delta in res.updates.items():
        c0 = mom2s[name.removesuffix(".weight")]
        p = alphaedit.null_space_projection(c0, threshold)
        d = delta.double()
        assert d.norm() > 0
        # no component along the preserved directions: ΔW = ΔW P
        assert (d - d @ p).norm() < 1e-6 * d.norm()
        # so ordinary text's keys move by at most what the null space's eigenvalues allow:
        # E‖ΔW k₀‖² = tr(ΔW C₀ ΔWᵀ) ≤ ‖ΔW‖₂² · (sum of the eigenvalues below the threshold)
        values = torch.linalg.eigvalsh(c0)
        moved = torch.trace(d @ c0 @ d.T)
        assert moved <= torch.linalg.matrix_norm(d, 2) ** 2 * values[values < threshold].sum() * (1 + 1e-6)


def test_alphaedit_remembers_the_keys_of_earlier_edits_in_a_sequence(tiny_model, tmp_cache):
    model, tok = tiny_model
    _, threshold = _middle_threshold(model, tok, _alpha_hparams(model))
    hp = _alpha_hparams(model, nullspace_threshold=threshold, L2=1e-2)
    sequence = EditSequence()
    first = edit(model, tok, REQS[0], "AlphaEdit", hp, sequence=sequence)
    try:
        assert len(sequence.states["ALPHAEDIT"]) == len(hp["layers"])
        with_memory = edit(model, tok, REQS[1], "AlphaEdit", hp, sequence=sequence)
        with_memory.restore()
        without = edit(model, tok, REQS[1], "AlphaEdit", hp, sequence=EditSequence())  # a new sequence: no memory
        without.restore()
    finally:
        first.restore()
    from helpers.editing.memit import keys_at
    from helpers.editing.rome import template_groups

    hpo = alphaedit.AlphaEditHyperParams(**hp)
    name = f"{hpo.rewrite_module_tmp.format(hpo.layers[0])}.weight"
    k_first = keys_at(model, tok, [REQS[0]], hpo, hpo.layers[0], template_groups(model, tok, hpo)).double()[0]
    # the second edit, knowing the first edit's key, disturbs that key's output less
    assert (with_memory.updates[name].double() @ k_first).norm() < (without.updates[name].double() @ k_first).norm()


def test_with_nothing_preserved_alphaedit_is_memit_with_a_plain_ridge(tiny_model, tmp_cache):
    """A threshold above every eigenvalue projects onto everything: AlphaEdit's solve is then
    MEMIT's with the key statistics replaced by the identity (λ = L2)."""
    model, tok = tiny_model
    hp = _alpha_hparams(model, nullspace_threshold=1e9, L2=1.0)
    begin_sequence()
    res = edit(model, tok, REQS, "AlphaEdit", hp)
    res.restore()
    memit_hp = {**memit_hparams(model), "mom2_update_weight": 1.0}
    from helpers.editing import memit

    setting = memit.edit_setting(model, tok, memit.MEMITHyperParams(**memit_hp))
    identity = {n: torch.eye(m.shape[0]) for n, m in setting[1].items()}
    zs = memit.targets(model, tok, REQS, memit.MEMITHyperParams(**memit_hp), setting)
    expected = memit.spread(model, tok, REQS, memit.MEMITHyperParams(**memit_hp), zs, (setting[0], identity))
    for name in expected:
        assert_close(res.updates[name], expected[name])


# PRUNE ----------------------------------------------------------------------------------------

def _rotation(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q


def test_prune_restrains_exactly_the_singular_values_above_the_originals_largest():
    n = 6
    w0 = _rotation(n, 0) @ torch.diag(torch.tensor([3.0, 2, 1, 1, 1, 1], dtype=torch.float64)) @ _rotation(n, 1).T
    s = torch.tensor([10.0, 3.0, 2.0, 0.5, 0, 0], dtype=torch.float64)
    delta = _rotation(n, 2) @ torch.diag(s) @ _rotation(n, 3).T
    out = torch.linalg.svdvals(restrain(delta, w0))
    want = torch.tensor([3 + math.log(10 / 3), 3.0, 2.0, 0.5, 0, 0], dtype=torch.float64)  # σ ≥ σ_max: log
    assert torch.allclose(out, want, atol=1e-9)
    assert torch.allclose(torch.linalg.svdvals(restrain(delta, w0, "linear"))[0], torch.tensor(6.5, dtype=torch.float64))
    assert torch.allclose(restrained_values(torch.tensor([8.0]), 2.0, "log2"), torch.tensor([4.0]))
    # nothing above the bound: unchanged
    small = delta / 10
    assert torch.allclose(restrain(small, w0), small, atol=1e-12)


def _big_update(model, name, times):
    """A rank-2 update whose top singular value is ``times`` the weight's (as [out, in])."""
    module = get_module(model, name.rsplit(".", 1)[0])
    w = from_param_layout(dict(model.named_parameters())[name].detach(), module).double()
    s_max = float(torch.linalg.matrix_norm(w, 2))
    u, _, vh = torch.linalg.svd(torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                                full_matrices=False)
    return ((u[:, :2] * torch.tensor([times * s_max, 0.3 * s_max], dtype=torch.float64)) @ vh[:2]).float(), s_max


@pytest.mark.parametrize("when", ["evaluation", "every_edit"])
def test_prune_bounds_the_accumulated_update_of_a_sequence(tiny_model, when):
    model, _ = tiny_model
    name = next(n for n, _ in model.named_parameters() if n.endswith("mlp.c_proj.weight") or n.endswith("down_proj.weight"))
    module = get_module(model, name.rsplit(".", 1)[0])
    w0 = from_param_layout(dict(model.named_parameters())[name].detach(), module).double().clone()
    prune = Prune(when=when)
    upd, s_max = _big_update(model, name, 20)
    applied = [apply_update(model, {name: upd}, prune), apply_update(model, {name: upd}, prune)]
    try:
        current = from_param_layout(dict(model.named_parameters())[name].detach(), module).double()
        top = float(torch.linalg.svdvals(current - w0)[0])
        bound = s_max + math.log(40)  # the accumulated update is 40 σ_max: restrained to σ_max + ln 40
        if when == "every_edit":
            # written after each edit: the second edit's restraint acts on the first's restrained sum
            assert top <= bound + 1e-3 * s_max
        else:
            assert top == pytest.approx(40 * s_max, rel=1e-4)  # the edits accumulate unrestrained
            view = prune.restrained(model)
            try:
                viewed = from_param_layout(dict(model.named_parameters())[name].detach(), module).double()
                values = torch.linalg.svdvals(viewed - w0)
                assert float(values[0]) == pytest.approx(bound, rel=1e-4)
                assert float(values[1]) == pytest.approx(0.6 * s_max, rel=1e-4)  # below σ_max: kept
            finally:
                view.restore()
            # back to the unrestrained weights, bit for bit
            assert torch.equal(from_param_layout(dict(model.named_parameters())[name].detach(), module).double(), current)
    finally:
        for r in reversed(applied):
            r.restore()


def test_prune_needs_a_parameter_name():
    with pytest.raises(PruneError, match="name"):
        Prune()(torch.zeros(2, 2), torch.eye(2))
    with pytest.raises(Exception, match="reduce"):
        Prune(reduce="cube")



# the shipped files for the papers' models ------------------------------------------------------

@pytest.mark.parametrize("kind,method,file", [("gpt2-xl", "R-ROME", "gpt2-xl"), ("llama-7b", "R-ROME", "llama-7b"),
                                              ("gpt2-xl", "AlphaEdit", "gpt2-xl"), ("llama-7b", "AlphaEdit", "llama3-8b")])
def test_the_shipped_files_edit_models_of_the_papers_shapes(smol_tokenizer, kind, method, file, tmp_path, monkeypatch):
    """GPT-2 XL's 48 Conv1D blocks and LLaMA's 32 Linear blocks (small widths), edited with the
    files shipped for them; only the key statistics are overridden (texts sampled from the
    model: no Wikipedia without the hub)."""
    from helpers.editing import read_hparams
    from helpers.editing.hparams import HPARAMS_DIR
    from tests.integration.test_paper_architectures import paper_shaped

    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    model, tok = paper_shaped(kind, len(smol_tokenizer)), smol_tokenizer
    hp = read_hparams(method, HPARAMS_DIR / method / f"{file}.yaml")
    assert type(hp).__name__ == {"R-ROME": "RROMEHyperParams", "AlphaEdit": "AlphaEditHyperParams"}[method]
    hp.mom2_dataset, hp.mom2_n_samples = "self", 24
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    begin_sequence()
    res = edit(model, tok, REQ, method, hp)
    try:
        params = dict(model.named_parameters())
        assert set(res.deltas) == {f"{hp.rewrite_module_tmp.format(l)}.weight" for l in hp.layers}
        for name, delta in res.deltas.items():
            assert delta.shape == params[name].shape and torch.isfinite(delta).all()
    finally:
        res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    if method == "R-ROME":
        assert hp.enable_random_prefix_keys
    else:
        assert (hp.nullspace_threshold, hp.L2) == (2e-2, 10)
