"""MEND on tiny random GPT-2 / Llama models, pinned to the reference's computation (EasyEdit's
trainer/algs/MEND.py, local_nn.LRLinear, EditTrainer and mend_main)."""
import pytest
import torch

from helpers import EditRequest
from helpers.editing import EditSequence, HparamsError, begin_sequence, edit, mend
from helpers.editing.modules import from_param_layout, get_module
from tests.numerics import assert_close

REQS = [
    EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux", target_new="English",
                ground_truth="French", rephrase="x", locality_prompt="The capital of France is", locality_answer="Paris"),
    EditRequest(prompt="Apple A5 was created by", subject="Apple A5", target_new="Google", ground_truth="Apple",
                rephrase="x", locality_prompt="Who wrote Hamlet?", locality_answer="Shakespeare"),
]


def inner_names(model):
    """Two layers, so each shared network's first weight sees every position's gradient (in the
    last layer only the target's positions have one; the reference needs two rows to normalise)."""
    if type(model).__name__.startswith("GPT2"):  # the paper's order: c_proj before c_fc
        return [f"transformer.h.{l}.mlp.{m}.weight" for l in (0, 1) for m in ("c_proj", "c_fc")]
    return [f"model.layers.{l}.mlp.{m}_proj.weight" for l in (0, 1) for m in ("up", "down")]


def mend_hparams(model, **over):
    return mend.MENDHyperParams(**{"inner_params": inner_names(model), "rank": 8, "max_iters": 12,
                                   "accumulate_bs": 3, "lr": 1e-3, **over})


def test_gradient_factors_rebuild_the_true_gradient(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model)
    factors = mend.gradient_factors(model, tok, REQS, hp.inner_params)
    ids, mask, labels = mend.edit_batch(tok, [r.prompt for r in REQS], [r.target_new for r in REQS], "cpu")
    model.zero_grad()
    mend.target_nll(model(input_ids=ids, attention_mask=mask).logits, labels).backward()
    params = dict(model.named_parameters())
    for name in hp.inner_params:
        u, d = factors[name]
        module = get_module(model, name.rsplit(".", 1)[0])
        grad = from_param_layout(params[name].grad, module)  # [out, in]
        assert_close(d.T @ u, grad)  # at the gradient's scale
    model.zero_grad()


def test_edit_batch_and_loss_follow_mend_main(tiny_model):
    """prompt + " " + target, left-padded; labels tok(" " + target) right-aligned against the
    predictions of the positions before the last."""
    _, tok = tiny_model
    ids, mask, labels = mend.edit_batch(tok, ["Hello there"], ["world"], "cpu")
    assert ids[0].tolist() == tok("Hello there world").input_ids
    assert labels[0].tolist() == tok(" world").input_ids
    logits = torch.zeros(1, ids.shape[1], len(tok))
    t = labels.shape[1]
    logits[0, -1 - t:-1, labels[0]] = 50.0  # the positions that predict the target, only
    assert mend.target_nll(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    logits[0, -1 - t:-1] = 0.0
    logits[0, -t:, labels[0]] = 50.0  # one position late: wrong
    assert mend.target_nll(logits, labels).item() > 1.0
    # training labels (ZsRE collation): the target without its leading space, padding masked
    _, _, train_labels = mend.edit_batch(tok, ["a", "b"], ["x", "a longer answer"], "cpu", label_space=False)
    assert train_labels[1].tolist() == tok("a longer answer").input_ids
    assert (train_labels[0] == -100).sum() == train_labels.shape[1] - len(tok("x").input_ids)
    # cut at max_length tokens (the collation's truncation at 40)
    long = " ".join(["word"] * 60)
    ids, _, labels = mend.edit_batch(tok, [long], [long], "cpu", label_space=False, max_length=40)
    assert ids.shape[1] == 40 and labels.shape[1] == 40


def test_low_rank_layer_computes_the_reference_lrlinear_on_a_hand_made_input():
    """clamp(s ⊙ (U V z + b) + c, min=0) + z, the clamp in every layer."""
    layer = mend.LowRankLayer(2, 1, n_modes=1)
    with torch.no_grad():
        layer.u.copy_(torch.tensor([[1.0], [-1.0]]))
        layer.v.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5, 0.5]))
        layer.mode_scale.copy_(torch.tensor([[2.0, 1.0]]))
        layer.mode_shift.copy_(torch.tensor([[0.0, -1.0]]))
    out = layer(torch.tensor([[1.0, 1.0]]), 0)
    # V z = 3; U V z + b = [3.5, -2.5]; ⊙ s + c = [7, -3.5]; clamp = [7, 0]; + z = [8, 1]
    assert out.tolist() == [[8.0, 1.0]]


