"""ENCORE (helpers/editing/encore.py) pinned to its defining computations, each computed here
independently on a tiny model: most-probable early stopping returns the value of the first pass
(the ``patience``-th) at which the target is the most probable continuation on every rewriting
prompt; the norm-constrained solve is the minimiser of its objective (its gradient vanishes);
the earlier edits' keys enter the solve. And ENCORE was added through the registry alone."""
from pathlib import Path

import pytest
import torch

import helpers
from helpers import EditRequest
from helpers.editing import EditSequence, edit, encore, hparams_for, memit
from helpers.editing.modules import get_module
from helpers.editing.targets import optimize_targets
from tests.integration.test_reference_losses import _output_at, _peaked, _run_with_delta, _subject_last
from tests.numerics import assert_close

# a prompt that ends with its subject and a one-token target: the target is read where δ is added, so a
# tiny random model can be made to predict it (a later position sees δ only through diffuse attention)
REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux", subject="Danielle Darrieux",
                  target_new="Paris", ground_truth="French", rephrase="Danielle Darrieux speaks",
                  locality_prompt="The capital of France is", locality_answer="Paris")
TEMPLATES = ["{}", "I think that. {}", "The story goes. {}"]


def _hp(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    base = "transformer.h.{}" if gpt2 else "model.layers.{}"
    return hparams_for(model, "ENCORE", {
        "layers": [0, 1], "context_templates": TEMPLATES, "v_num_grad_steps": 30, "v_lr": 0.3,
        "early_stop_loss": 0.0, "mom2_update_weight": 5.0, "mom2_n_samples": 6, "clamp_norm_factor": 4.0,
        "rewrite_module_tmp": base + (".mlp.c_proj" if gpt2 else ".mlp.down_proj"), "layer_module_tmp": base,
        "mlp_module_tmp": base + ".mlp", **over})


def _all_top1(model, tok, module, delta) -> bool:
    """Whether, with ``delta`` added at the subject's last token, every target token is the most
    probable next token on every rewriting prompt (computed here, not by the package)."""
    target = tok(" " + REQ.target_new).input_ids
    texts = [t.format(REQ.prompt) + tok.decode(target[:-1]) for t in TEMPLATES]
    ids = [tok(t).input_ids for t in texts]
    look = [_subject_last(tok, t, REQ.subject) for t in texts]
    for logits, row in zip(_run_with_delta(model, module, ids, look, delta), ids):
        n = len(row)
        for j, t in enumerate(target):
            if int(logits[n - len(target) + j].argmax()) != t:
                return False
    return True


@pytest.mark.parametrize("patience", [1, 2])
def test_mpes_stops_at_the_patience_th_pass_where_the_target_is_most_probable_everywhere(tiny_model, patience):
    model, tok = tiny_model
    model = _peaked(model)
    hp = _hp(model, mpes_patience=patience, layers=[0], v_lr=1.0, clamp_norm_factor=100.0)
    layer = hp.layers[-1]
    module = get_module(model, hp.layer_module_tmp.format(layer))
    text = TEMPLATES[0].format(REQ.prompt) + tok.decode(tok(" " + REQ.target_new).input_ids[:-1])
    init = _output_at(model, module, tok(text).input_ids, _subject_last(tok, text, REQ.subject))

    def value_at_pass(s):  # MEMIT's optimisation without MPES: s passes leave the δ of the s-th
        return optimize_targets(model, tok, [REQ], hp.__class__(**{**hp.__dict__, "v_num_grad_steps": s}), module,
                                TEMPLATES, layer)[0]

    passing = [s for s in range(1, 16) if _all_top1(model, tok, module, value_at_pass(s) - init)]
    assert len(passing) >= patience, "the tiny model never reached the target: the test has nothing to check"
    stop = passing[patience - 1]
    got = optimize_targets(model, tok, [REQ], hp, module, TEMPLATES, layer, stop_rule=encore.mpes(hp))[0]
    assert_close(got, value_at_pass(stop), what=f"the value of pass {stop}")
    assert stop < hp.v_num_grad_steps and not torch.allclose(got, value_at_pass(hp.v_num_grad_steps))


def test_mpes_can_skip_the_bare_prompt_as_the_authors_code_does():
    # two requests, two templates, one target token each: request 0 misses only on the bare prompt
    top1 = torch.tensor([False, True, True, True])
    owner = torch.tensor([0, 0, 1, 1])
    template = torch.tensor([0, 1, 0, 1])
    every = encore.MostProbableStop(2, 1, skip_bare_prompt=False)
    assert every(top1, owner, template).tolist() == [False, True]
    skip = encore.MostProbableStop(2, 2, skip_bare_prompt=True)
    assert skip(top1, owner, template).tolist() == [False, False]  # one pass each, patience 2
    assert skip(~top1 & (template == 0), owner, template).tolist() == [False, False]  # misses on a checked prompt
    assert skip(top1, owner, template).tolist() == [True, True]  # counted, not in a row


def test_the_norm_constrained_solve_minimises_its_objective():
    """J(ΔW) = λ_p tr(ΔW C₀ ΔWᵀ) + tr(ΔW S ΔWᵀ) + ‖ΔW K − R‖² + λ_n ‖ΔW‖²; at its minimum
    ∇J = 2 ΔW (λ_p C₀ + S + λ_n I) + 2 (ΔW K − R) Kᵀ = 0 ([out, in]; K [in, n], R [out, n])."""
    g = torch.Generator().manual_seed(0)
    d_in, d_out, n = 12, 7, 3
    a = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    c0 = a @ a.T / d_in
    b = torch.randn(d_in, 2, generator=g, dtype=torch.float64)
    s_prev = b @ b.T
    ks = torch.randn(n, d_in, generator=g, dtype=torch.float64)  # the solve's layout: [n, in]
    resid = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    hp = encore.ENCOREHyperParams(layers=[0], rewrite_module_tmp="m", layer_module_tmp="", mlp_module_tmp="",
                                  mom2_update_weight=3.0, update_norm_lambda=10.0)
    used = {}
    dw = encore.norm_constrained_solve(hp, {"m": c0.float()}, {"m": s_prev}, used)("m", ks, resid).double()
    K, R = ks.T, resid.T
    grad = 2 * dw @ (3.0 * c0.float().double() + s_prev + 10.0 * torch.eye(d_in, dtype=torch.float64)) \
        + 2 * (dw @ K - R) @ K.T
    assert float(grad.abs().max()) < 1e-4 * float((R @ K.T).abs().max())
    assert torch.equal(used["m"], ks.T @ ks)
    # λ_n = 0 without earlier keys is MEMIT's solve
    plain = encore.ENCOREHyperParams(**{**hp.__dict__, "update_norm_lambda": 0.0, "add_prev_edits": False})
    assert_close(encore.norm_constrained_solve(plain, {"m": c0.float()}, {}, {})("m", ks, resid),
                 memit.least_squares(plain, {"m": c0.float()})("m", ks, resid))
    # the constraint shrinks the update
    assert dw.norm() < encore.norm_constrained_solve(plain, {"m": c0.float()}, {}, {})("m", ks, resid).double().norm()


def test_encore_edits_through_helpers_edit_and_keeps_earlier_keys(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    from helpers.editing import key_stats

    monkeypatch.setattr(key_stats, "_MEMORY", {})
    model, tok = tiny_model
    hp = _hp(model, v_num_grad_steps=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequence = EditSequence()
    first = helpers.edit(model, tok, REQ, "ENCORE", hp, sequence=sequence)
    state = sequence.states["ENCORE"]
    names = [hp.rewrite_module_tmp.format(l) for l in hp.layers]
    assert set(state) == set(names) and all(float(state[n].trace()) > 0 for n in names)
    grams = {n: state[n].clone() for n in names}
    second = edit(model, tok, REQ, "ENCORE", hp, sequence=sequence)
    assert all(float(state[n].trace()) > float(grams[n].trace()) for n in names)  # the second edit's keys joined
    second.restore()
    first.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_encore_was_added_without_touching_the_dispatch_code():
    root = Path(helpers.__file__).resolve().parent
    dispatch = [root / "editing" / "__init__.py", root / "editing" / "registry.py", *sorted((root / "runs").rglob("*.py"))]
    for path in dispatch:
        assert "ENCORE" not in path.read_text() and "encore" not in path.read_text(), path
    assert "ENCORE" in helpers.method_names()
    assert helpers.editing.method_spec("encore").base == "MEMIT"
