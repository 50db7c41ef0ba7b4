"""The scoring of the authors' released task scripts, replayed exactly, quirks included.

The scripts come in two sets: ``test-task-code/test-<task>.py`` scores the model before an edit,
``test-task-after-code/test-<task>-after.py`` after one; they differ on BoolQ and MuTual. Each
script generates greedily, decodes the *whole* sequence — the prompt, left-padded with end tokens,
the new tokens, and the end token when generation stopped on one — and cuts the answer out of that
text at a marker ("answer:", "Entity:", "DR:", ...). Scoring here works on that same text, the
:func:`transcript`, and does what the scripts' code does with it; docs/protocol.md ("Protocols")
lists every quirk. Nothing here is the paper's metric (:mod:`.answers`).
"""
from __future__ import annotations

from collections.abc import Sequence

from .answers import normalize_answer, numbers_in


def transcript(tok, prompt_ids: Sequence[int], new_tokens: Sequence[int], end_token: int | None) -> str:
    """The text a script scores: ``tokenizer.decode`` of prompt, new tokens and the end token
    generation stopped on (if any), special tokens kept and tokenization spaces cleaned up
    (:func:`clean_up_tokenization`, the default of the transformers release the scripts ran). The scripts left-padded every
    prompt with end tokens to the tokenizer's maximum length; the padding decodes to end-token
    text glued to the prompt's first word, kept here as one end token."""
    ids = list(prompt_ids) + list(new_tokens) + ([end_token] if end_token is not None else [])
    text = clean_up_tokenization(tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    padded = tok.eos_token is not None and len(prompt_ids) < getattr(tok, "model_max_length", 1024)
    return (tok.eos_token if padded else "") + text


# transformers 4.30's clean-up after decoding, applied there to every tokenizer (GPT-2's included;
# later releases skip it for byte-level BPE), so done here by hand
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """Spaces before punctuation and English contractions removed, as transformers 4.30 did."""
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def after_first(text: str, marker: str) -> str:
    """``text.split(marker)[1]``: the text between the first ``marker`` and the next one."""
    parts = text.split(marker)
    return parts[1] if len(parts) > 1 else ""


def after_last(text: str, marker: str) -> str:
    """``text.split(marker)[-1]``: the text after the last ``marker`` (all of it when absent)."""
    return text.split(marker)[-1]


# --------------------------------------------------------------------- classification
def nli(text: str, entails: bool) -> tuple[bool, bool]:
    """(hit, valid): after the last "answer:", "true" or "false" occurs (any case); a hit when
    it is "true" for entailment, "false" otherwise."""
    p = after_last(text, "answer:").lower()
    return ("true" if entails else "false") in p, "true" in p or "false" in p


def boolq(text: str, answer: bool, after_edit: bool) -> tuple[bool, bool]:
    """(hit, valid) after the *first* "answer:". Before an edit the answer must be exactly
    " yes" or " no" (any case); after an edit "yes"/"no" need only occur in it (so " not",
    " now" and " know" read as "no")."""
    p = after_first(text, "answer:").lower()
    if after_edit:
        return ("yes" in p and answer) or ("no" in p and not answer), "yes" in p or "no" in p
    return p == (" yes" if answer else " no"), p in (" yes", " no")


def sentiment(text: str, positive: bool) -> tuple[bool, bool]:
    """(hit, valid): after the last "answer:", "positive" or "negative" occurs (any case)."""
    p = after_last(text, "answer:").lower()
    return ("positive" in p and positive) or ("negative" in p and not positive), "positive" in p or "negative" in p


def dialogue(text: str, letter: str, after_edit: bool) -> tuple[bool, bool]:
    """(hit, valid): after the last "the answer is", some capital A–D occurs; a hit when the
    gold letter does. After an edit, an answer containing "Chi" is invalid whatever else it holds."""
    p = after_last(text, "the answer is")
    if after_edit and "Chi" in p:
        return False, False
    return letter in p, any(c in p for c in "ABCD")


# ------------------------------------------------------------------------- generation
REASONING_MARKER = "Therefore, the answer (arabic numerals) is:"


def reasoning(text: str, gold: str) -> tuple[bool, bool]:
    """(hit, valid): the gold number's text (as written after "#### ") occurs after the
    marker; valid when a number does."""
    p = after_first(text, REASONING_MARKER)
    return gold in p, bool(numbers_in(p))


def summarization(text: str, summary: str) -> tuple[float, bool]:
    """(score, valid): the text after the last "DR:" with its last 13 characters cut (meant for
    ``<|endoftext|>``, cut also when all 25 tokens were generated and no end token is there);
    0 if at most one character is left, else the ``rouge`` package's mean of rouge-1/2/l F."""
    p = after_last(text, "DR:")[:-13]
    if len(p) <= 1:
        return 0.0, False
    return rouge_mean(p, summary), True


def rouge_mean(prediction: str, reference: str) -> float:
    """The ``rouge`` package's F of rouge-1, rouge-2 and rouge-l, averaged (0 where the
    package rejects the prediction, which the script would have crashed on)."""
    from rouge import Rouge

    try:
        s = Rouge().get_scores(prediction, reference)[0]
    except (ValueError, RecursionError):
        return 0.0
    return (s["rouge-1"]["f"] + s["rouge-2"]["f"] + s["rouge-l"]["f"]) / 3


def open_qa(texts: Sequence[str], golds: Sequence[Sequence[str]]) -> list[int]:
    """What the open-QA script adds to its hit count for each example, in order.

    The prediction is the text after the last "Answer:" — the prompt has none, so the whole
    transcript, passage included — with line breaks as spaces, SQuAD-normalised, split at
    spaces. If its first or last word equals a (normalised) gold answer: 1. Otherwise, for each
    start word but the last: a single word equal to a gold answer adds 1 (and the next start is
    tried); else spans growing from it are tried, and the first that matches adds 1 and sets a
    flag that is never reset. Once set, every later example stops after its first start word,
    so from then on only its first and last words can score. Counts above 1 happen."""
    flag = False
    out = []
    for text, gold in zip(texts, golds):
        targets = {normalize_answer(g) for g in gold}
        words = normalize_answer(after_last(text, "Answer:").replace("\n", " ")).split(" ")
        # the script normalises each span again before comparing; spans of normalised words are
        # already normal (normalisation is idempotent), so they are compared as they are
        match = targets.__contains__

        if match(words[0]) or match(words[-1]):
            out.append(1)
            continue
        count = 0
        for i in range(len(words) - 1):
            span = words[i]
            if match(span):
                count += 1
                continue
            for j in range(i + 1, len(words)):
                span = f"{span} {words[j]}"
                if match(span):
                    count += 1
                    flag = True
                    break
            if flag:
                break
        out.append(count)
    return out


# -------------------------------------------------------------------------------- NER
def entities(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """``(type, text)`` of the gold entities as the NER script reads them, one scan per type:
    an entity starts at ``B-X`` and runs up to the next ``O`` (so adjacent entities merge);
    with no ``O`` after it, it stops before the sentence's last word (an entity starting on the
    last word is the empty string, which every output contains)."""
    out = []
    n = len(tags)
    for typ in ("PER", "LOC", "ORG", "MISC"):
        k = 0
        while k < n:
            if tags[k] == f"B-{typ}":
                m = next((i for i in range(k, n) if tags[i] == "O"), n - 1)
                out.append((typ, " ".join(words[k:m])))
                k = m
            k += 1
    return out


def ner(text: str, gold: Sequence[str], typ: str) -> tuple[int, int]:
    """(found, counted) for one prompt: the text between the first and second "Entity:" is
    searched for each gold entity (case-sensitive substring). With no gold entity, an empty
    answer counts 1 of 1 — it never is one, as it holds the end token or new tokens — and a
    non-empty one counts a miss for Miscellaneous only (a typo leaves the other types' tally
    unchanged)."""
    p = after_first(text, "Entity:")
    if not gold:
        if not p:
            return 1, 1
        return 0, (1 if typ == "MISC" else 0)
    return sum(g in p for g in gold), len(gold)
