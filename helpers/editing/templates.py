"""ROME/MEMIT context templates: short texts sampled from the model itself, each followed by
". {}", so an edit is learnt in many contexts, not only at the start of a text."""
from __future__ import annotations

from ..model.generate import generate

# EasyEdit's seed words: each sampled text starts with one of them.
SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def context_templates(model, tok, length_params=((5, 10), (10, 10)), seed: int = 0) -> list[str]:
    """``["{}"]`` plus, for each ``(length, count)``, ``count`` texts of ``length`` tokens in all
    (seed word included) sampled with top-5 sampling, as format strings ending in ``". {}"``."""
    out = ["{}"]
    for length, count in length_params:
        per_word = max(int(count) // len(SEED_WORDS), 1)
        prompts = [w for w in SEED_WORDS for _ in range(per_word)]
        gens = generate(model, tok, prompts, max(int(length) - 1, 1), sample_top_k=5,
                        seed=seed + int(length), progress=False)
        for word, g in zip(prompts, gens):
            text = (word + g.text).replace("{", " ").replace("}", " ")
            out.append(text + ". {}")
    return out
