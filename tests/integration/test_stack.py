"""Running the decoder in pieces (helpers.model.stack) gives what one full forward pass gives, and
ROME/MEMIT's value optimisation on the reused prefix gives the reference's result."""
import pytest
import torch

from helpers import EditRequest
from helpers.editing import rome, targets
from helpers.editing.modules import get_module
from helpers.model.stack import DecoderStack, KeyValues, attention_bias
from tests.numerics import assert_close, assert_values_close

TEXTS = ["The capital of France is Paris and", "A", "Danielle Darrieux was born in the city of"]


def _padded(tok, texts, side):
    enc = [tok(t).input_ids for t in texts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(enc):
        sl = slice(0, len(e)) if side == "right" else slice(width - len(e), width)
        ids[r, sl], mask[r, sl] = torch.tensor(e), 1
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_the_stack_run_whole_equals_the_models_forward(tiny_deep_model, side):
    model, tok = tiny_deep_model
    ids, mask, pos = _padded(tok, TEXTS, side)
    stack = DecoderStack(model)
    with torch.no_grad():
        ours = stack.logits(stack.run(stack.embed(ids, pos), pos, mask))
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert_close(ours[real], ref[real])  # at the logits' scale: a wrong mask or position moves them by O(1)


def test_starting_above_a_layer_with_a_recorded_prefix_equals_the_full_pass(tiny_deep_model):
    """Split every text in two: the prefix once through all layers (keys and values kept),
    the rest through layers 0..1 and then, from the hidden states entering layer 2, through
    the rest; the logits of the rest equal a full pass's."""
    model, tok = tiny_deep_model
    stack = DecoderStack(model)
    enc = [tok(t).input_ids for t in TEXTS[::2]]
    cut = [3, 5]
    pre = torch.tensor([[0, 0] + enc[0][:3], enc[1][:5]])  # left-padded to 5
    pre_mask = torch.tensor([[0, 0, 1, 1, 1], [1] * 5])
    pre_pos = torch.tensor([[0, 0, 0, 1, 2], list(range(5))])
    rest = [e[c:] for e, c in zip(enc, cut)]
    width = max(map(len, rest))
    suf = torch.zeros((2, width), dtype=torch.long)
    suf_mask = torch.zeros_like(suf)
    for r, s in enumerate(rest):
        suf[r, : len(s)], suf_mask[r, : len(s)] = torch.tensor(s), 1
    suf_pos = torch.tensor(cut)[:, None] + torch.arange(width)
    keys = torch.cat([pre_mask, suf_mask], 1)
    with torch.no_grad():
        kv = KeyValues(record=True)
        stack.run(stack.embed(pre, pre_pos), pre_pos, pre_mask, cache=kv)
        entering = stack.run(stack.embed(suf, suf_pos), suf_pos, keys, 0, 2, KeyValues(prefix=dict(kv.seen)))
        upper = {l: kv.seen[l] for l in (2, 3)}
        logits = stack.logits(stack.run(entering, suf_pos, keys, 2, None, KeyValues(prefix=upper)))
        for r, (e, c) in enumerate(zip(enc, cut)):
            full = model(input_ids=torch.tensor([e])).logits[0, c:]
            assert_close(logits[r, : len(e) - c], full)  # a missing prefix key moves them by O(1)


def test_attention_bias_blocks_padding_and_the_future():
    bias = attention_bias(torch.tensor([[0, 1, 1, 1]]), 2, torch.float32)  # queries = slots 2, 3
    seen = bias[0, 0] == 0
    assert seen.tolist() == [[False, True, True, False], [False, True, True, True]]


REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English", ground_truth="French", rephrase="", locality_prompt="",
                  locality_answer="")
TEMPLATES = ["{}", "I think that. {}", "The story goes on and on. {}", "Yes. {}"]


def _hp(model, **over):
    gpt2 = type(model).__name__.startswith("GPT2")
    return rome.ROMEHyperParams(**{
        "layers": [1], "v_num_grad_steps": 6, "v_lr": 0.5, "context_templates": TEMPLATES,
        "early_stop_loss": -1.0,
        "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj" if gpt2 else "model.layers.{}.mlp.down_proj",
        "layer_module_tmp": "transformer.h.{}" if gpt2 else "model.layers.{}",
        "mlp_module_tmp": "transformer.h.{}.mlp" if gpt2 else "model.layers.{}.mlp", **over})


