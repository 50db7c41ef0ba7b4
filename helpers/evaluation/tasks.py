"""The 8 downstream tasks of the paper (docs/protocol.md, "Tasks"): reading, prompting and scoring.

Each task turns its file into :class:`Example` s, each example into one or more
:class:`Prompt` s (NER asks 4 questions per sentence), and model outputs into the task's
headline score. Two protocols:

``paper``
    the paper's Table 2 prompts and metrics (the default);
``released``
    the authors' released scripts: their prompt strings verbatim and their scoring replayed
    exactly on the text they scored (:mod:`.released`), before or after an edit as the scripts
    differ. docs/protocol.md ("Protocols") lists the differences.

A :class:`Prompt` also carries the gold continuation (``gold_text``, for ``gold_nll``) and,
for classification tasks, the label strings (for ``label_acc``): the measures that still see
damage when a model is at chance (docs/protocol.md).
"""
from __future__ import annotations

import math
import os
import random
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import data
from . import answers, released
from ..errors import unknown

PROTOCOLS = ("paper", "released")
# Part of every stored task row's key: rows scored by an earlier revision are recomputed.
# 2: released scoring replays the scripts on their transcripts; NER gold normalised as the
#    model's entities; continuations tokenised together with their prompt.
# 3: every row comes with its per-prompt records (rows of revision 2 have none).
SCORING_REVISION = 3


@dataclass(frozen=True)
class Example:
    """One test item: ``id`` is its index in the protocol's full list of the task's examples
    (stable across subsamples; for NER the protocols' lists differ, see :class:`NER`)."""

    task: str
    id: int
    fields: dict = field(hash=False, compare=False)


@dataclass(frozen=True)
class Prompt:
    """One generation request of a task.

    ``gold_text`` is the gold answer as a continuation of ``text`` (leading space included),
    or None when there is none; ``target`` is what scoring compares the output with;
    ``kind`` names the question asked (NER: the entity type).
    """

    example: Example
    text: str
    gold_text: str | None
    target: Any
    kind: str | None = None


@dataclass(frozen=True)
class Reply:
    """A model's answer to one prompt: ``text``, its new tokens decoded (no end token), what
    the paper protocol scores; ``transcript``, the whole sequence as the released scripts
    decoded it (:func:`helpers.evaluation.released.transcript`), what the released protocol
    scores (empty when not made)."""

    text: str
    transcript: str = ""


