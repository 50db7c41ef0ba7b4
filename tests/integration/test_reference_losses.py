"""The defining formulas of ROME's and MEMIT's value loss, MEMIT's solve and MEND's training
loss, each computed here from the reference code's formula on a tiny model (never by calling the
package function under test) and compared with what the package computes:

- kmeng01/rome ``compute_v`` (the fork's copy): NLL of the target per template, summed over the
  target's tokens and divided by their number, averaged over templates; ``kl_factor`` × KL(new ‖
  initial) of the next-token distribution at the subject's last token of "<subject> is a"
  (``kl_div(init, new, log_target=True)``); ``v_weight_decay`` × ‖δ‖ / ‖v_init‖²; δ clamped to
  ``clamp_norm_factor`` × ‖v_init‖ after each step.
- memit ``memit_main``: per layer i of L, keys K [in, n] at the edited module's input, residual
  R [out, n] = (z − current output of the last edited block) / (L − i), ΔW = R · (solve(λC + KKᵀ,
  K))ᵀ with λ = ``mom2_update_weight``; each layer's update in place before the next layer's keys
  are read.
- EasyEdit ``EditTrainer.edit_step``: ``cedit`` × the edit NLL + ``cloc`` × KL(pre ‖ post) of the
  locality answer's positions (``kl_loc_loss``), gradients accumulated over ``accumulate_bs``.
"""
import torch

from helpers import EditRequest
from helpers.editing import hparams_for, memit, mend
from helpers.editing.modules import from_param_layout, get_module
from helpers.editing.targets import optimize_targets
from tests.integration.test_mend import REQS as MEND_REQS, mend_hparams
from tests.integration.test_rome import tiny_hparams
from tests.numerics import assert_close

# a target of several tokens, so that the NLL's normalisation per target token shows
REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="Old Norse runes", ground_truth="French", rephrase="x", locality_prompt="y",
                  locality_answer="z")
TEMPLATES = ["{}", "I think that. {}"]


def _subject_last(tok, text: str, subject: str) -> int:
    end = text.index(subject) + len(subject)
    return len(tok(text[:end]).input_ids) - 1


def _run_with_delta(model, module, ids, positions, delta):
    """Logits of ``ids`` (one text each, no padding) with ``delta`` added to ``module``'s output
    at ``positions``."""
    def add(mod, args, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[0, pos] += delta
        return (h, *out[1:]) if isinstance(out, tuple) else h

    logits = []
    for row, pos in zip(ids, positions):
        handle = module.register_forward_hook(add)
        try:
            with torch.no_grad():
                logits.append(model(input_ids=torch.tensor([row])).logits[0].float())
        finally:
            handle.remove()
    return logits


def _output_at(model, module, text_ids, pos):
    seen = {}

    def keep(mod, args, out):
        seen["y"] = (out[0] if isinstance(out, tuple) else out).detach()

    handle = module.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([text_ids]))
    finally:
        handle.remove()
    return seen["y"][0, pos].float()


def _rome_hp(model, **over):
    # a large step and KL weight: the KL term is large enough that its direction shows
    settings = {"context_templates": TEMPLATES, "v_num_grad_steps": 2, "kl_factor": 5.0, "v_weight_decay": 0.3,
                "v_lr": 2.0, **over}
    return hparams_for(model, "ROME", tiny_hparams(model, **settings))


def _peaked(model):
    """A copy whose next-token distributions are far from uniform (the final norm's gain × 30), so
    that the KL term is large and its two directions differ (a random tiny model's are near uniform)."""
    import copy

    model = copy.deepcopy(model)
    norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm
    with torch.no_grad():
        norm.weight.mul_(30.0)
    return model


