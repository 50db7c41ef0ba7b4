"""Where a subject's last token is, in a prompt and in a prompt set in a context template
(what rome calls ``repr_tools``)."""
from __future__ import annotations


def subject_last_index(tok, text: str, subject: str, start: int | None = None) -> int:
    """Index of the last token of ``subject`` in the tokenisation of the whole ``text``
    (character offsets, so merges across the subject's boundary are handled). ``start``: the
    subject's character offset in ``text`` (default: its first occurrence)."""
    start = text.find(subject) if start is None else start
    if start < 0 or text[start:start + len(subject)] != subject:
        raise ValueError(f"subject {subject!r} does not occur in {text!r}")
    end = start + len(subject)
    enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
    last = None
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if a < end and b > a:
            last = i
    if last is None:
        raise ValueError(f"no token of {text!r} covers the subject {subject!r}")
    return last


def in_template(template: str, prompt: str, subject: str) -> tuple[str, int]:
    """``template.format(prompt)`` and the character offset of the subject in it (its first
    occurrence in the prompt, never a chance occurrence in the template's own text)."""
    return template.format(prompt), template.index("{}") + prompt.index(subject)