class Task:
    """A downstream task: where its examples come from (:meth:`rows` and :meth:`example`, or
    :meth:`load` as a whole), the prompts it asks (:meth:`prompts`) and how a reply scores
    (:meth:`paper_each`, one record per prompt). ``revision``: of its scoring code — rows stored
    under another revision are recomputed (raise it when the prompts or the scoring change).
    A new task is a subclass registered with :func:`register_task` (docs/extending.md)."""

    name: ClassVar[str]
    file: ClassVar[str] = ""
    revision: ClassVar[int] = SCORING_REVISION
    metric: ClassVar[str]
    max_new_tokens: ClassVar[int]
    chance: ClassVar[float | None] = None
    labels: ClassVar[tuple[str, ...] | None] = None  # continuations scored for label_acc
    released_metric: ClassVar[str | None] = None  # the metric's name when it differs under "released"

    def metric_name(self, protocol: str) -> str:
        return self.released_metric if protocol == "released" and self.released_metric else self.metric

    def rows(self, data_dir, protocol) -> list[data.Row]:
        raise NotImplementedError

    def example(self, row: data.Row, index: int) -> Example:
        raise NotImplementedError

    def prompts(self, ex: Example, protocol: str, hint: bool = True) -> list[Prompt]:
        raise NotImplementedError

    def score(self, prompts: list[Prompt], replies: list[Reply], protocol: str,
              after_edit: bool = False) -> tuple[float, float]:
        """(headline score, share of outputs in a valid answer form), computed from the
        per-prompt records of :meth:`score_each`. ``after_edit`` picks, under ``released``, the
        scripts run after an edit (they differ on BoolQ and MuTual)."""
        sums = record_sums(self.score_each(prompts, replies, protocol, after_edit))
        return float(self.value_from_sums(sums, protocol)), float(sums["valid"] / sums["prompts"])

    def score_each(self, prompts: list[Prompt], replies: list[Reply], protocol: str,
                   after_edit: bool = False) -> list[dict]:
        """One record per prompt: ``score`` (its part of the headline metric: a hit, a ROUGE,
        an F1), ``valid`` (an answer in a valid form), and what :meth:`value_from_sums` needs
        beyond them (NER: entity counts). The headline metric is :meth:`value_from_sums` of
        the records' column sums, so it can be recomputed on any resample of the examples."""
        if len(replies) != len(prompts):
            raise ValueError(f"{len(replies)} replies for {len(prompts)} prompts")
        if protocol == "released" and any(not r.transcript for r in replies):
            raise ValueError("the released protocol scores the scripts' transcripts: every Reply needs one "
                             "(helpers.evaluation.released.transcript)")
        if protocol == "paper":
            return self.paper_each(prompts, [r.text for r in replies])
        return self.released_each(prompts, replies, after_edit)

    def value_from_sums(self, sums, protocol: str):
        """The headline metric from the column sums of a set of records (numbers, or arrays
        of resampled sums): the mean of ``score`` unless the task says otherwise."""
        return sums["score"] / sums["prompts"]

    def paper_each(self, prompts: list[Prompt], outputs: list[str]) -> list[dict]:
        raise NotImplementedError

    def released_each(self, prompts: list[Prompt], replies: list[Reply], after_edit: bool) -> list[dict]:
        """Per prompt, the (hit, valid) of :meth:`released_hit`."""
        return [_record(*self.released_hit(p, r.transcript, after_edit)) for p, r in zip(prompts, replies)]

    def released_hit(self, prompt: Prompt, transcript: str, after_edit: bool) -> tuple[float, bool]:
        raise NotImplementedError

    def load(self, data_dir=None, protocol="paper") -> list[Example]:
        return [self.example(r, i) for i, r in enumerate(self.rows(data_dir, protocol))]


# --------------------------------------------------------------------- classification
class Classification(Task):
    """One new token; the label is parsed from it. ``words`` are the label words in the
    order of ``labels``; the paper protocol reads the first word of the output, the released
    one does what the task's script does (:mod:`.released`)."""

    words: ClassVar[tuple[str, ...]]
    max_new_tokens = 1

    def parse_paper(self, output: str) -> int | None:
        s = output.strip().lstrip(string.punctuation + " ").lower()
        first = "".join(ch for ch in s.split(" ")[0] if ch.isalnum()) if s else ""
        return self.words.index(first) if first in self.words else None

    def paper_each(self, prompts, outputs):
        labels = [self.parse_paper(out) for out in outputs]
        return [_record(lab == p.target, lab is not None) for p, lab in zip(prompts, labels)]

    def prompt(self, ex, text, label_index):
        return Prompt(ex, text, self.labels[label_index], label_index)


class NLI(Classification):
    name, file, metric = "nli", "test-NLI.tsv", "accuracy"
    chance, labels, words = 0.5, (" true", " false"), ("true", "false")

    def rows(self, data_dir, protocol):
        # the scripts read the file with csv's default quoting, which strips the quote marks
        # around 69 first sentences; the file's own text keeps them
        return data.read_tsv(data.task_path(self.file, data_dir), ["sentence1", "sentence2", "label"],
                             csv_quoting=protocol == "released")

    def example(self, row, index):
        label = row.field("label")
        if label not in ("entailment", "not_entailment"):
            raise row.error(f"label should be 'entailment' or 'not_entailment', got {label!r}")
        return Example(self.name, index, {"s1": row.field("sentence1"), "s2": row.field("sentence2"), "entails": label == "entailment"})

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        return [self.prompt(ex, f"{f['s1']} entails the {f['s2']}. True or False? answer:", 0 if f["entails"] else 1)]

    def released_hit(self, prompt, transcript, after_edit):
        return released.nli(transcript, prompt.target == 0)


