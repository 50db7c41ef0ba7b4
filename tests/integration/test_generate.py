"""The decoding engine on tiny random GPT-2 / Llama models and on SmolLM2."""
import pytest
import torch

from helpers import generate
from tests.numerics import assert_values_close

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away, there lived a",
    "2 + 2 =",
    "Question: what is the largest planet in the solar system? Answer:",
    "Hi",
    "Please identify Person Entity from the given text. Text: Peter Blackburn visited Bonn. Entity:",
]
CONTS = [[" Paris", " London is big"], [" king"], [" 4"], [" Jupiter", " Saturn the ringed"], [" there"], [" Peter Blackburn"]]


def _full_forward_logprob(model, tok, prompt, cont):
    p = tok(prompt).input_ids
    c = tok(cont, add_special_tokens=False).input_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
    return sum(lp[len(p) - 1 + j, t].item() for j, t in enumerate(c)), [
        int(lp[len(p) - 1 + j].argmax()) == t for j, t in enumerate(c)]


def _hf_greedy(model, tok, prompt, n):
    ids = torch.tensor([tok(prompt).input_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    stop = model.generation_config.eos_token_id
    return new[: new.index(stop)] if stop in new else new


def test_batched_equals_one_at_a_time(tiny_model):
    model, tok = tiny_model
    batched = generate(model, tok, PROMPTS, 8, CONTS, batch_tokens=10_000, progress=False)
    single = [generate(model, tok, [p], 8, [c], progress=False)[0] for p, c in zip(PROMPTS, CONTS)]
    for b, s in zip(batched, single):
        assert b.tokens == s.tokens
        for x, y in zip(b.scored, s.scored):
            assert_values_close(x.logprobs, y.logprobs)


def test_greedy_tokens_match_transformers_generate(tiny_model):
    model, tok = tiny_model
    gens = generate(model, tok, PROMPTS, 6, progress=False)
    for p, g in zip(PROMPTS, gens):
        assert g.tokens == _hf_greedy(model, tok, p, 6)
        assert g.prompt_tokens == len(tok(p).input_ids)


def test_continuation_scores_equal_a_full_forward(tiny_model):
    model, tok = tiny_model
    gens = generate(model, tok, PROMPTS, 3, CONTS, progress=False)
    for p, cs, g in zip(PROMPTS, CONTS, gens):
        for c, s in zip(cs, g.scored):
            lp, greedy = _full_forward_logprob(model, tok, p, c)
            assert s.logprob == pytest.approx(lp, abs=1e-3)
            assert s.greedy == greedy
            assert s.nll == pytest.approx(-lp / len(s.tokens), abs=1e-3)


def test_tiny_batches_give_the_same_answer(tiny_model):
    model, tok = tiny_model
    a = generate(model, tok, PROMPTS, 5, CONTS, batch_tokens=1, progress=False)  # one prompt a batch
    b = generate(model, tok, PROMPTS, 5, CONTS, batch_tokens=10_000, progress=False)
    assert [g.tokens for g in a] == [g.tokens for g in b]


def test_zero_new_tokens_only_scores(tiny_model):
    model, tok = tiny_model
    g = generate(model, tok, PROMPTS[:2], 0, CONTS[:2], progress=False)
    assert g[0].tokens == [] and g[0].text == "" and len(g[0].scored) == 2


def test_bad_arguments_are_refused(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="continuation lists"):
        generate(model, tok, PROMPTS, 1, CONTS[:2], progress=False)
    with pytest.raises(ValueError, match="has no tokens"):
        generate(model, tok, ["x"], 1, [[""]], progress=False)


@pytest.mark.model
@pytest.mark.data
def test_smollm2_engine_equals_one_at_a_time_on_the_task_mix(smollm2):
    """The engine (like-length groups, joined caches, a shared instruction read once) gives the
    tokens and scores of one prompt at a time through the plain path, on every task's prompts
    with its own generation length and continuations."""
    from helpers import TASKS, get_task, load_task

    model, tok = smollm2
    for name in TASKS:
        task = get_task(name)
        prompts = [p for e in load_task(name, n=2, seed=1) for p in task.prompts(e, "paper")]
        texts = [p.text for p in prompts]
        conts = [([p.gold_text] if p.gold_text else []) + list(task.labels or ()) for p in prompts]
        batched = generate(model, tok, texts, task.max_new_tokens, conts, progress=False)
        single = [generate(model, tok, [t], task.max_new_tokens, [c], share_prefix=False, progress=False)[0]
                  for t, c in zip(texts, conts)]
        assert [b.tokens for b in batched] == [s.tokens for s in single], name
        for b, s in zip(batched, single):
            for x, y in zip(b.scored, s.scored):
                assert x.logprobs == pytest.approx(y.logprobs, abs=2e-3), name


@pytest.mark.model
def test_smollm2_knows_paris(smollm2):
    model, tok = smollm2
    g = generate(model, tok, ["The capital of France is"], 3, [[" Paris", " Berlin"]], progress=False)[0]
    assert g.text.startswith(" Paris")
    assert g.scored[0].greedy == [True] and g.scored[0].logprob > g.scored[1].logprob


INSTRUCTION = "For each snippet of text, label the sentiment of the text as positive or negative. Text:"
SHARED = [INSTRUCTION + t for t in [" great film", " a dull, tedious, overlong mess of a movie that never ends",
                                    " fine", " I laughed, I cried, and then I laughed again at the end"]]
SHARED_CONTS = [[" positive review", " negative, really"]] * len(SHARED)


def _tokens_read(model, fn):
    seen = []
    orig = model.forward

    def counting(*a, **k):
        seen.append(k["input_ids"].numel())
        return orig(*a, **k)

    model.forward = counting
    try:
        return fn(), sum(seen)
    finally:
        del model.forward


@pytest.mark.parametrize("batch_tokens", [10_000, 40])  # one prefill group; several, joined
def test_a_shared_instruction_is_read_once_and_changes_nothing(tiny_model, batch_tokens):
    model, tok = tiny_model
    shared, read_shared = _tokens_read(model, lambda: generate(
        model, tok, SHARED, 5, SHARED_CONTS, batch_tokens=batch_tokens, progress=False))
    plain, read_plain = _tokens_read(model, lambda: generate(
        model, tok, SHARED, 5, SHARED_CONTS, share_prefix=False, progress=False))
    n_instr = len(tok(INSTRUCTION).input_ids)
    assert read_shared <= read_plain - (len(SHARED) - 1) * (n_instr - 1)
    for p, a, b in zip(SHARED, shared, plain):
        assert a.tokens == b.tokens == _hf_greedy(model, tok, p, 5)
        assert a.prompt_tokens == b.prompt_tokens == len(tok(p).input_ids)
        for x, y in zip(a.scored, b.scored):
            assert_values_close(x.logprobs, y.logprobs)


def test_one_pass_scoring_equals_reading_prompt_and_continuation_apart(tiny_model):
    """score() reads prompt and continuation together (left-padded groups); its scores are
    those of the decoding engine's path (prompt first, continuation on its cache)."""
    from helpers.model.score import score

    model, tok = tiny_model
    prompts = ["The capital of France is", "Who wrote Hamlet? The answer:", "x", "Danielle Darrieux's mother tongue is"]
    conts = [[" Paris"], [" William Shakespeare, of course"], [" y z"], [" French"]]
    one = score(model, tok, prompts, [c[0] for c in conts], batch_tokens=40)
    two = generate(model, tok, prompts, 0, conts, progress=False, pad_tolerance=0.1)
    for sa, b in zip(one, two):
        (sb,) = b.scored
        assert sa.tokens == sb.tokens and sa.argmax == sb.argmax and sa.greedy == sb.greedy
        assert_values_close(sa.logprobs, sb.logprobs)


def test_score_equals_a_direct_forward_of_prompt_and_continuation(tiny_model):
    """Each continuation token's log-probability is what one unpadded forward of the prompt
    followed by the continuation gives at the position before it; score() pads nothing away."""
    from helpers.model.score import score

    model, tok = tiny_model
    prompts = ["The capital of France is", "x", "Who wrote Hamlet? The answer:"]
    conts = [" Paris", " y z", " William Shakespeare"]
    scored = score(model, tok, prompts, conts)
    for p, c, s in zip(prompts, conts, scored):
        ids = tok(p).input_ids
        target = tok(c, add_special_tokens=False).input_ids
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids + target])).logits[0].float(), -1)
        direct = [float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(target)]
        assert s.tokens == target
        assert_values_close(s.logprobs, direct)
        assert s.argmax == [int(lp[len(ids) - 1 + j].argmax()) for j in range(len(target))]
