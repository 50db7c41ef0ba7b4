"""MEND on tiny random GPT-2 / Llama models."""
import pytest
import torch

from helpers import EditRequest
from helpers.editing import mend
from helpers.editing.modules import from_param_layout, get_module

REQS = [
    EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux", target_new="English",
                ground_truth="French", rephrase="x", locality_prompt="The capital of France is", locality_answer="Paris"),
    EditRequest(prompt="Apple A5 was created by", subject="Apple A5", target_new="Google", ground_truth="Apple",
                rephrase="x", locality_prompt="Who wrote Hamlet?", locality_answer="Shakespeare"),
]


def mend_hparams(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    names = (["transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight"] if gpt2 else
             ["model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"])
    return mend.MENDHyperParams(**{"inner_params": names, "rank": 8, "train_steps": 30, "train_batch_size": 2,
                                   "lr": 1e-3, **over})


def test_gradient_factors_rebuild_the_true_gradient(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model)
    factors = mend.gradient_factors(model, tok, REQS, hp.inner_params)
    ids, mask, labels = mend._target_batch(tok, REQS, "cpu")
    model.zero_grad()
    mend._nll(model(input_ids=ids, attention_mask=mask).logits, labels).backward()
    params = dict(model.named_parameters())
    for name in hp.inner_params:
        u, d = factors[name]
        module = get_module(model, name.rsplit(".", 1)[0])
        grad = from_param_layout(params[name].grad, module)  # [out, in]
        assert torch.allclose(d.T @ u, grad, atol=1e-6 * grad.abs().max())
    model.zero_grad()


def test_untrained_mend_is_a_gradient_step(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model, norm=False)
    net = mend.MEND(model, hp)
    factors = mend.gradient_factors(model, tok, REQS, hp.inner_params)
    with torch.no_grad():
        upd = net.updates(factors)
    for name in hp.inner_params:
        u, d = factors[name]
        assert torch.allclose(upd[name], -hp.edit_lr * (d.T @ u), atol=1e-9)


def test_training_lowers_the_edit_loss_and_reloads_from_safetensors(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    model, tok = tiny_model
    hp = mend_hparams(model)
    records = REQS * 4
    net, log = mend.train_mend(model, tok, records, hp, progress=False)
    first, last = sum(log["edit_loss"][:5]) / 5, sum(log["edit_loss"][-5:]) / 5
    assert last < first
    saved = mend.load_or_train(model, tok, hp, "tiny", records=[*REQS * 3], progress=False)
    files = list((tmp_path / "mend").glob("*.safetensors"))
    assert len(files) == 1 and files[0].with_suffix(".json").exists()
    again = mend.load_or_train(model, tok, hp, "tiny", records=None, progress=False)  # from disk
    for (k, a), (_, b) in zip(saved.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_split_is_disjoint_and_seeded():
    class R:
        def __init__(self, i):
            self.case_id = i

    recs = [R(i) for i in range(100)]
    tr, ho = mend.split_zsre(recs, 0.6, seed=1)
    assert len(tr) == 60 and len(ho) == 40 and not {r.case_id for r in tr} & {r.case_id for r in ho}
    assert [r.case_id for r in mend.split_zsre(recs, 0.6, seed=1)[0]] == [r.case_id for r in tr]


@pytest.mark.model
@pytest.mark.data
def test_editing_a_training_record_is_refused(smollm2):
    import helpers
    from helpers.editing import EditError

    model, tok = smollm2
    train, _ = mend.split_zsre(helpers.load_zsre(), 0.6, 42)  # the shipped file's split
    with pytest.raises(EditError, match="training split"):
        helpers.edit(model, tok, train[0], "MEND")
