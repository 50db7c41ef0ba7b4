"""The paper protocol's scoring functions of the downstream tasks, each small enough to check by
hand (the released scripts' scoring is :mod:`.released`).

ROUGE comes from ``rouge-score``; nothing here re-implements it.
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """The normalised prediction equals one of the normalised answers."""
    p = normalize_answer(prediction)
    return any(p == normalize_answer(a) for a in answers)


def span_match(prediction: str, answers: Sequence[str]) -> bool:
    """Some contiguous word span of the normalised prediction equals a normalised answer: the
    released open-QA rule cleaned of its quirks (:func:`helpers.evaluation.released.open_qa`
    searches the prompt too and stops early once a flag is set). No protocol uses it; it is the
    lenient reading of an open answer for whoever wants one."""
    words = normalize_answer(prediction).split()
    targets = {normalize_answer(a) for a in answers}
    targets.discard("")
    return any(
        " ".join(words[i:j]) in targets for i in range(len(words)) for j in range(i + 1, len(words) + 1)
    )


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text`` ("1,250" and "3.5" included)."""
    out = []
    for m in _NUMBER.findall(text):
        try:
            out.append(float(m.replace(",", "")))
        except ValueError:
            continue
    return out


def number_match(prediction: str, gold: str) -> bool:
    """The gold number is one of the numbers written in the prediction."""
    g = float(gold.replace(",", ""))
    return any(abs(x - g) < 1e-9 for x in numbers_in(prediction))


# ----------------------------------------------------------------------------------- NER
def entities(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """``(type, text)`` of each gold entity: an entity starts at ``B-X`` and runs over the
    ``I-X`` tags that follow it. (The data is B-/I- tagged, every entity starting at ``B-``;
    an ``I-X`` that does not continue an ``X`` entity, which it never holds, starts one.)"""
    out, cur_type, cur = [], None, []
    for w, t in zip(words, tags):
        kind, _, typ = t.partition("-")
        if kind == "I" and typ == cur_type:
            cur.append(w)
            continue
        if cur:
            out.append((cur_type, " ".join(cur)))
        cur_type, cur = (typ, [w]) if kind in ("B", "I") else (None, [])
    if cur:
        out.append((cur_type, " ".join(cur)))
    return out


def entity_key(entity: str) -> str:
    """What two entity strings are compared by: single spaces, none before "," or "." (the
    sentence is shown to the model that way), no surrounding spaces, periods or quote marks,
    lower case. Applied to the model's entities and the gold ones alike (so the gold "U.S."
    matches the listed "U.S.", which parsing leaves as "U.S")."""
    text = " ".join(entity.split()).replace(" ,", ",").replace(" .", ".")
    return text.strip(" .\"'").lower()


def parse_entity_list(output: str) -> set[str]:
    """Entities the model listed: the first line, split at commas and semicolons.
    "None"/"N/A" and empty pieces mean no entity."""
    first = output.strip().split("\n")[0]
    pieces = {" ".join(p.split()) for p in re.split(r"[,;]", first)}
    return {p for p in pieces if entity_key(p) and entity_key(p) not in {"none", "n/a", "no entity", "no entities"}}


def f1_counts(predicted: set[str], gold: set[str]) -> tuple[int, int, int]:
    """(true positives, predicted, gold) counts, entities compared by :func:`entity_key`. A gold
    entity whose name holds a comma counts as listed when all its comma-separated parts are
    (a comma-separated list cannot write it otherwise)."""
    p = {entity_key(x) for x in predicted}
    g = {entity_key(x) for x in gold}
    for name in g:
        parts = {entity_key(x) for x in re.split(r"[,;]", name)}
        if len(parts) > 1 and parts <= p:
            p = (p - parts) | {name}
    return len(p & g), len(p), len(g)


def micro_f1(counts: Sequence[tuple[int, int, int]]) -> float:
    tp = sum(c[0] for c in counts)
    npred = sum(c[1] for c in counts)
    ngold = sum(c[2] for c in counts)
    if npred == 0 and ngold == 0:
        return 1.0
    return 2 * tp / (npred + ngold)


# ------------------------------------------------------------------------------- ROUGE
_ROUGE_SCORER = None


def rouge_mean(prediction: str, reference: str) -> float:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (``rouge-score``, with stemming off)."""
    global _ROUGE_SCORER
    if _ROUGE_SCORER is None:
        from rouge_score import rouge_scorer

        _ROUGE_SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    s = _ROUGE_SCORER.score(reference, prediction)
    return (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3
