"""Scoring functions of the downstream tasks, each small enough to check by hand.

ROUGE comes from ``rouge-score`` (paper protocol) or the ``rouge`` package the authors used
(released protocol); nothing here re-implements it.
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
    """Some contiguous word span of the normalised prediction equals a normalised answer
    (the released code's open-domain QA hit)."""
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
def entities_iob1(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """``(type, text)`` of each entity under the IOB1 scheme of CoNLL-2003: an entity starts
    at ``B-X``, or at ``I-X`` not continuing an ``X`` entity, and runs over ``I-X``."""
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


def entities_released(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """The released code's reading, one scan per type: an entity starts only at ``B-X`` and
    runs up to the next ``O`` (so ``I-``-initial entities are missed and adjacent entities
    merge); with no ``O`` after it, it stops before the sentence's last word."""
    out = []
    n = len(tags)
    for typ in sorted({t[2:] for t in tags if t.startswith("B-")}):
        k = 0
        while k < n:
            if tags[k] == f"B-{typ}":
                m = next((i for i in range(k, n) if tags[i] == "O"), n - 1)
                out.append((typ, " ".join(words[k:m])))
                k = m
            k += 1
    return out


def released_entity_hits(gold: Sequence[str], output: str, typ: str) -> tuple[int, int]:
    """(found, counted) for one prompt as the released code tallies them: each gold entity
    found as a (case-sensitive) substring of the output is a hit; with no gold entity, an
    empty output is one hit of one, and a non-empty one counts one miss for MISC only."""
    if not gold:
        if not output:
            return 1, 1
        return 0, (1 if typ == "MISC" else 0)
    return sum(g in output for g in gold), len(gold)


def parse_entity_list(output: str) -> set[str]:
    """Entities the model listed: the first line, split at commas and semicolons.
    "None"/"N/A" and empty pieces mean no entity."""
    first = output.strip().split("\n")[0]
    pieces = {" ".join(p.split()).strip(" .\"'") for p in re.split(r"[,;]", first)}
    return {p for p in pieces if p and p.lower() not in {"none", "n/a", "no entity", "no entities"}}


def f1_counts(predicted: set[str], gold: set[str]) -> tuple[int, int, int]:
    """(true positives, predicted, gold) counts, compared case-insensitively."""
    p = {x.lower() for x in predicted}
    g = {x.lower() for x in gold}
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


def rouge_mean_released(prediction: str, reference: str) -> float:
    """The released code's ROUGE: the ``rouge`` package's F of rouge-1/2/l, averaged; an
    output of at most one character scores 0."""
    if len(prediction.strip()) <= 1:
        return 0.0
    from rouge import Rouge

    try:
        s = Rouge().get_scores(prediction, reference)[0]
    except (ValueError, RecursionError):  # the package raises on outputs with no words
        return 0.0
    return (s["rouge-1"]["f"] + s["rouge-2"]["f"] + s["rouge-l"]["f"]) / 3