class ClosedQA(Classification):
    name, file, metric = "closed_qa", "test-ClosedDomainQA.jsonl", "exact_match"
    chance, labels, words = 0.5, (" yes", " no"), ("yes", "no")

    def rows(self, data_dir, protocol):
        return data.read_json_lines(data.task_path(self.file, data_dir))

    def example(self, row, index):
        return Example(self.name, index, {"passage": row.field("passage"), "question": row.field("question"), "answer": row.field("answer", bool)})

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        text = (
            "Please answer the given question based on the passage. The answer should be exact "
            f"'yes' or 'no'. passage: {f['passage']} question: {f['question']}. answer:"
        )
        return [self.prompt(ex, text, 0 if f["answer"] else 1)]

    def released_hit(self, prompt, transcript, after_edit):
        return released.boolq(transcript, prompt.target == 0, after_edit)


class Sentiment(Classification):
    name, file, metric = "sentiment", "test-SentimentAnalysis.tsv", "accuracy"
    chance, labels, words = 0.5, (" positive", " negative"), ("positive", "negative")

    def rows(self, data_dir, protocol):
        return data.read_tsv(data.task_path(self.file, data_dir), ["sentence", "label"])

    def example(self, row, index):
        label = row.field("label")
        if label not in ("0", "1"):
            raise row.error(f"label should be 0 or 1, got {label!r}")
        return Example(self.name, index, {"text": row.field("sentence"), "positive": label == "1"})

    def prompts(self, ex, protocol, hint=True):
        if protocol == "paper":
            head = ("For each snippet of text, label the sentiment of the text as positive or negative. "
                    "The answer should be exact 'positive' or 'negative'.")
        else:
            head = ("For each snippet of text,label the sentiment of the text as positive or negative."
                    "The answer should be exact 'positive' or 'negative'.")
        return [self.prompt(ex, f"{head} text: {ex.fields['text']} answer:", 0 if ex.fields["positive"] else 1)]

    def released_hit(self, prompt, transcript, after_edit):
        return released.sentiment(transcript, prompt.target == 0)


class Dialogue(Classification):
    name, file, metric = "dialogue", "test-dialogue", "recall4@1"
    chance, labels, words = 0.25, (" A", " B", " C", " D"), ("a", "b", "c", "d")

    def parse_paper(self, output):
        s = output.strip().lstrip("(").strip()
        if s[:1] in ("A", "B", "C", "D") and not s[1:2].isalpha():
            return "ABCD".index(s[0])
        return None

    def rows(self, data_dir, protocol):
        return data.read_json_files(data.task_path(self.file, data_dir))

    def example(self, row, index):
        options = row.field("options", list)
        if len(options) != 4 or not all(isinstance(o, str) for o in options):
            raise row.error(f"'options' should hold 4 strings, got {len(options)}")
        answer = row.field("answers")
        if answer not in ("A", "B", "C", "D"):
            raise row.error(f"'answers' should be one of A, B, C, D, got {answer!r}")
        return Example(self.name, index, {"article": row.field("article"), "options": options, "answer": "ABCD".index(answer)})

    def prompts(self, ex, protocol, hint=True):
        f, o = ex.fields, ex.fields["options"]
        if protocol == "paper":
            text = (f"Q: {f['article']} Which choice is correct? Answer Choices: (A){o[0]} (B){o[1]} "
                    f"(C){o[2]} (D){o[3]} A: Among A through D, the answer is")
        else:
            text = (f"Q: {f['article']} Which choice is correct? Answer Chioces: (A){o[0]}(B){o[1]}"
                    f"(C){o[2]}(D){o[3]} A: Among A through D, the answer is")
        return [self.prompt(ex, text, f["answer"])]

    def released_hit(self, prompt, transcript, after_edit):
        return released.dialogue(transcript, "ABCD"[prompt.target], after_edit)


