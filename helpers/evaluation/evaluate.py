"""Evaluating a model on the downstream tasks: one row per task."""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..errors import unknown
from ..model.batching import encode_prompts
from ..model.generate import generate
from . import released
from .tasks import TASKS, Reply, check_protocol, get_task, load_task, record_sums

PROMPT_FORMS = ("plain", "chat")
COLUMNS = ["task", "protocol", "metric", "value", "chance", "n", "prompts", "valid_rate", "gold_nll",
           "gold_nll_sd", "label_acc", "seconds", "prompt_tokens", "new_tokens", "scored_tokens", "tokens_per_second"]
# every task's per-prompt records (evaluate_examples); NER adds its entity counts
RECORD_COLUMNS = ["example", "prompt", "kind", "output", "score", "valid", "gold_nll", "gold_tokens", "has_gold",
                  "label_logprobs", "label_pred", "label_hit", "has_labels"]


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
    ``share_prefix``, ``max_batch_size``). Each row is computed from its task's per-prompt
    records (:func:`evaluate_examples` keeps them).
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    for name in names:
        get_task(name)
    rows = [evaluate_examples(model, tok, name, n, seed, protocol, data_dir=data_dir, hint=hint,
                              prompt_form=prompt_form, batch_tokens=batch_tokens, lower_layers=lower_layers,
                              after_edit=after_edit, progress=progress, **engine).row for name in names]
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass
class TaskEvaluation:
    """One task's evaluation: ``records``, one line per prompt (:data:`RECORD_COLUMNS` and the
    task's own counts), and ``row``, the aggregate :func:`evaluate_tasks` reports — computed
    from the records (:func:`row_from_records`)."""

    row: dict
    records: pd.DataFrame


def evaluate_examples(model, tok, task: str, n: int | None = None, seed: int = 0, protocol: str = "paper", *,
                      data_dir: str | os.PathLike | None = None, hint: bool = True, prompt_form: str = "plain",
                      batch_tokens: int = 2048, lower_layers=None, after_edit: bool = False,
                      progress: bool = True, **engine) -> TaskEvaluation:
    """:func:`evaluate_tasks` for one task, keeping what each prompt gave (as
    lm-evaluation-harness's ``--log_samples``): per prompt the example's id (``Example.id``),
    the prompt's index within its example and ``kind`` (NER: the entity type), the ``output``,
    its ``score`` under the headline metric and ``valid``, the gold answer's NLL per token
    (``gold_nll``, NaN where there is no gold answer) and token count, and for classification
    tasks the labels' log-likelihoods, the most likely label and whether it is the gold one."""
    t = get_task(task)
    check_protocol(protocol)
    if prompt_form not in PROMPT_FORMS:
        raise unknown("prompt_form", prompt_form, PROMPT_FORMS)
    examples = load_task(task, data_dir=data_dir, n=n, seed=seed, protocol=protocol)
    prompts = [p for ex in examples for p in t.prompts(ex, protocol, hint=hint)]
    texts = [_wrap(tok, p.text, prompt_form) for p in prompts]
    conts = [([p.gold_text] if p.gold_text else []) + list(t.labels or ()) for p in prompts]
    start = time.perf_counter()
    gens = generate(model, tok, texts, t.max_new_tokens, conts, batch_tokens=batch_tokens,
                    lower_layers=lower_layers, progress=progress, desc=task, **engine)
    seconds = time.perf_counter() - start
    if protocol == "released":
        ids = encode_prompts(tok, texts)
        replies = [Reply(g.text, released.transcript(tok, e, g.tokens, g.end_token)) for e, g in zip(ids, gens)]
    else:
        replies = [Reply(g.text) for g in gens]
    scores = t.score_each(prompts, replies, protocol, after_edit=after_edit)
    records, within = [], {}
    for p, g, sc in zip(prompts, gens, scores):
        index = within[p.example.id] = within.get(p.example.id, -1) + 1
        gold = g.scored[0] if p.gold_text else None
        rec = {"example": p.example.id, "prompt": index, "kind": p.kind or "", "output": g.text,
               "score": sc["score"], "valid": sc["valid"],
               "gold_nll": gold.nll if gold else math.nan, "gold_tokens": len(gold.tokens) if gold else 0,
               "has_gold": gold is not None, "label_logprobs": None, "label_pred": -1,
               "label_hit": math.nan, "has_labels": bool(t.labels)}
        if t.labels:
            lps = [s.logprob for s in g.scored[-len(t.labels):]]
            pred = max(range(len(lps)), key=lps.__getitem__)
            rec.update(label_logprobs=lps, label_pred=pred, label_hit=float(pred == p.target))
        rec.update({k: v for k, v in sc.items() if k not in ("score", "valid")})
        records.append(rec)
    frame = pd.DataFrame(records)
    cost = {"seconds": seconds, "prompt_tokens": sum(g.prompt_tokens for g in gens),
            "new_tokens": sum(len(g.tokens) for g in gens),
            "scored_tokens": sum(len(s.tokens) for g in gens for s in g.scored)}
    row = {"task": task, "protocol": protocol, "metric": t.metric_name(protocol),
           **row_from_records(task, frame, protocol), "chance": math.nan if t.chance is None else t.chance,
           "n": len(examples), **cost, "tokens_per_second": cost["prompt_tokens"] / seconds}
    return TaskEvaluation({c: row[c] for c in COLUMNS}, frame)


