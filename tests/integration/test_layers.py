import pytest

from helpers.editing.layers import in_template, subject_last_index


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


def test_the_subject_is_found_in_the_prompt_not_in_the_template(smol_tokenizer):
    tok = smol_tokenizer
    text, start = in_template("Apple A5 is a chip. {}", "Apple A5 was created by", "Apple A5")
    assert start == len("Apple A5 is a chip. ")
    i = subject_last_index(tok, text, "Apple A5", start)
    assert tok.decode(tok(text).input_ids[: i + 1]).endswith("chip. Apple A5")
    with pytest.raises(ValueError, match="does not occur"):
        subject_last_index(tok, "no such thing", "Apple")
