"""Where a subject's last token is, in a prompt and in a prompt set in a context template
(what rome calls ``repr_tools``)."""
from __future__ import annotations


def subject_last_index(tok, text: str, subject: str, start: int | None = None) -> int:
    """Index of the subject's last token in ``text``, counted as the reference counts it
    (``repr_tools.get_words_idxs_in_templates``): the number of tokens of the text up to the
    subject's end, minus one. Where the tokenizer merges the subject's end with what follows
    (a subject that is a prefix of a longer word), that index is the reference's, not
    necessarily a token that covers the subject. ``start``: the subject's character offset in
    ``text`` (default: its first occurrence)."""
    start = text.find(subject) if start is None else start
    if start < 0 or text[start:start + len(subject)] != subject:
        raise ValueError(f"subject {subject!r} does not occur in {text!r}")
    n = len(tok(text[:start + len(subject)], add_special_tokens=True).input_ids)
    if n == 0:
        raise ValueError(f"no token of {text!r} covers the subject {subject!r}")
    return n - 1


def in_template(template: str, prompt: str, subject: str) -> tuple[str, int]:
    """``template.format(prompt)`` and the character offset of the subject in it (its first
    occurrence in the prompt, never a chance occurrence in the template's own text)."""
    return template.format(prompt), template.index("{}") + prompt.index(subject)