# ------------------------------------------------------------------------- generation
class Reasoning(Task):
    """GSM8K with the gold rationale as a hint (the released code's setting; ``hint=False``
    asks without it). Paper: the gold number is one of the numbers in the output (any of them:
    "12 + 6 = 18" counts for 18); released: the gold number's text occurs in the answer."""

    name, file, metric, max_new_tokens, chance = "reasoning", "test-reasoning.jsonl", "solve_rate", 5, 0.0

    def rows(self, data_dir, protocol):
        return data.read_json_lines(data.task_path(self.file, data_dir))

    def example(self, row, index):
        answer = row.field("answer")
        if "#### " not in answer:
            raise row.error("field 'answer' lacks the '#### <number>' line")
        rationale, gold = answer.split("#### ", 1)
        gold = gold.strip()
        try:
            float(gold.replace(",", ""))
        except ValueError:
            raise row.error(f"the answer after '####' is not a number: {gold!r}") from None
        return Example(self.name, index, {"question": row.field("question"), "rationale": rationale, "gold": gold})

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        if protocol == "paper":
            middle = f" {f['rationale'].strip()}" if hint else ""
            text = f"Q: {f['question']} A: Let's think step by step.{middle} Therefore, the answer (arabic numerals) is:"
        else:
            middle = f" {f['rationale']}" if hint else ""
            text = f"Q: {f['question']} A:Let's think step by step.{middle} Therefore, the answer (arabic numerals) is:"
        return [Prompt(ex, text, f" {f['gold']}", f["gold"])]

    def paper_each(self, prompts, outputs):
        return [_record(answers.number_match(o, p.target), bool(answers.numbers_in(o))) for p, o in zip(prompts, outputs)]

    def released_hit(self, prompt, transcript, after_edit):
        return released.reasoning(transcript, prompt.target)


class OpenQA(Task):
    """Natural Questions with a passage. Paper: exact match of the answer line (the first
    non-empty line of the output, an 'Answer:' prefix removed); released: the script's word and
    span matches over the whole transcript, prompt included (:func:`.released.open_qa`)."""

    name, file, metric, max_new_tokens, chance = "open_qa", "test-OpenDomainQA.jsonl", "exact_match", 20, 0.0
    released_metric = "script_match"

    def rows(self, data_dir, protocol):
        return data.read_json_lines(data.task_path(self.file, data_dir))

    def example(self, row, index):
        answers, passages = row.field("answer", list), row.field("output", list)
        if not all(isinstance(a, str) for a in answers) or not isinstance(passages[0], str):
            raise row.error("'answer' and 'output' should be lists of strings")
        return Example(self.name, index, {"question": row.field("question"), "passage": passages[0], "answers": answers})

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        text = f"Refer to the passage below and answer the following question. Passage: {f['passage']} Question: {f['question']}"
        return [Prompt(ex, text, f" {f['answers'][0]}", f["answers"])]

    @staticmethod
    def answer_line(output: str) -> str:
        line = next((l for l in output.split("\n") if l.strip()), "").strip()
        return line[len("answer:"):].strip() if line.lower().startswith("answer:") else line

    def paper_each(self, prompts, outputs):
        return [_record(answers.exact_match(self.answer_line(o), p.target), bool(o.strip()))
                for p, o in zip(prompts, outputs)]

    def released_each(self, prompts, replies, after_edit):
        """The script's count per example, taken over the examples in order (its flag carries
        from one example to the next, so an example's count can depend on the one before);
        the metric is their mean. Valid: some new text."""
        counts = released.open_qa([r.transcript for r in replies], [p.target for p in prompts])
        return [_record(c, bool(r.text.strip())) for c, r in zip(counts, replies)]


