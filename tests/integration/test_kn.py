"""Knowledge neurons on tiny random GPT-2 / Llama models, pinned to the reference's computation
(EasyEdit's knowledge-neurons: the neurons are the outputs of mlp.c_fc / mlp.gate_proj, before
the nonlinearity; IG steps are linspace(0, 1, steps); the edit adds the target's embeddings and
takes away the prediction's)."""
import pytest
import torch

from helpers import EditRequest
from helpers.editing import EditError, HparamsError, edit, kn
from helpers.editing.modules import from_param_layout, get_module
from tests.numerics import assert_close

REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="x", locality_prompt="y", locality_answer="z")
SITES = {"gpt2": ("transformer.h.{}.mlp.c_fc", "transformer.h.{}.mlp.c_proj"),
         "llama": ("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.down_proj")}


def kn_hparams(**over):
    return {"steps": 8, "batch_size": 4, **over}


def kind(model):
    return model.config.model_type


def _prob_with_activation(model, tok, prompt, token, module, value):
    """p(token) at the prompt's last position with ``module``'s output there set to ``value``
    (a leaf tensor, so its gradient can be taken)."""
    ids = torch.tensor([tok(prompt).input_ids])

    def put(m, args, out):
        out = out.clone()
        out[:, -1] = value
        return out

    h = module.register_forward_hook(put)
    try:
        return torch.softmax(model(ids).logits[0, -1].float(), -1)[token]
    finally:
        h.remove()


def _slow_ig(model, tok, prompt, token, module, steps):
    """Integrated gradients the slow way, one α at a time: Σ_α ∂p/∂a (α·a) · a / steps."""
    ids = torch.tensor([tok(prompt).input_ids])
    seen = {}
    h = module.register_forward_hook(lambda m, a, o: seen.__setitem__("a", o[0, -1].detach().clone()))
    with torch.no_grad():
        model(ids)
    h.remove()
    act = seen["a"]
    total = torch.zeros_like(act)
    for alpha in torch.linspace(0, 1, steps).tolist():
        x = (alpha * act).requires_grad_(True)
        p = _prob_with_activation(model, tok, prompt, token, module, x)
        total += torch.autograd.grad(p, x)[0]
    return act * total / steps


def test_resolve_infers_the_reference_sites(tiny_model):
    model, _ = tiny_model
    hp = kn.resolve(model, kn.KNHyperParams())
    assert (hp.activation_module_tmp, hp.rewrite_module_tmp) == SITES[kind(model)]
    assert hp.answer_context == ("prompt" if kind(model) == "gpt2" else "greedy")


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_attributions_equal_slow_integrated_gradients_at_the_reference_site(tiny_model, reuse_prefix):
    """One-token answer: each layer's scores equal a direct computation of IG over the output of
    c_fc / gate_proj (before the nonlinearity), α = linspace(0, 1, steps). Hooking the input of
    c_proj / down_proj instead, or α = k/m, would fail this."""
    model, tok = tiny_model
    answer = "French"
    (token,) = tok(answer).input_ids  # encoded as the reference does: no leading space
    hp = kn.KNHyperParams(**kn_hparams(steps=6, batch_size=3, reuse_prefix=reuse_prefix))
    scores = kn.attributions(model, tok, REQ.prompt, answer, hp, [0, 1])
    for i in (0, 1):
        module = get_module(model, SITES[kind(model)][0].format(i))
        want = _slow_ig(model, tok, REQ.prompt, token, module, 6)
        # at the layer's scale: a wrong hook site or α = k/m moves scores by > 1e-2 of it
        assert_close(scores[i], want, what=f"layer {i}")


def test_a_single_step_scores_activation_times_gradient_at_zero(tiny_model):
    """The paper's LLaMA file: steps 1 → linspace(0, 1, 1) = [0]."""
    model, tok = tiny_model
    (token,) = tok("French").input_ids
    hp = kn.KNHyperParams(steps=1, batch_size=1)
    scores = kn.attributions(model, tok, REQ.prompt, "French", hp, [1])
    module = get_module(model, SITES[kind(model)][0].format(1))
    want = _slow_ig(model, tok, REQ.prompt, token, module, 1)
    assert_close(scores[0], want)  # at the layer's scale (float32 promises no more)


def test_integrated_gradients_are_complete(tiny_model):
    """IG's completeness: a layer's attributions sum to p(answer) with its neurons at their
    values minus p(answer) with them at zero (up to the Riemann sum's error)."""
    model, tok = tiny_model
    (token,) = tok("French").input_ids
    hp = kn.KNHyperParams(steps=64, batch_size=64)
    scores = kn.attributions(model, tok, REQ.prompt, "French", hp, [0, 1])
    for i in (0, 1):
        module = get_module(model, SITES[kind(model)][0].format(i))
        with torch.no_grad():
            full = _prob_with_activation(model, tok, REQ.prompt, token, module, _act(model, tok, module)).item()
            zeroed = _prob_with_activation(model, tok, REQ.prompt, token, module, 0.0).item()
        assert scores[i].sum().item() == pytest.approx(full - zeroed, rel=0.1, abs=1e-7)


def _act(model, tok, module):
    seen = {}
    h = module.register_forward_hook(lambda m, a, o: seen.__setitem__("a", o[0, -1].clone()))
    with torch.no_grad():
        model(torch.tensor([tok(REQ.prompt).input_ids]))
    h.remove()
    return seen["a"]


