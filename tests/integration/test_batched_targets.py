"""Independent requests' value vectors optimised together equal the one-at-a-time results (on
4-layer models: in a 2-layer model edited at layer 1 the target positions cannot see δ, the
gradient is rounding noise, and Adam, which normalises it, would amplify that noise)."""
import dataclasses

import pytest
import torch

from helpers import EditRequest
from helpers.editing import memit, rome, single_updates

from tests.integration.test_rome import tiny_hparams

pytestmark = pytest.mark.model


def request(subject, prompt, target):
    return EditRequest(prompt=prompt, subject=subject, target_new=target, ground_truth="x", rephrase=prompt,
                       locality_prompt="The capital of France is", locality_answer="Paris")


REQUESTS = [
    request("Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English"),
    request("Paris", "Paris is the capital of", "Italy and Spain"),
    request("the Eiffel Tower", "Where is the Eiffel Tower? It is in", "Rome"),
    request("Toko Yasuda", "Toko Yasuda plays the", "piano"),
    request("IBM", "IBM was founded in the city of", "New York City"),
]
TOL = 1e-4  # relative: float rounding of a larger matrix product, 8 Adam steps


def close(a, b):
    return (a - b).norm() <= TOL * b.norm() and torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) >= 0.999


@pytest.mark.parametrize("early_stop_loss", [0.0, 7.0, 1e9])  # never, for some requests, at once
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_values_optimised_together_equal_one_at_a_time(tiny_deep_model, early_stop_loss, reuse_prefix):
    model, tok = tiny_deep_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model, early_stop_loss=early_stop_loss, reuse_prefix=reuse_prefix))
    module = rome.get_module(model, hp.rewrite_module_tmp.format(1))
    alone = torch.stack([rome.optimize_target(model, tok, r, hp, module, hp.context_templates, 1) for r in REQUESTS])
    together = rome.optimize_targets(model, tok, REQUESTS, hp, module, hp.context_templates, 1)
    chunked = rome.optimize_targets(model, tok, REQUESTS, hp, module, hp.context_templates, 1, max_tokens=1)
    for a, b, c in zip(alone, together, chunked):
        assert close(b, a) and close(c, a)
    if early_stop_loss == 1e9:  # every request stops before its first update: v is the module's output
        init = rome.optimize_targets(model, tok, REQUESTS, dataclasses.replace(hp, v_num_grad_steps=1), module,
                                     hp.context_templates, 1)
        assert torch.equal(together, init)


def test_early_stopping_is_per_request(tiny_deep_model):
    # a threshold between request 0's losses at its second and third step: it stops after two
    # updates while the others go on; it must still equal its own run (held where it stopped,
    # not moved on by Adam's momentum). No weight decay: on a random model it makes the loss jump.
    model, tok = tiny_deep_model
    hp = rome.ROMEHyperParams(**tiny_hparams(model, v_num_grad_steps=10, v_weight_decay=0.0, early_stop_loss=0.0))
    module = rome.get_module(model, hp.rewrite_module_tmp.format(1))
    trace = []
    rome.optimize_targets(model, tok, REQUESTS, hp, module, hp.context_templates, 1, trace=trace)
    losses = torch.stack(trace)  # [steps, requests]
    threshold = float(losses[1:3, 0].mean())
    assert losses[2, 0] < threshold <= losses[:2, 0].min()
    hp = dataclasses.replace(hp, early_stop_loss=threshold)
    trace = []
    together = rome.optimize_targets(model, tok, REQUESTS, hp, module, hp.context_templates, 1, trace=trace)
    assert len(trace) > 3  # the others went on
    for r, b in zip(REQUESTS, together):
        assert close(b, rome.optimize_target(model, tok, r, hp, module, hp.context_templates, 1))


def test_single_rome_updates_equal_separate_edits(tiny_deep_model):
    model, tok = tiny_deep_model
    hp = tiny_hparams(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batched = single_updates(model, tok, REQUESTS, "ROME", hp)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is unchanged
    hpo = rome.ROMEHyperParams(**hp)
    for r, upd in zip(REQUESTS, batched):
        ref = rome.apply(model, tok, [r], hpo)
        assert upd.keys() == ref.keys()
        assert all(close(upd[n], ref[n]) for n in ref)


def test_single_memit_updates_equal_separate_edits(tiny_deep_model, tmp_path, monkeypatch):
    from helpers.editing import key_stats

    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    monkeypatch.setattr(key_stats, "_MEMORY", {})
    model, tok = tiny_deep_model
    hp = tiny_hparams(model, layers=[0, 1], mom2_n_samples=40, mom2_update_weight=100.0)
    batched = single_updates(model, tok, REQUESTS[:3], "MEMIT", hp)
    hpo = memit.MEMITHyperParams(**hp)
    for r, upd in zip(REQUESTS[:3], batched):
        ref = memit.apply(model, tok, [r], hpo)
        assert upd.keys() == ref.keys() and len(ref) == 2
        assert all(close(upd[n], ref[n]) for n in ref)


def test_single_updates_checks_its_requests_as_edit_does(tiny_deep_model):
    from helpers.editing import EditError

    model, tok = tiny_deep_model
    with pytest.raises(EditError, match="EditRequest"):
        single_updates(model, tok, ["not a request"], "ROME")
    with pytest.raises(EditError, match="no edit requests"):
        single_updates(model, tok, [], "ROME")
