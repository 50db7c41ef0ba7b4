"""Knowledge neurons on tiny random GPT-2 / Llama models."""
import pytest
import torch

from helpers import EditRequest
from helpers.editing import EditError, edit, kn
from helpers.editing.modules import from_param_layout, get_module

REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="x", locality_prompt="y", locality_answer="z")


def kn_hparams(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    return {"rewrite_module_tmp": "transformer.h.{}.mlp.c_proj" if gpt2 else "model.layers.{}.mlp.down_proj",
            "steps": 8, "batch_size": 4, **over}


def _answer_prob(model, tok, prompt, token, zero_module=None):
    ids = torch.tensor([tok(prompt).input_ids])
    pos = ids.shape[1] - 1

    def zero(m, args):
        x = args[0].clone()
        x[:, pos] = 0
        return (x,)

    h = zero_module.register_forward_pre_hook(zero) if zero_module is not None else None
    try:
        with torch.no_grad():
            return torch.softmax(model(ids).logits[0, pos].float(), -1)[token].item()
    finally:
        if h:
            h.remove()


def test_integrated_gradients_are_complete(tiny_model):
    """IG's completeness: a layer's attributions sum to p(answer) with its neurons at their
    values minus p(answer) with them at zero (up to the Riemann sum's error)."""
    model, tok = tiny_model
    hp = kn.KNHyperParams(**kn_hparams(model, steps=64, batch_size=64))
    (token,) = tok(" French", add_special_tokens=False).input_ids  # one token: one IG pass
    scores = kn.attributions(model, tok, REQ.prompt, "French", hp, [0, 1])
    assert scores.shape[0] == 2
    for i, layer in enumerate([0, 1]):
        module = get_module(model, hp.rewrite_module_tmp.format(layer))
        full = _answer_prob(model, tok, REQ.prompt, token)
        zeroed = _answer_prob(model, tok, REQ.prompt, token, module)
        assert scores[i].sum().item() == pytest.approx(full - zeroed, rel=0.1, abs=1e-7)


def test_kn_edit_moves_only_selected_neuron_columns_by_the_embedding_difference(tiny_model):
    model, tok = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        predicted = int(model(torch.tensor([tok(REQ.prompt).input_ids])).logits[0, -1].argmax())
    res = edit(model, tok, REQ, "KN", kn_hparams(model))
    try:
        assert res.deltas, "some neurons pass the adaptive threshold (the top one always does)"
        emb = model.get_input_embeddings().weight.detach()
        target = tok(" English", add_special_tokens=False).input_ids[0]
        for name, delta in res.deltas.items():
            module = get_module(model, name.rsplit(".", 1)[0])
            d = from_param_layout(delta, module)  # [out, in]
            cols = d.abs().sum(0).nonzero().flatten()
            assert 0 < len(cols) < d.shape[1]
            diff = d[:, cols[0]]
            # 2 (e_target - e_prediction), the same for every selected neuron
            assert torch.allclose(d[:, cols], diff[:, None].expand(-1, len(cols)))
            assert torch.allclose(diff, 2 * (emb[target] - emb[predicted]), atol=1e-6)
    finally:
        res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_kn_refuses_batches(tiny_model):
    model, tok = tiny_model
    with pytest.raises(EditError, match="one fact at a time"):
        edit(model, tok, [REQ, REQ], "KN", kn_hparams(model))


def test_neuron_selection_threshold_and_sharing():
    hp = kn.KNHyperParams(rewrite_module_tmp="x.{}", adaptive_threshold=0.5, p=0.5)
    a = torch.tensor([[1.0, 0.6, 0.1], [0.2, 0.0, 0.55]])
    assert kn.select_neurons([a], hp) == [(0, 0), (0, 1), (1, 2)]
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    c = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # each neuron found in 1 of 3 prompts: below p = 0.5 -> need 1 of 3 ... int(0.5*3) = 1
    assert kn.select_neurons([a, b, c], hp) == [(0, 0), (0, 1), (1, 2)]
    hp.p = 0.67
    assert kn.select_neurons([a, b, c], hp) == [(0, 0), (0, 1)]


def test_last_position_attribution_equals_the_whole_model_reference(tiny_deep_model):
    """Running only the answer position above each layer gives EasyEdit's whole-model
    integrated gradients, for every layer of a 4-layer model and a two-token answer."""
    model, tok = tiny_deep_model
    fast = kn.KNHyperParams(**kn_hparams(model, steps=6, batch_size=4))
    ref = kn.KNHyperParams(**kn_hparams(model, steps=6, batch_size=4, reuse_prefix=False))
    a = kn.attributions(model, tok, REQ.prompt, "Paris France", fast, [0, 1, 2, 3])
    b = kn.attributions(model, tok, REQ.prompt, "Paris France", ref, [0, 1, 2, 3])
    assert a.shape == b.shape == (4, b.shape[1])
    assert torch.allclose(a, b, atol=1e-6 * b.abs().max(), rtol=1e-4)
