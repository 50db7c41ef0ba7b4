"""Editing metrics (paper Appendix A; EasyEdit's definitions), teacher-forced token accuracy:

reliability     the edit prompt followed by ``target_new``: share of target tokens that are the
                model's argmax given the tokens before them
generalization  the same on the paraphrase (``rephrase``)
locality        the unrelated prompt followed by its answer: share of answer positions whose argmax
                is the same as before the edit (needs ``reference``, the pre-edit result)
portability     the same accuracy as reliability, on the portability question and answer
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from ..data import EditRequest
from ..model.score import score


def editing_metrics(model, tok, requests: Sequence[EditRequest], reference: pd.DataFrame | None = None,
                    progress: bool = False) -> pd.DataFrame:
    """One row per request: ``case_id, reliability, generalization, locality, portability`` and
    ``loc_argmax`` (the locality argmax tokens, what a later call needs as ``reference``).
    ``reference``: this function's result on the model before the edit (same requests)."""
    requests = list(requests)
    if reference is not None and len(reference) != len(requests):
        raise ValueError(f"reference has {len(reference)} rows for {len(requests)} requests: pass the "
                         "pre-edit editing_metrics() of the same requests")
    prompts, conts, slots = [], [], []
    for i, r in enumerate(requests):
        asks = [("reliability", r.prompt, r.target_new), ("generalization", r.rephrase, r.target_new),
                ("locality", r.locality_prompt, r.locality_answer)]
        if r.portability_prompt and r.portability_answer:
            asks.append(("portability", r.portability_prompt, r.portability_answer))
        for name, prompt, answer in asks:
            prompts.append(prompt)
            conts.append(" " + answer.strip())
            slots.append((i, name))
    scores = score(model, tok, prompts, conts, progress=progress, desc="editing metrics")
    rows = [{"case_id": r.case_id, "reliability": math.nan, "generalization": math.nan, "locality": math.nan,
             "portability": math.nan, "loc_argmax": None} for r in requests]
    for (i, name), s in zip(slots, scores):
        if name == "locality":
            rows[i]["loc_argmax"] = s.argmax
            if reference is not None:
                before = reference.iloc[i]["loc_argmax"]
                rows[i]["locality"] = sum(a == b for a, b in zip(s.argmax, before)) / len(before)
        else:
            rows[i][name] = s.accuracy
    return pd.DataFrame(rows)