class Summarization(Task):
    name, file, metric, max_new_tokens = "summarization", "test-summarization.json", "rouge", 25

    def rows(self, data_dir, protocol):
        return data.read_json_array(data.task_path(self.file, data_dir))

    def example(self, row, index):
        return Example(self.name, index, {"dialogue": row.field("dialogue"), "summary": row.field("summary")})

    def prompts(self, ex, protocol, hint=True):
        return [Prompt(ex, f"{ex.fields['dialogue']}\nTL;DR:", f" {ex.fields['summary'].strip()}", ex.fields["summary"])]

    def paper_each(self, prompts, outputs):
        return [_record(answers.rouge_mean(o.strip(), p.target), len(o.strip()) > 1) for p, o in zip(prompts, outputs)]

    def released_hit(self, prompt, transcript, after_edit):
        return released.summarization(transcript, prompt.target)


class NER(Task):
    """CoNLL-2003, four prompts per sentence. Paper: entity-level micro F1 of the listed
    entities against the gold ones (:func:`.answers.entities`, compared by
    :func:`.answers.entity_key`); released: per type, the share of gold entities (the script's
    own reading, :func:`.released.entities`) found in the answer, averaged over the four types.
    The paper protocol skips ``-DOCSTART-`` blocks (3250 sentences); the released one keeps
    them (3466), as its script does. ``gold_text`` (for ``gold_nll``) is the paper's reading
    under both protocols."""

    name, file, metric, max_new_tokens = "ner", "test-NER.txt", "entity_f1", 10
    released_metric = "entity_recall"
    TYPES = (("PER", "Person"), ("LOC", "Location"), ("ORG", "Organization"), ("MISC", "Miscellaneous"))

    def rows(self, data_dir, protocol):
        rows = data.read_conll(data.task_path(self.file, data_dir))
        return rows if protocol == "released" else [r for r in rows if not r.value.docstart]

    def example(self, row, index):
        s = row.value
        return Example(self.name, index, {"words": s.words, "tags": s.tags, "text": self.sentence_text(s.words)})

    @staticmethod
    def sentence_text(words) -> str:
        """Words joined by spaces, except before ',' and '.' (the released code's joining)."""
        out = ""
        for w in words:
            out += w if w in (",", ".") else " " + w
        return out[1:]

    def prompts(self, ex, protocol, hint=True):
        f = ex.fields
        paper = answers.entities(f["words"], f["tags"])
        scored = paper if protocol == "paper" else released.entities(f["words"], f["tags"])
        out = []
        for typ, word in self.TYPES:
            gold = [e for t, e in paper if t == typ]
            text = f"Please identify {word} Entity from the given text. Text: {f['text']} Entity:"
            gold_text = " " + ", ".join(dict.fromkeys(gold)) if gold else None
            out.append(Prompt(ex, text, gold_text, [e for t, e in scored if t == typ], kind=typ))
        return out

    def paper_each(self, prompts, outputs):
        """Per prompt its entity counts (``tp``, ``predicted``, ``gold``) and, as ``score``, its
        own F1 (for reading; the metric is the micro F1 over all prompts' counts)."""
        out = []
        for p, o in zip(prompts, outputs):
            tp, npred, ngold = answers.f1_counts(answers.parse_entity_list(o), set(p.target))
            out.append(_record(answers.micro_f1([(tp, npred, ngold)]), bool(o.strip()),
                               tp=tp, predicted=npred, gold=ngold))
        return out

    def released_each(self, prompts, replies, after_edit):
        """Per prompt the script's tally for its type (``found_<TYPE>``, ``counted_<TYPE>``; the
        other types' columns 0) and, as ``score``, its own share (NaN when nothing counted)."""
        out = []
        for p, r in zip(prompts, replies):
            found, counted = released.ner(r.transcript, p.target, p.kind)
            tally = {f"{k}_{typ}": 0 for typ, _ in self.TYPES for k in ("found", "counted")}
            tally[f"found_{p.kind}"], tally[f"counted_{p.kind}"] = found, counted
            out.append(_record(found / counted if counted else math.nan, bool(r.text.strip()), **tally))
        return out

    def value_from_sums(self, sums, protocol):
        """Paper: the micro F1 of the summed counts (1 when nothing was predicted or expected).
        Released: the script's tally per type, then the mean of the types' shares (a type with
        nothing counted is left out, where the script would divide by zero)."""
        import numpy as np

        if protocol == "paper":
            tp, npred, ngold = (np.asarray(sums[k], dtype=float) for k in ("tp", "predicted", "gold"))
            both = npred + ngold
            return np.where(both > 0, 2 * tp / np.where(both > 0, both, 1), 1.0)[()]
        found = np.stack([np.asarray(sums[f"found_{t}"], dtype=float) for t, _ in self.TYPES])
        counted = np.stack([np.asarray(sums[f"counted_{t}"], dtype=float) for t, _ in self.TYPES])
        share = np.where(counted > 0, found / np.where(counted > 0, counted, 1), 0.0)
        kinds = (counted > 0).sum(0)
        return np.where(kinds > 0, share.sum(0) / np.where(kinds > 0, kinds, 1), math.nan)[()]


