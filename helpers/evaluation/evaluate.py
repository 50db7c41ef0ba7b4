"""Evaluating a model on the downstream tasks: one row per task."""
from __future__ import annotations

import math
import statistics
import os
import time
from collections.abc import Sequence

import pandas as pd

from ..errors import unknown
from ..model.batching import encode_prompts
from ..model.generate import generate
from . import released
from .tasks import TASKS, Reply, check_protocol, get_task, load_task

PROMPT_FORMS = ("plain", "chat")
COLUMNS = ["task", "protocol", "metric", "value", "chance", "n", "prompts", "valid_rate", "gold_nll",
           "gold_nll_sd", "label_acc", "seconds", "prompt_tokens", "new_tokens", "scored_tokens", "tokens_per_second"]


def evaluate_tasks(model, tok, tasks: Sequence[str] | str = TASKS, n: int | None = None, seed: int = 0,
                   protocol: str = "paper", *, data_dir: str | os.PathLike | None = None, hint: bool = True,
                   prompt_form: str = "plain", batch_tokens: int = 2048, lower_layers=None,
                   after_edit: bool = False, progress: bool = True, **engine) -> pd.DataFrame:
    """Zero-shot greedy evaluation on ``tasks`` (docs/protocol.md, "Tasks"), ``n`` seeded examples each (None: the
    full test sets). One row per task:

    ``value``        the task's headline metric (``metric``) under ``protocol``
    ``chance``       that metric's chance level, where one exists
    ``n``/``prompts`` examples (NER: sentences) and prompts (NER: 4 per sentence)
    ``valid_rate``   share of outputs in a valid answer form (a label, a number, non-empty text)
    ``gold_nll``     mean over prompts of the per-token NLL of the gold answer after the prompt
    ``gold_nll_sd``  its standard deviation over prompts (for a standard error: / sqrt(prompts))
    ``label_acc``    classification tasks: share where the gold label string is the most likely
    ``seconds``, ``prompt_tokens``, ``new_tokens`` (generated), ``scored_tokens`` (teacher-forced
    continuations), ``tokens_per_second`` (prompt tokens, generation included): the row's cost

    ``prompt_form="chat"`` wraps each prompt in the tokenizer's chat template (instruct models).
    ``after_edit``: under ``released``, score as the authors' after-edit scripts do (they
    differ from the before-edit ones on BoolQ and MuTual; docs/protocol.md).
    ``lower_layers``: a :class:`helpers.model.lower_layers.LowerLayerCache` shared by the points of a
    sweep whose edits all lie at or above its layer (identical results, less work).
    ``engine``: further options of :func:`helpers.model.generate.generate` (``pad_tolerance``,
    ``share_prefix``, ``max_batch_size``).
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    for name in names:
        get_task(name)
    check_protocol(protocol)
    if prompt_form not in PROMPT_FORMS:
        raise unknown("prompt_form", prompt_form, PROMPT_FORMS)
    rows = []
    for name in names:
        task = get_task(name)
        examples = load_task(name, data_dir=data_dir, n=n, seed=seed, protocol=protocol)
        prompts = [p for ex in examples for p in task.prompts(ex, protocol, hint=hint)]
        texts = [_wrap(tok, p.text, prompt_form) for p in prompts]
        conts = [([p.gold_text] if p.gold_text else []) + list(task.labels or ()) for p in prompts]
        start = time.perf_counter()
        gens = generate(model, tok, texts, task.max_new_tokens, conts, batch_tokens=batch_tokens,
                        lower_layers=lower_layers, progress=progress, desc=name, **engine)
        seconds = time.perf_counter() - start
        if protocol == "released":
            ids = encode_prompts(tok, texts)
            replies = [Reply(g.text, released.transcript(tok, e, g.tokens, g.end_token)) for e, g in zip(ids, gens)]
        else:
            replies = [Reply(g.text) for g in gens]
        value, valid = task.score(prompts, replies, protocol, after_edit=after_edit)
        nlls = [g.scored[0].nll for p, g in zip(prompts, gens) if p.gold_text]
        label_acc = math.nan
        if task.labels:
            label_scores = [[s.logprob for s in g.scored[-len(task.labels):]] for g in gens]
            label_acc = sum(max(range(len(s)), key=s.__getitem__) == p.target
                            for s, p in zip(label_scores, prompts)) / len(prompts)
        tokens = sum(g.prompt_tokens for g in gens)
        rows.append({
            "task": name, "protocol": protocol, "metric": task.metric_name(protocol), "value": value,
            "chance": math.nan if task.chance is None else task.chance, "n": len(examples),
            "prompts": len(prompts), "valid_rate": valid,
            "gold_nll": sum(nlls) / len(nlls) if nlls else math.nan, "gold_nll_sd": _sd(nlls),
            "label_acc": label_acc,
            "seconds": seconds, "prompt_tokens": tokens, "new_tokens": sum(len(g.tokens) for g in gens),
            "scored_tokens": sum(len(s.tokens) for g in gens for s in g.scored), "tokens_per_second": tokens / seconds,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _wrap(tok, text: str, form: str) -> str:
    if form == "plain":
        return text
    if not getattr(tok, "chat_template", None):
        raise ValueError("prompt_form='chat' needs a tokenizer with a chat template; this one has none")
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