@pytest.mark.parametrize("where", ["rewrite", "block"])
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_the_reused_prefix_gives_the_references_outputs_and_gradients(tiny_deep_model, where, layer):
    """ROME's v (an MLP output matrix) and MEMIT's z (a block's output), at the bottom, middle
    and top layer: for any δ, the fast path's hidden states at every real position from the
    subject on, and the gradient of a loss on them with respect to δ, equal the reference's.
    (The optimised vectors themselves are compared on SmolLM2 below: on a random tiny model
    some gradient components are rounding noise, and Adam follows their sign.)"""
    from helpers.editing.positions import in_template, subject_last_index

    model, tok = tiny_deep_model
    hp = _hp(model)
    module = get_module(model, (hp.rewrite_module_tmp if where == "rewrite" else hp.layer_module_tmp).format(layer))
    placed = [in_template(t, REQ.prompt, REQ.subject) for t in TEMPLATES]
    texts = [t + " Eng" for t, _ in placed] + [f"{REQ.subject} is a"]
    lookup = [subject_last_index(tok, t, REQ.subject, s) for t, s in zip(texts, [s for _, s in placed] + [0])]
    enc = [tok(t).input_ids for t in texts]
    owner = torch.zeros(len(enc), dtype=torch.long)  # one request: every text is its own
    full = targets._FullRows(model, module, enc, lookup, 0, "cpu", owner, [0])
    fast = targets._SuffixRows(model, module, enc, lookup, layer, 0, "cpu", owner, [0])
    assert_close(fast.init, full.init)
    torch.manual_seed(1)
    delta = (torch.randn_like(full.init) * full.init.norm() / 4).requires_grad_(True)  # [1, out]
    probe = torch.randn(full.init.shape[-1])
    grads, outs = [], []
    for rows in (full, fast):
        hidden = rows.final_hidden(delta)
        picked = torch.cat([hidden[r, rows.edit_col[r]: rows.edit_col[r] + len(e) - lookup[r]]
                            for r, e in enumerate(enc)])
        (g,) = torch.autograd.grad((picked @ probe).square().sum(), delta)
        grads.append(g)
        outs.append(picked.detach())
    assert_close(outs[1], outs[0])
    assert (grads[0] - grads[1]).norm() <= 1e-4 * grads[0].norm()


@pytest.mark.model
def test_value_optimisation_on_smollm2_equals_the_reference(smollm2):
    model, tok = smollm2
    hp = rome.ROMEHyperParams(**{**vars(_hp(model)), "layers": [6], "v_num_grad_steps": 5})
    module = get_module(model, hp.rewrite_module_tmp.format(6))
    fast = rome.optimize_target(model, tok, REQ, hp, module, TEMPLATES, 6)
    ref = rome.optimize_target(model, tok, REQ, hp, module, TEMPLATES, 6, reuse_prefix=False)
    assert (fast - ref).norm() <= 1e-4 * ref.norm()


@pytest.mark.parametrize("layer", [1, 3])
def test_the_lower_layer_cache_gives_what_a_full_read_gives_after_an_edit(tiny_deep_model, layer):
    """Fill the cache on the unedited model, change a layer at or above ``layer``, then decode
    with the cache: the same greedy tokens and continuation scores as without it. Changing a
    layer below makes the cache refuse."""
    from helpers.model.generate import generate
    from helpers.model.lower_layers import LowerLayerCache, StaleCacheError

    model, tok = tiny_deep_model
    prompts = ["The capital of France is", "Once upon a time there was a", "2 + 2 =", "Hi"]
    conts = [[" Paris is", " Rome"], [" king"], [" 4"], [" there you go"]]
    cache = LowerLayerCache(model, layer)
    generate(model, tok, prompts, 4, conts, lower_layers=cache, progress=False)
    assert len(cache.entries) == len(prompts)
    top = get_module(model, f"{'transformer.h' if hasattr(model, 'transformer') else 'model.layers'}.{layer}")
    w = next(p for p in top.parameters() if p.dim() == 2)
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.add_(torch.randn_like(w) * w.std())
        read = []
        bottom = DecoderStack(model).layers[0]
        hook = bottom.register_forward_pre_hook(lambda m, a: read.append(a[0].shape[0] * a[0].shape[1]))
        try:
            fast = generate(model, tok, prompts, 4, conts, lower_layers=cache, progress=False)
            fast_read, read[:] = sum(read), []
            plain = generate(model, tok, prompts, 4, conts, progress=False)
            plain_read = sum(read)
        finally:
            hook.remove()
        assert fast_read <= plain_read - sum(len(tok(p).input_ids) for p in prompts)  # prompts skipped layer 0
        for a, b in zip(fast, plain):
            assert a.tokens == b.tokens
            for x, y in zip(a.scored, b.scored):
                assert_values_close(x.logprobs, y.logprobs)
        below = model.get_input_embeddings().weight
        row = below[5].detach().clone()
        with torch.no_grad():
            below[5] += 1.0
        try:
            with pytest.raises(StaleCacheError, match="have changed"):
                generate(model, tok, prompts, 4, conts, lower_layers=cache, progress=False)
        finally:
            with torch.no_grad():
                below[5] = row
    finally:
        with torch.no_grad():
            w.copy_(saved)
