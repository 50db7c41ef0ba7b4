"""A rehearsal of the paper profile's methods on tiny random models with the paper's
architectures: GPT-2 XL's 48 Conv1D layers and LLaMA-7B's 32 Linear layers, their module names
and layouts, small widths. Each method edits with the paper's own hparams file
(tests/fixtures/paper_hparams, as the authors ship it), restores bit-exactly, and its editing
metrics come out.

Overridden, and only these: the key statistics come from texts sampled from the model (no
Wikipedia without the hub) and fewer of them; MEND trains for 20 batches on ten records (the
paper's 100000 batches and its network checkpoint are out of reach of a CPU test).
"""
from pathlib import Path

import pytest
import torch

from helpers import EditRequest
from helpers.editing import edit, editing_metrics, mend, read_hparams

PAPER = Path(__file__).resolve().parents[1] / "fixtures" / "paper_hparams"
REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="Danielle Darrieux speaks",
                  locality_prompt="The capital of France is", locality_answer="Paris", prediction="French")
OVERRIDES = {"ROME": {}, "KN": {},
             "MEMIT": {"mom2_dataset": "self", "mom2_n_samples": 24},
             "MEND": {"max_iters": 20, "archive": None}}


def paper_shaped(kind: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2-xl":  # 48 blocks of Conv1D, as GPT-2 XL (1600 wide there)
        cfg = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=32, n_layer=48, n_head=4)
        model = GPT2LMHeadModel(cfg)
    else:  # 32 blocks of Linear with gate/up/down, as LLaMA-7B (4096 / 11008 there)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=88, num_hidden_layers=32,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
        model = LlamaForCausalLM(cfg)
    model.config._name_or_path = f"tiny-{kind}"
    return model.eval()


@pytest.fixture(scope="module", params=["gpt2-xl", "llama-7b"])
def paper_model(request, smol_tokenizer):
    return request.param, paper_shaped(request.param, len(smol_tokenizer)), smol_tokenizer


@pytest.mark.parametrize("method", ["ROME", "MEMIT", "KN", "MEND"])
def test_the_papers_hparams_edit_restore_and_score(paper_model, method, tmp_path, monkeypatch):
    kind, model, tok = paper_model
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path))
    records = [EditRequest(**{**REQ.__dict__, "prompt": f"Question {i}: who is Danielle Darrieux?", "case_id": i,
                              "target_new": t}) for i, t in enumerate(["Paris", "Rome", "Oslo", "Lima", "Kyiv"] * 2)]
    monkeypatch.setattr(mend, "_all_records", lambda: records)
    monkeypatch.setattr(mend, "_NETS", {})
    hp = read_hparams(method, PAPER / method / f"{kind}.yaml")
    for key, value in OVERRIDES[method].items():
        setattr(hp, key, value)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = editing_metrics(model, tok, [REQ])
    res = edit(model, tok, REQ, method, hp)
    try:
        assert res.deltas, f"{method} changed nothing"
        params = dict(model.named_parameters())
        for name, delta in res.deltas.items():
            assert delta.shape == params[name].shape and torch.isfinite(delta).all()
            assert not torch.equal(params[name], before[name])
        if method in ("ROME", "MEMIT"):
            wanted = {f"{hp.rewrite_module_tmp.format(l)}.weight" for l in hp.layers}
            assert set(res.deltas) == wanted
        if method == "MEND":
            assert set(res.deltas) == set(hp.inner_params)
        if method == "KN":
            assert all(n.endswith((".mlp.c_proj.weight", ".mlp.down_proj.weight")) for n in res.deltas)
        metrics = editing_metrics(model, tok, [REQ], reference=reference).iloc[0]
        for column in ("reliability", "generalization", "locality"):
            assert 0.0 <= metrics[column] <= 1.0
    finally:
        res.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
