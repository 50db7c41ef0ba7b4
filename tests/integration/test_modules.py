import pytest

from helpers.editing.positions import in_template, subject_last_index


@pytest.mark.parametrize("text,subject", [
    ("Apple A5 was created by", "Apple A5"),
    ("When was the inception of IAAF Combined Events Challenge?", "IAAF Combined Events Challenge"),
    ("What is the mother tongue of Danielle Darrieux?", "Danielle Darrieux"),
])
def test_subject_last_index_ends_at_the_subject(smol_tokenizer, text, subject):
    tok = smol_tokenizer
    ids = tok(text).input_ids
    i = subject_last_index(tok, text, subject)
    assert tok.decode(ids[: i + 1]).endswith(subject)
    assert not tok.decode(ids[:i]).endswith(subject)


def test_subject_last_index_counts_as_the_reference_does(smol_tokenizer):
    """len(tok(text up to the subject's end)) - 1, also where the subject's end merges with the
    next characters (the reference's repr_tools rule)."""
    tok = smol_tokenizer
    for text, subject in [("Parisian food is good", "Paris"), ("Apple A5 was created by", "Apple A5")]:
        end = text.index(subject) + len(subject)
        assert subject_last_index(tok, text, subject) == len(tok(text[:end]).input_ids) - 1


def test_the_subject_is_found_in_the_prompt_not_in_the_template(smol_tokenizer):
    tok = smol_tokenizer
    text, start = in_template("Apple A5 is a chip. {}", "Apple A5 was created by", "Apple A5")
    assert start == len("Apple A5 is a chip. ")
    i = subject_last_index(tok, text, "Apple A5", start)
    assert tok.decode(tok(text).input_ids[: i + 1]).endswith("chip. Apple A5")
    with pytest.raises(ValueError, match="does not occur"):
        subject_last_index(tok, "no such thing", "Apple")


def test_module_input_at_stops_early_but_reads_what_a_full_pass_feeds_the_module(tiny_deep_model):
    import torch

    from helpers.editing.modules import get_module, hooked, module_input_at
    from helpers.model.batching import encode_padded

    model, tok = tiny_deep_model
    name = "transformer.h.1.mlp.c_proj" if model.config.model_type == "gpt2" else "model.layers.1.mlp.down_proj"
    texts = ["The capital of France is", "Paris"]
    seen = {}
    ids, mask = encode_padded(tok, texts, "cpu")
    with torch.no_grad(), hooked(get_module(model, name), on_input=lambda x: seen.__setitem__("x", x)):
        model(input_ids=ids, attention_mask=mask)
    got = module_input_at(model, tok, name, texts, [2, 0])
    assert torch.equal(got, seen["x"][[0, 1], [2, 0]].float())
    # the top layers never ran: a hook above the module sees nothing
    above = []
    top = get_module(model, name.replace(".1.", f".{len(getattr(model.base_model, 'h', None) or model.base_model.layers) - 1}."))
    with hooked(top, on_input=lambda x: above.append(x)):
        module_input_at(model, tok, name, texts, [2, 0])
    assert above == []