def test_the_value_loss_is_the_references(tiny_model):
    model, tok = tiny_model
    model = _peaked(model)
    hp = _rome_hp(model, early_stop_loss=0.0)
    layer = hp.layers[0]
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    trace = []
    v = optimize_targets(model, tok, [REQ], hp, module, TEMPLATES, layer, reuse_prefix=False, max_tokens=0,
                         trace=trace)[0]

    # the reference's prompts: each template with the prompt and the target's tokens but the last; "{s} is a"
    target = tok(" " + REQ.target_new).input_ids
    rewriting = [t.format(REQ.prompt) + tok.decode(target[:-1]) for t in TEMPLATES]
    kl_text = f"{REQ.subject} is a"
    texts = rewriting + [kl_text]
    ids = [tok(t).input_ids for t in texts]
    look = [_subject_last(tok, t, REQ.subject) for t in texts]
    v_init = _output_at(model, module, ids[0], look[0])
    delta = v - v_init  # the δ the second (last) step's loss was read at

    def loss_at(d):
        logits = _run_with_delta(model, module, ids, look, d)
        nll = 0.0
        for lg, row in zip(logits[:-1], ids[:-1]):
            logp = torch.log_softmax(lg, -1)
            n = len(row)
            nll += -sum(logp[n - len(target) + j, t] for j, t in enumerate(target)) / len(target)
        nll = nll / len(rewriting)
        return nll, torch.log_softmax(logits[-1][look[-1]], -1)

    nll0, kl_init = loss_at(torch.zeros_like(v_init))
    nll1, kl_new = loss_at(delta)
    kl = (kl_new.exp() * (kl_new - kl_init)).sum()  # KL(new ‖ initial): kl_div(init, new, log_target=True)
    expected = nll1 + hp.kl_factor * kl + hp.v_weight_decay * delta.norm() / v_init.norm() ** 2
    assert_close(trace[0][0], nll0, what="step 0: δ = 0, the NLL alone")
    assert_close(trace[1][0], expected, what="step 1: NLL + KL + weight decay")
    # every term is there to be checked, large enough to tell its alternatives apart
    reverse = (kl_init.exp() * (kl_init - kl_new)).sum()
    assert len(target) > 1 and float(delta.norm()) > 0
    assert hp.kl_factor * abs(float(kl - reverse)) > 1e-3 * abs(float(expected))


def test_the_value_is_clamped_to_its_norm_budget(tiny_model):
    model, tok = tiny_model
    hp = _rome_hp(model, clamp_norm_factor=0.05, v_lr=5.0, early_stop_loss=0.0)
    layer = hp.layers[0]
    module = get_module(model, hp.rewrite_module_tmp.format(layer))
    v = optimize_targets(model, tok, [REQ], hp, module, TEMPLATES, layer, reuse_prefix=False, max_tokens=0)[0]
    text = TEMPLATES[0].format(REQ.prompt) + tok.decode(tok(" " + REQ.target_new).input_ids[:-1])
    v_init = _output_at(model, module, tok(text).input_ids, _subject_last(tok, text, REQ.subject))
    assert_close((v - v_init).norm(), 0.05 * v_init.norm(), what="‖δ‖ = clamp_norm_factor × ‖v_init‖")


def test_memits_solve_spreads_the_residual_over_the_layers(tiny_deep_model, monkeypatch):
    model, tok = tiny_deep_model
    gpt2 = type(model).__name__.startswith("GPT2")
    base = "transformer.h.{}" if gpt2 else "model.layers.{}"
    hp = hparams_for(model, "MEMIT", {
        "layers": [1, 2, 3], "context_templates": ["{}"], "mom2_update_weight": 7.0, "v_num_grad_steps": 1,
        "rewrite_module_tmp": base + (".mlp.c_proj" if gpt2 else ".mlp.down_proj"), "layer_module_tmp": base,
        "mlp_module_tmp": base + ".mlp"})
    names = [hp.rewrite_module_tmp.format(l) for l in hp.layers]
    g = torch.Generator().manual_seed(0)
    covs = {}
    for n in names:
        d = from_param_layout(get_module(model, n).weight, get_module(model, n)).shape[1]
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        covs[n] = (a @ a.T / d + torch.eye(d, dtype=torch.float64)).float()
    monkeypatch.setattr("helpers.editing.key_stats.key_second_moments", lambda model, tok, names, *a, **k: covs)
    reqs = [REQ, EditRequest("Apple A5 was created by", "Apple A5", "Google", "Apple", "x", "y", "z")]
    z_block = get_module(model, hp.layer_module_tmp.format(hp.layers[-1]))
    hidden = model.config.hidden_size
    zs = torch.randn(len(reqs), hidden, generator=g)
    monkeypatch.setattr(memit, "targets", lambda *a, **k: zs)

    ids = [tok(r.prompt).input_ids for r in reqs]
    look = [_subject_last(tok, r.prompt, r.subject) for r in reqs]
    params = dict(model.named_parameters())
    saved = {n: params[f"{n}.weight"].detach().clone() for n in names}
    expected = {}
    try:
        for i, name in enumerate(names):
            module = get_module(model, name)
            keys = []
            for row, pos in zip(ids, look):
                seen = {}
                h = module.register_forward_hook(lambda m, args, out: seen.__setitem__("k", args[0].detach()))
                with torch.no_grad():
                    model(input_ids=torch.tensor([row]))
                h.remove()
                keys.append(seen["k"][0, pos].double())
            K = torch.stack(keys, 1)  # [in, n]
            cur = torch.stack([_output_at(model, z_block, row, pos) for row, pos in zip(ids, look)], 1).double()
            resid = (zs.T.double() - cur) / (len(names) - i)  # [out, n]
            adj_k = torch.linalg.inv(hp.mom2_update_weight * covs[name].double() + K @ K.T) @ K
            upd = resid @ adj_k.T  # [out, in]
            expected[f"{name}.weight"] = upd
            with torch.no_grad():
                from_param_layout(params[f"{name}.weight"], module).add_(upd.float())
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                params[f"{n}.weight"].copy_(w)
    got = memit.apply(model, tok, reqs, hp)
    assert set(got) == set(expected)
    for key, upd in expected.items():
        assert_close(got[key], upd, rel=1e-4, what=key)  # a solve in float64 of float32 inputs