def test_initialisation_is_the_identity_with_a_standard_normal_v():
    hp = mend.MENDHyperParams(inner_params=[], rank=16, norm=False)
    t = mend.GradientTransform(100, 60, hp, n_modes=2)
    v = t.layers[0].v.detach()
    assert 0.9 < float(v.std()) < 1.1  # randn, not randn / sqrt(dim)
    x, d = torch.randn(5, 100), torch.randn(5, 60)
    x2, d2 = t(x, d, 1)
    assert torch.equal(x2, x) and torch.equal(d2, d)


def test_normalisation_uses_the_rows_seen_so_far_unbiased():
    hp = mend.MENDHyperParams(inner_params=[], rank=4)
    t = mend.GradientTransform(3, 2, hp, n_modes=1).train()
    a, b = torch.randn(4, 5), torch.randn(6, 5)
    t(a[:, :3], a[:, 3:], 0)
    x2, d2 = t(b[:, :3], b[:, 3:], 0)
    rows = torch.cat([a, b])
    want = (b - rows.mean(0)) / (rows.std(0, unbiased=True) + 1e-7)
    assert_close(torch.cat([x2, d2], 1), want)  # biased std or the last batch alone: > 1e-2 away
    t.eval()  # eval: the statistics stay
    t(torch.randn(3, 3), torch.randn(3, 2), 0)
    assert int(t.count) == 10


def test_rows_with_a_zero_gradient_are_dropped(tiny_model):
    """The last token's output reaches no loss: its δ is zero and its row is left out of the
    statistics (and the update)."""
    model, tok = tiny_model
    hp = mend_hparams(model)
    net = mend.MEND(model, hp).train()
    factors = mend.gradient_factors(model, tok, REQS[:1], hp.inner_params)
    net.updates(factors)
    for name, (x, d) in factors.items():
        key, _ = net.modes[net.names.index(name)]
        kept = int(((x != 0).any(-1) & (d != 0).any(-1)).sum())
        assert kept < x.shape[0]
    x, d = factors[hp.inner_params[-1]]  # the last layer: only the target's positions have a gradient
    assert (d[-1] == 0).all() and int((d != 0).any(-1).sum()) == len(tok(" English").input_ids)


def test_untrained_mend_is_a_plus_signed_step_per_weight(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model, norm=False)
    net = mend.MEND(model, hp)
    with torch.no_grad():
        net.edit_lrs.copy_(torch.tensor([1e-4, 2e-4, 3e-4, 4e-4]))
    factors = mend.gradient_factors(model, tok, REQS, hp.inner_params)
    with torch.no_grad():
        upd = net.updates(factors)
        at_edit = net.updates(factors, at_edit=True)
    swapped = type(model).__name__.startswith("GPT2")  # c_fc comes before c_proj among GPT-2's parameters
    for i, name in enumerate(hp.inner_params):
        u, d = factors[name]
        assert_close(upd[name], net.edit_lrs[i] * (d.T @ u))  # another layer's rate: ×2 or more
        j = i ^ 1 if swapped else i
        assert_close(at_edit[name], net.edit_lrs[j] * (d.T @ u))
    own = mend.MEND(model, mend_hparams(model, norm=False, edit_lr_order="inner_params"))
    assert own.edit_step_index == [0, 1, 2, 3]


def test_training_accumulates_clips_and_lowers_the_edit_loss(tiny_model, monkeypatch):
    model, tok = tiny_model
    hp = mend_hparams(model, max_iters=30, accumulate_bs=3)
    steps, clips = [], []
    real_step, real_clip = torch.optim.Adam.step, torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, m, *a, **k: clips.append(m) or real_clip(p, m, *a, **k))
    net, log = mend.train_mend(model, tok, REQS * 4, hp, progress=False)
    # the reference runs max_iters - 1 batches: 29, a step after every third
    assert len(log["edit_loss"]) == 29 and len(steps) == 9 and clips == [100.0] * 9
    first, last = sum(log["edit_loss"][:6]) / 6, sum(log["edit_loss"][-6:]) / 6
    assert last < first


