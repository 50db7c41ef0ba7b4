"""Continuations (gold answers, labels, edit targets) are scored as they read after their prompt.

LLaMA's SentencePiece tokenizer adds a "▁" to the start of every text it is given, so a label
tokenised alone, " true", becomes "▁" + "▁true" — a token that "... answer: true" never has.
The tokenizer here is built offline the way LLaMA's ``tokenizer.json`` is (a "▁" prepended,
spaces replaced by "▁", no pre-tokenizer), on a vocabulary of a few pieces.
"""
import string
import warnings

import pytest
import torch

from helpers.model.batching import encode_continuation
from helpers.model.generate import generate
from helpers.model.score import score
from tests.numerics import assert_values_close

pytestmark = pytest.mark.model

PROMPT = "Is the sky blue? answer:"


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["answer", "true", "false", "Is", "the", "sky", "blue"]
    pieces = ["<unk>", "<s>", "</s>", "▁", ":", "?", "."] + ["▁" + w for w in words]
    pieces += list(string.ascii_letters) + ["▁" + c for c in string.ascii_letters]
    vocab = [(p, -1.0 if len(p) > 2 else -10.0) for p in dict.fromkeys(pieces)]
    tk = Tokenizer(models.Unigram(vocab, unk_id=0))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_llama(sentencepiece_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(sentencepiece_tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def test_the_tokenizer_splits_a_lone_label_as_llama_does(sentencepiece_tokenizer):
    tok = sentencepiece_tokenizer
    alone = tok(" true", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(alone) == ["▁", "▁true"]
    joint = tok(PROMPT + " true").input_ids
    assert tok.convert_ids_to_tokens(joint[-1:]) == ["▁true"]


def joint_logprobs(model, tok, prompt, continuation):
    """Reference: tokenise prompt + continuation together, read it in one pass, take the tail."""
    n = len(tok(prompt).input_ids)
    ids = tok(prompt + continuation).input_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    tail = ids[n:]
    return tail, [float(lp[n - 1 + i, t]) for i, t in enumerate(tail)]


@pytest.mark.parametrize("continuation", [" true", " false", " blue sky"])
def test_scoring_and_generation_read_the_joint_tokens(tiny_llama, sentencepiece_tokenizer, continuation):
    tok = sentencepiece_tokenizer
    tail, ref = joint_logprobs(tiny_llama, tok, PROMPT, continuation)
    scored = score(tiny_llama, tok, [PROMPT], [continuation])[0]
    assert scored.tokens == tail
    assert_values_close(scored.logprobs, ref)
    gen = generate(tiny_llama, tok, [PROMPT], 2, [[continuation]], progress=False)[0]
    assert gen.scored[0].tokens == tail
    assert_values_close(gen.scored[0].logprobs, ref)
    # tokenised alone, the continuation would have been scored on other tokens
    assert tok(continuation, add_special_tokens=False).input_ids != tail


def test_a_continuation_that_changes_the_prompts_tokens_falls_back_with_a_warning(sentencepiece_tokenizer):
    tok = sentencepiece_tokenizer
    prompt = "Is the sky b"  # + "lue" makes "▁blue": the prompt's last token would change
    with pytest.warns(UserWarning, match="tokenised on its own"):
        ids = encode_continuation(tok, prompt, tok(prompt).input_ids, "lue")
    assert ids == tok("lue", add_special_tokens=False).input_ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_continuation(tok, PROMPT, tok(PROMPT).input_ids, " true") == tok(PROMPT + " true").input_ids[-1:]


def test_gpt2_style_tokenizers_are_unchanged(smol_tokenizer):
    # byte-level BPE: a continuation with its leading space tokenises the same alone or joined
    tok = smol_tokenizer
    for text in [" true", " Paris", " 1,250", " U.S. and Acme Inc."]:
        assert encode_continuation(tok, PROMPT, tok(PROMPT).input_ids, text) == tok(text, add_special_tokens=False).input_ids