@pytest.mark.parametrize("context", ["prompt", "greedy"])
def test_later_answer_tokens_use_the_reference_context_and_the_mean(tiny_model, context):
    """Two-token answer: the layer score is the mean of the tokens' IG, the second token's read
    after the prompt alone ("prompt", GPT-2) or after the prompt and the greedy token ("greedy")."""
    model, tok = tiny_model
    answer = "Paris France"
    ids = tok(answer).input_ids
    assert len(ids) >= 2
    hp = kn.KNHyperParams(steps=4, batch_size=4, answer_context=context)
    scores = kn.attributions(model, tok, REQ.prompt, answer, hp, [1])
    module = get_module(model, SITES[kind(model)][0].format(1))
    greedy, contexts = kn.greedy_tokens(model, tok, REQ.prompt, len(ids))
    if context == "prompt":
        contexts = [REQ.prompt] * len(ids)
    else:
        assert contexts[1] == REQ.prompt + tok.decode([greedy[0]])
    want = sum(_slow_ig(model, tok, c, t, module, 4) for c, t in zip(contexts, ids)) / len(ids)
    assert_close(scores[0], want)  # at the layer's scale (float32 promises no more)


def test_last_position_attribution_equals_the_whole_model_reference(tiny_deep_model):
    """Running only the answer position above each layer gives the reference's whole-model
    integrated gradients, for every layer of a 4-layer model and a two-token answer."""
    model, tok = tiny_deep_model
    fast = kn.KNHyperParams(**kn_hparams(steps=6, batch_size=3))
    ref = kn.KNHyperParams(**kn_hparams(steps=6, batch_size=3, reuse_prefix=False))
    a = kn.attributions(model, tok, REQ.prompt, "Paris France", fast, [0, 1, 2, 3])
    b = kn.attributions(model, tok, REQ.prompt, "Paris France", ref, [0, 1, 2, 3])
    assert a.shape == b.shape == (4, b.shape[1])
    assert_close(a, b)  # at the scale of all layers' scores: a skipped or misplaced layer moves them by O(1)


@pytest.mark.parametrize("target", ["English", "English French"])
def test_kn_edit_adds_target_embeddings_minus_the_prediction(tiny_model, target):
    """One-token target: e_target − 2 e_prediction; several tokens: Σ e_target − Σ e_greedy
    (modify_weights), the same for every selected neuron's output column."""
    model, tok = tiny_model
    req = EditRequest(**{**REQ.__dict__, "target_new": target})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t_ids = tok(target).input_ids
    greedy, _ = kn.greedy_tokens(model, tok, REQ.prompt, len(t_ids))
    emb = model.get_input_embeddings().weight.detach()
    want = emb[t_ids].sum(0) - (2 * emb[greedy[0]] if len(t_ids) == 1 else emb[greedy].sum(0))
    res = edit(model, tok, req, "KN", kn_hparams())
    try:
        assert res.deltas, "some neurons pass the adaptive threshold (the top one always does)"
        for name, delta in res.deltas.items():
            assert name.endswith((".mlp.c_proj.weight", ".mlp.down_proj.weight"))
            d = from_param_layout(delta, get_module(model, name.rsplit(".", 1)[0]))  # [out, in]
            cols = d.abs().sum(0).nonzero().flatten()
            assert 0 < len(cols) < d.shape[1]
            # at the embeddings' scale: a wrong sign or factor 2 moves a column by O(1) of it
            assert_close(d[:, cols], want[:, None].expand(-1, len(cols)))
    finally:
        res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_kn_attributes_the_recorded_prediction(tiny_model, monkeypatch):
    model, tok = tiny_model
    seen = []
    real = kn.attributions
    monkeypatch.setattr(kn, "attributions", lambda m, t, prompt, answer, *a: seen.append(answer) or real(m, t, prompt, answer, *a))
    req = EditRequest(**{**REQ.__dict__, "prediction": "German"})
    edit(model, tok, req, "KN", kn_hparams()).restore()
    edit(model, tok, REQ, "KN", kn_hparams()).restore()
    assert seen == ["German", "French"]


def test_kn_refuses_batches_and_uneven_steps(tiny_model):
    model, tok = tiny_model
    with pytest.raises(EditError, match="one fact at a time"):
        edit(model, tok, [REQ, REQ], "KN", kn_hparams())
    with pytest.raises(HparamsError, match="multiple of batch_size"):
        edit(model, tok, REQ, "KN", kn_hparams(steps=6, batch_size=4))


def test_neuron_selection_threshold_and_refinement():
    a = torch.tensor([[1.0, 0.6, 0.1], [0.2, 0.0, 0.55]])
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    c = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    hp = kn.KNHyperParams(adaptive_threshold=0.5, p=0.5)
    assert kn.select_neurons([a], hp) == [(0, 0), (0, 1), (1, 2)]
    assert kn.select_neurons([a, b, c], hp) == [(0, 0), (0, 1), (1, 2)]  # no refine: the union
    hp.refine = True  # kept when found in more than p × 3 = 1.5 prompts
    assert kn.select_neurons([a, b, c], hp) == [(0, 0), (0, 1)]
    assert kn.select_neurons([a], hp) == [(0, 0), (0, 1), (1, 2)]  # 1 > 0.5