def test_mends_training_losses_are_the_references(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model, max_iters=6)
    net, _ = mend.train_mend(model, tok, MEND_REQS * 4, hp, progress=False)
    net.eval()
    batch = MEND_REQS[:1]
    edit_loss, loc_kl = mend.edit_losses(net, model, tok, batch, hp, grad=False)
    # the edited weights, as the network gives them
    factors = mend.gradient_factors(model, tok, batch, net.names, batch=mend.edit_batch(
        tok, [r.prompt for r in batch], [r.target_new for r in batch], "cpu", label_space=False))
    upd = net.updates(factors)
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in net.names}
    r = batch[0]
    loc_ids = tok(r.locality_prompt + " " + r.locality_answer).input_ids
    n_ans = len(tok(r.locality_answer).input_ids)
    with torch.no_grad():
        pre = torch.log_softmax(model(input_ids=torch.tensor([loc_ids])).logits[0, -n_ans:].float(), -1)
        try:
            for n in net.names:
                module = get_module(model, n.rsplit(".", 1)[0])
                from_param_layout(params[n], module).add_(upd[n].to(params[n].dtype))
            post = torch.log_softmax(model(input_ids=torch.tensor([loc_ids])).logits[0, -n_ans:].float(), -1)
            text_ids = tok(r.prompt + " " + r.target_new).input_ids
            labels = tok(r.target_new).input_ids  # the ZsRE training collation: the target without its space
            logp = torch.log_softmax(model(input_ids=torch.tensor([text_ids])).logits[0].float(), -1)
        finally:
            for n, w in saved.items():
                params[n].copy_(w)
    # multiclass_log_probs: the labels right-aligned against the predictions before the last position
    preds = logp[:-1][-len(labels):]
    nll = -preds[torch.arange(len(labels)), torch.tensor(labels)].mean()
    kl = (pre.exp() * (pre - post)).sum(-1).mean()  # kl_loc_loss: KL(pre ‖ post), masked mean
    assert_close(edit_loss, nll, what="edit NLL per target token")
    assert_close(loc_kl, kl, what="locality KL(pre ‖ post)")


def test_mend_training_weighs_the_edit_by_cedit_and_locality_by_cloc(tiny_model, monkeypatch):
    """One SGD step (lr 1) after accumulate_bs = 2 batches whose losses are linear in the steps
    η: η moves by −(cedit·a + cloc·b), the gradient of cedit·edit + cloc·loc averaged over the
    two batches."""
    model, tok = tiny_model
    n = len(mend_hparams(model).inner_params)
    a = torch.arange(1.0, n + 1)
    b = torch.full((n,), 10.0)

    def losses(net, model, tok, batch, hp, grad=True):
        return (net.edit_lrs * a).sum(), (net.edit_lrs * b).sum()

    monkeypatch.setattr(mend, "edit_losses", losses)
    hp = mend_hparams(model, max_iters=3, accumulate_bs=2, opt="SGD", lr=1.0, cedit=0.1, cloc=2.0)
    net, _ = mend.train_mend(model, tok, MEND_REQS * 2, hp, progress=False)
    moved = net.edit_lrs.detach() - hp.edit_lr
    assert_close(moved, -(0.1 * a + 2.0 * b), what="the step of η")