def test_reference_statistics_restart_with_each_sequence(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    monkeypatch.setattr(mend, "_all_records", lambda: [])
    monkeypatch.setattr(mend, "_NETS", {})
    model, tok = tiny_model
    hp = mend_hparams(model)
    mend.load_or_train(model, tok, hp, "tiny", records=REQS * 4, progress=False)
    monkeypatch.setattr(mend, "files_name", lambda m: "tiny")
    counts = []
    for _ in range(2):
        sequence = EditSequence()  # each sequence its own statistics
        for r in REQS:
            edit(model, tok, r, "MEND", hp, sequence=sequence).restore()
            (net,) = mend._NETS.values()
            counts.append(int(next(iter(net.transforms.values())).count))
    assert counts[0] > 0 and counts[1] > counts[0] and counts[2:] == counts[:2]
    # two sequences interleaved keep apart: the second's first edit starts afresh after the first's two
    first, second = EditSequence(), EditSequence()
    interleaved = []
    for sequence in (first, first, second):
        edit(model, tok, REQS[0], "MEND", hp, sequence=sequence).restore()
        interleaved.append(int(next(iter(mend._NETS[next(iter(mend._NETS))].transforms.values())).count))
    assert interleaved[2] == interleaved[0] < interleaved[1]
    # hand calls without sequence= go on one sequence until begin_sequence()
    begin_sequence()
    hand = []
    for _ in range(2):
        edit(model, tok, REQS[0], "MEND", hp).restore()
        hand.append(int(next(iter(mend._NETS[next(iter(mend._NETS))].transforms.values())).count))
    begin_sequence(model)
    edit(model, tok, REQS[0], "MEND", hp).restore()
    assert hand[1] > hand[0] == int(next(iter(mend._NETS[next(iter(mend._NETS))].transforms.values())).count)
    trained = mend_hparams(model, edit_statistics="trained")
    before = [t.count.clone() for t in mend.load_or_train(model, tok, trained, "tiny", progress=False).transforms.values()]
    for _ in range(2):  # a new sequence leaves the trained statistics alone
        edit(model, tok, REQS[0], "MEND", trained, sequence=EditSequence()).restore()
    net = [n for k, n in mend._NETS.items() if not n.training][0]
    assert [t.count for t in net.transforms.values()] == before


def _as_reference_checkpoint(net):
    """``net``'s weights under the reference's state-dict names (MEND.state_dict())."""
    out = {"edit_lrs": net.edit_lrs.detach().clone()}
    for key, t in net.transforms.items():
        xd = t.x_dim
        for mine, theirs in (("mean", "mean"), ("sq_dev", "s")):
            buf = getattr(t, mine)
            out[f"mend.{key}.u_{theirs}"], out[f"mend.{key}.v_{theirs}"] = buf[:xd].clone(), buf[xd:].clone()
        std = (t.sq_dev / (t.count - 1)).sqrt()
        out[f"mend.{key}.u_std"], out[f"mend.{key}.v_std"] = std[:xd], std[xd:]
        out[f"mend.{key}.k"] = t.count.reshape(1).clone()
        for i, layer in enumerate(t.layers):
            for n in ("u", "v", "bias"):
                out[f"mend.{key}.mlp.layers.{i}.{n}"] = getattr(layer, n).detach().clone()
            out[f"mend.{key}.mlp.layers.{i}.mode_scale.weight"] = layer.mode_scale.detach().clone()
            out[f"mend.{key}.mlp.layers.{i}.mode_shift.weight"] = layer.mode_shift.detach().clone()
    return out


def test_a_reference_checkpoint_loads_with_weights_only(tiny_model, tmp_path):
    from transformers import GPT2Config

    model, tok = tiny_model
    hp = mend_hparams(model, max_iters=6)
    trained, _ = mend.train_mend(model, tok, REQS * 4, hp, progress=False)
    state = _as_reference_checkpoint(trained)
    # the reference's file: torch.save of a dict whose "model" holds a config object
    path = tmp_path / "gpt2-xl"
    torch.save({"model": {**state, "model_config": GPT2Config(n_layer=2)}, "step": 6, "val_stats": {"a": 1.0}}, path)
    net = mend.MEND(model, hp)
    mend.load_archive(path, net)
    for (k, a), (_, b) in zip(trained.state_dict().items(), net.state_dict().items()):
        assert torch.equal(a, b), k
    # an old file names the networks gtn.
    torch.save({"model": {k.replace("mend.", "gtn.", 1): v for k, v in state.items()}}, path)
    again = mend.MEND(model, hp)
    mend.load_archive(path, again)
    assert torch.equal(again.edit_lrs, trained.edit_lrs)
    with pytest.raises(Exception, match="does not exist"):
        mend.load_archive(tmp_path / "nope", net)


def test_load_or_train_reloads_from_safetensors(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    model, tok = tiny_model
    hp = mend_hparams(model, max_iters=6)
    saved = mend.load_or_train(model, tok, hp, "tiny", records=[*REQS * 3], progress=False)
    files = list((tmp_path / "mend").glob("*.safetensors"))
    assert len(files) == 1 and files[0].with_suffix(".json").exists()
    again = mend.load_or_train(model, tok, hp, "tiny", records=None, progress=False)  # from disk
    for (k, a), (_, b) in zip(saved.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def _scripted_validations(monkeypatch, values):
    """Replace the validation with ``values`` in turn, keeping a copy of the network at each."""
    seen = []

    def validate(net, model, tok, records, hp):
        seen.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        v = values[len(seen) - 1]
        return {"loss/total_edit_val": v, "loss/edit_val": v, "loss/loc_val": 0.0}

    monkeypatch.setattr(mend, "validation_losses", validate)
    return seen


def test_training_keeps_the_network_of_the_best_validation(tiny_model, monkeypatch):
    """As BaseTrainer.run: a validation every val_interval batches, the checkpoint saved at each new
    best of early_stop_key, and that checkpoint (not the last iterate) is the trained network."""
    model, tok = tiny_model
    seen = _scripted_validations(monkeypatch, [3.0, 1.0, 2.0, 4.0])
    hp = mend_hparams(model, max_iters=14, val_interval=3)
    net, log = mend.train_mend(model, tok, REQS * 4, hp, progress=False, val_records=REQS)
    assert [step for step, _ in log["validations"]] == [3, 6, 9, 12]
    assert log["kept_step"] == 6 and log["kept_value"] == 1.0
    for k, v in net.state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    assert any(not torch.equal(seen[1][k], seen[3][k]) for k in seen[1])  # training went on after it


def test_early_stopping_and_epochs_follow_the_reference_schedule(tiny_model, monkeypatch):
    model, tok = tiny_model
    _scripted_validations(monkeypatch, [float(i) for i in range(1, 20)])  # never better than the first
    hp = mend_hparams(model, max_iters=30, val_interval=3, early_stop_patience=3)
    _, log = mend.train_mend(model, tok, REQS * 4, hp, progress=False, val_records=REQS)
    # 8 records, batch 1: round(30 / 8) = 4 epochs. The first validation (batch 3) is the best; at batch 6
    # it is 3 batches old: stop. The reference's break leaves only the epoch: epoch 2 runs batches 7-9
    # (stops at the validation of 9), epoch 3 batches 10-12, epoch 4 batches 13-15. 6 + 3 + 3 + 3 = 15.
    assert len(log["edit_loss"]) == 15 and log["kept_step"] == 3
    # max_epochs caps max_iters at max_epochs × records: min(100, 2 × 8) = 16, so 15 batches
    _, log = mend.train_mend(model, tok, REQS * 4, mend_hparams(model, max_iters=100, max_epochs=2), progress=False)
    assert len(log["edit_loss"]) == 15 and log["validations"] == []
    # max_iters far below an epoch rounds to 0 epochs: the reference trains nothing
    _, log = mend.train_mend(model, tok, REQS * 8, mend_hparams(model, max_iters=5), progress=False)
    assert log["edit_loss"] == []


def test_the_optimiser_is_the_one_named(tiny_model, monkeypatch):
    model, tok = tiny_model
    used = []
    for name in ("SGD", "Adam"):
        cls = getattr(torch.optim, name)
        real = cls.step
        monkeypatch.setattr(cls, "step", lambda self, *a, _n=name, _r=real, **k: used.append(_n) or _r(self, *a, **k))
    mend.train_mend(model, tok, REQS * 4, mend_hparams(model, max_iters=8, accumulate_bs=3, opt="SGD"), progress=False)
    assert used == ["SGD", "SGD"]


def test_validation_leaves_the_statistics_and_averages_the_weighted_losses(tiny_model):
    model, tok = tiny_model
    hp = mend_hparams(model, max_iters=6, val_batch_size=1, val_steps=2, cedit=0.3, cloc=2.0)
    net, _ = mend.train_mend(model, tok, REQS * 4, hp, progress=False)
    counts = [t.count.clone() for t in net.transforms.values()]
    values = mend.validation_losses(net, model, tok, REQS * 3, hp)
    assert [t.count for t in net.transforms.values()] == counts and net.training
    net.eval()
    parts = [mend.edit_losses(net, model, tok, [r], hp, grad=False) for r in REQS]  # val_steps 2: two records
    edit_mean = sum(float(e) for e, _ in parts) / 2
    loc_mean = sum(float(loc) for _, loc in parts) / 2
    assert values["loss/edit_val"] == pytest.approx(edit_mean, rel=1e-5)
    assert values["loss/total_edit_val"] == pytest.approx(0.3 * edit_mean + 2.0 * loc_mean, rel=1e-5)


@pytest.mark.parametrize("key,value", [("combine", False), ("x_only", True), ("one_sided", True), ("init", "xavier"),
                                       ("act", "tanh"), ("train_base", True), ("edit_statistics", "x"),
                                       ("half", True), ("no_grad_layers", 3), ("opt", "Nope"),
                                       ("early_stop_key", "edit/acc_val")])
def test_unimplemented_settings_are_refused(tiny_model, key, value):
    model, tok = tiny_model
    with pytest.raises(HparamsError, match=key):
        mend.load_or_train(model, tok, mend_hparams(model, **{key: value}), "tiny", records=[], progress=False)


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