def _record(score, valid, **extra) -> dict:
    return {"score": float(score), "valid": bool(valid), **extra}


def record_sums(records) -> dict:
    """Column sums of per-prompt records (a list of dicts or a DataFrame), booleans counted,
    with ``prompts`` the number of records: what :meth:`Task.value_from_sums` reads."""
    import pandas as pd

    frame = pd.DataFrame(list(records)) if not isinstance(records, pd.DataFrame) else records
    numeric = frame.select_dtypes(include=["number", "bool"])
    sums = {c: float(numeric[c].astype(float).sum(skipna=True)) for c in numeric.columns}
    sums["prompts"] = float(len(frame))
    return sums


# the paper's 8 tasks, in its order: the default of every run. A task added with register_task is
# named like these; task_names() lists them all.
PAPER_TASKS = (Reasoning(), NLI(), OpenQA(), ClosedQA(), Dialogue(), Summarization(), NER(), Sentiment())
TASKS: tuple[str, ...] = tuple(t.name for t in PAPER_TASKS)
_TASKS: dict[str, Task] = {t.name: t for t in PAPER_TASKS}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` (an instance of a :class:`Task` subclass) a task every run can name. A second
    task of the same name is refused unless ``replace=True``."""
    from ..errors import RegistryError

    if not isinstance(task, Task) or not getattr(task, "name", ""):
        raise RegistryError(f"register_task takes an instance of a Task subclass with a name, got {task!r}")
    if task.name in _TASKS and not replace:
        raise RegistryError(f"a task named {task.name!r} is already registered; pass replace=True to replace it")
    _TASKS[task.name] = task
    return task


def task_names() -> tuple[str, ...]:
    """Every registered task (the paper's 8 first)."""
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise unknown("task", name, task_names())
    return _TASKS[name]


def scoring_key(protocol: str, task: str) -> dict:
    """What identifies a task row's scoring in a stored row's settings: the protocol and the
    revision of the task's scoring code (rows of another revision are recomputed)."""
    return {"protocol": check_protocol(protocol), "scoring_revision": get_task(task).revision}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise unknown("protocol", protocol, PROTOCOLS)
    return protocol


def load_task(name: str, data_dir: str | os.PathLike | None = None, n: int | None = None,
              seed: int = 0, protocol: str = "paper") -> list[Example]:
    """The test set of task ``name`` (docs/protocol.md counts; NER counts sentences), or a seeded
    subsample of ``n`` examples (kept in file order; ``Example.id`` records which)."""
    task = get_task(name)
    examples = task.load(data_dir, check_protocol(protocol))
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be a positive number of examples or None for all, got {n}")
        if n < len(examples):
            keep = sorted(random.Random(seed).sample(range(len(examples)), n))
            examples = [examples[i] for i in keep]
    return examples