def collapsed_examples(tok, task: str, n: int | None = None, seed: int = 0, protocol: str = "paper", *,
                       vocab_size: int, data_dir: str | os.PathLike | None = None, hint: bool = True,
                       after_edit: bool = True) -> TaskEvaluation:
    """The records :func:`evaluate_examples` keeps, for a model that can produce nothing (weights no
    longer finite: a collapsed edit chain, docs/methods.md "Collapse"): every output empty and
    scored as the task scores an empty answer (the task's floor), no label chosen (``label_hit``
    0), and the gold answer's NLL that of the uniform distribution over the ``vocab_size``
    tokens, ln V per token — the model that carries no information (a NaN model has no NLL at all).
    Nothing is run: same prompts, same columns, ``collapsed`` True on every record."""
    t = get_task(task)
    check_protocol(protocol)
    examples = load_task(task, data_dir=data_dir, n=n, seed=seed, protocol=protocol)
    prompts = [p for ex in examples for p in t.prompts(ex, protocol, hint=hint)]
    scores = t.score_each(prompts, [Reply("", "") for _ in prompts], protocol, after_edit=after_edit)
    per_token = math.log(vocab_size)

    def tokens(text: str) -> int:
        return max(len(tok(text, add_special_tokens=False).input_ids), 1)

    records, within = [], {}
    for p, sc in zip(prompts, scores):
        index = within[p.example.id] = within.get(p.example.id, -1) + 1
        gold_tokens = tokens(p.gold_text) if p.gold_text else 0
        rec = {"example": p.example.id, "prompt": index, "kind": p.kind or "", "output": "",
               "score": sc["score"], "valid": sc["valid"],
               "gold_nll": per_token if p.gold_text else math.nan, "gold_tokens": gold_tokens,
               "has_gold": bool(p.gold_text), "label_logprobs": None, "label_pred": -1,
               "label_hit": math.nan, "has_labels": bool(t.labels)}
        if t.labels:
            rec.update(label_logprobs=[-per_token * tokens(label) for label in t.labels], label_hit=0.0)
        rec.update({k: v for k, v in sc.items() if k not in ("score", "valid")}, collapsed=True)
        records.append(rec)
    frame = pd.DataFrame(records)
    row = {"task": task, "protocol": protocol, "metric": t.metric_name(protocol),
           **row_from_records(task, frame, protocol), "chance": math.nan if t.chance is None else t.chance,
           "n": len(examples), "seconds": 0.0, "prompt_tokens": 0, "new_tokens": 0, "scored_tokens": 0,
           "tokens_per_second": math.nan}
    return TaskEvaluation({c: row[c] for c in COLUMNS}, frame)


def row_from_records(task: str, records: pd.DataFrame, protocol: str) -> dict:
    """The aggregate measures of one task's per-prompt ``records``: ``value`` (the task's
    headline metric), ``valid_rate``, ``gold_nll`` (mean over prompts with a gold answer) and
    its ``gold_nll_sd``, ``label_acc``, ``prompts``."""
    sums = record_sums(records)
    nlls = records.loc[records.has_gold, "gold_nll"].tolist()
    return {"value": float(get_task(task).value_from_sums(sums, protocol)),
            "valid_rate": sums["valid"] / sums["prompts"],
            "gold_nll": sums["gold_nll"] / sums["has_gold"] if sums["has_gold"] else math.nan,
            "gold_nll_sd": _sd(nlls),
            "label_acc": sums["label_hit"] / sums["has_labels"] if sums["has_labels"] else math.nan,
            "prompts": int(sums["prompts"])}


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _wrap(tok, text: str, form: str) -> str:
    if form == "plain":
        return text
    if not getattr(tok, "chat_template", None):
        raise ValueError("prompt_form='chat' needs a tokenizer with a chat template; this one has none")
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
