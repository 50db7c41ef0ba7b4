"""ROME/MEMIT context templates: short texts sampled from the model itself, each followed by
". {}", so an edit is learnt in many contexts, not only at the start of a text.

The templates come in groups: ``["{}"]`` (the bare prompt) and one group per
``(length, count)`` of ``length_params``. ROME averages its key over all templates alike;
MEMIT averages within each group, then over the groups, so the bare prompt weighs as much as
all the sampled texts together (rome's ``get_context_templates`` and memit's
``get_context_templates`` / ``compute_ks``).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from ..model.generate import generate

# The seed words of the reference code: each sampled text starts with one of them.
SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


# How the templates are sampled. "fork": the paper's EasyEdit fork (and memit): each of SEED_WORDS starts
# count // 5 texts. "rome": kmeng01/rome's get_context_templates, which the r-ROME authors' code
# (rebuilding-rome, rome/rome_main.py) keeps: `count` texts per length, each sampled from the text
# "<|endoftext|>", with that marker removed and braces left as sampled.
RECIPES = ("fork", "rome")
ROME_PREFIX = "<|endoftext|>"


def context_template_groups(model, tok, length_params=((5, 10), (10, 10)), seed: int = 0,
                            brace_replacement: str = "", recipe: str = "fork") -> list[list[str]]:
    """``[["{}"], group 1, ...]``: for each ``(length, count)``, ``count // 5`` texts per seed
    word, sampled with top-5 sampling up to ``length`` tokens in all (the seed word and any
    begin-of-text token count, as in the reference's ``generate_fast``), each as a format string
    ending in ``". {}"`` (:func:`sampled_text`). Braces in a sampled text become
    ``brace_replacement`` (ROME removes them, MEMIT puts a space). Unlike the reference, which
    samples on past an end-of-text token and drops it, a sample ends at one (rare among the
    top 5 tokens this early)."""
    if recipe not in RECIPES:
        from .hparams import HparamsError

        raise HparamsError(f"context_template_recipe {recipe!r}: choose one of {RECIPES}")
    groups = [["{}"]]
    starts = SEED_WORDS if recipe == "fork" else (ROME_PREFIX,)
    # the reference pads the prompts to one length and samples until the batch is `length` long
    prompt_len = max(len(tok(w, add_special_tokens=True).input_ids) for w in starts)
    for length, count in length_params:
        if recipe == "fork" and int(count) < len(SEED_WORDS):
            from .hparams import HparamsError

            raise HparamsError(f"context_template_length_params ({length}, {count}): the reference samples count // "
                               f"{len(SEED_WORDS)} texts per seed word, none for a count under {len(SEED_WORDS)}; "
                               f"give a count of at least {len(SEED_WORDS)} (the paper's files: 10 per length, MEMIT 5)")
        per_word = int(count) // len(SEED_WORDS) if recipe == "fork" else int(count)
        prompts = [w for w in starts for _ in range(per_word)]
        gens = generate(model, tok, prompts, max(int(length) - prompt_len, 1), sample_top_k=5,
                        seed=seed + int(length), progress=False)
        group = []
        for word, g in zip(prompts, gens):
            text = sampled_text(tok, word, g.tokens)
            if recipe == "fork":
                text = text.replace("{", brace_replacement).replace("}", brace_replacement)
            else:  # kept as sampled: escaped, so that formatting the template gives them back unchanged
                text = text.replace("{", "{{").replace("}", "}}")
            group.append(text + ". {}")
        groups.append(group)
    return groups


def sampled_text(tok, prompt: str, new_tokens: Sequence[int]) -> str:
    """The reference's text of a sample: prompt and new tokens decoded together (a SentencePiece
    tokenizer drops the space before a sequence's first word, so decoding the new tokens alone
    would glue them to the prompt), special tokens skipped, NFKD-normalised, blank lines made
    spaces (``generate_fast``)."""
    ids = tok(prompt, add_special_tokens=True).input_ids + list(new_tokens)
    text = tok.decode(ids, skip_special_tokens=True)
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("<|endoftext|>", "")


def as_groups(templates: Sequence) -> list[list[str]]:
    """Fixed templates from the hparams as groups: a list of lists is taken as it is; a flat
    list becomes the bare ``"{}"`` (if listed) and the group of all the others, the structure
    the sampled templates have."""
    if all(isinstance(t, str) for t in templates):
        bare = [t for t in templates if t == "{}"]
        rest = [t for t in templates if t != "{}"]
        return [g for g in (bare, rest) if g]
    return [list(g) for g in templates]


def flatten(groups: Sequence[Sequence[str]]) -> list[str]:
    return [t for g in groups for t in g]
