"""Reading the paper's data in the released layout: ZsRE edits and the 8 task files.

Every reader reports a malformed row with its file and line (``DataFormatError``).
Readers return plain records (``Row``: the parsed object and the line it starts on); what
each task makes of them lives in :mod:`helpers.evaluation.tasks`.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataFormatError, DataNotFoundError
from .paths import data_dir as resolve_data_dir


@dataclass(frozen=True)
class Row:
    """One record of a data file: ``value`` as parsed, ``path`` and 1-based ``line``."""

    value: Any
    path: Path
    line: int

    def error(self, problem: str) -> DataFormatError:
        return DataFormatError(self.path, self.line, problem)

    def field(self, key: str, kind: type | tuple[type, ...] = str, nonempty: bool = True):
        """``value[key]``, checked to exist, to be of ``kind`` and (for str/list) non-empty."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object with field {key!r}, got {type(self.value).__name__}")
        if key not in self.value:
            raise self.error(f"missing field {key!r} (fields present: {sorted(self.value)})")
        v = self.value[key]
        if not isinstance(v, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(f"field {key!r} should be {names}, got {type(v).__name__}: {v!r:.60}")
        if nonempty and isinstance(v, (str, list)) and not (v.strip() if isinstance(v, str) else v):
            raise self.error(f"field {key!r} is empty")
        return v


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing from the data folder {path.parent}")
    return path


def read_json_array(path: Path) -> list[Row]:
    """The elements of a JSON array file, each with the line its element starts on."""
    text = _existing(path).read_text(encoding="utf8")
    decoder = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")
    try:
        pos = ws.match(text, 0).end()
        if text[pos : pos + 1] != "[":
            raise DataFormatError(path, text.count("\n", 0, pos) + 1, "expected a JSON array")
        pos = ws.match(text, pos + 1).end()
        rows = []
        while text[pos : pos + 1] != "]":
            if pos >= len(text):
                raise DataFormatError(path, text.count("\n") + 1, "the JSON array is not closed")
            value, end = decoder.raw_decode(text, pos)
            rows.append(Row(value, path, text.count("\n", 0, pos) + 1))
            pos = ws.match(text, end).end()
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    return rows


def read_json_lines(path: Path) -> list[Row]:
    rows = []
    with open(_existing(path), encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(Row(json.loads(line), path, lineno))
            except json.JSONDecodeError as e:
                raise DataFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    return rows


def read_tsv(path: Path, columns: list[str], csv_quoting: bool = False) -> list[Row]:
    """Rows of a tab-separated file with a header line holding at least ``columns``. Cells are
    taken as written (GLUE's files are not quoted); ``csv_quoting`` reads them with the csv
    module's default quoting instead, as the released scripts did (a cell that starts with a
    quote mark loses its quotes)."""
    with open(_existing(path), encoding="utf8", newline="") as f:
        if csv_quoting:
            reader = csv.reader(f, delimiter="\t")
            records = [(reader.line_num, cells) for cells in reader]
        else:
            records = [(n, next(csv.reader([line.rstrip("\r")], delimiter="\t", quoting=csv.QUOTE_NONE), []))
                       for n, line in enumerate(f.read().split("\n"), 1)]
    records = [(n, cells) for n, cells in records if any(c.strip() for c in cells)]
    if not records:
        raise DataFormatError(path, 1, "the file is empty: expected a header line")
    header = records[0][1]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataFormatError(path, 1, f"header lacks column(s) {missing} (header: {header})")
    rows = []
    for lineno, cells in records[1:]:
        if len(cells) != len(header):
            raise DataFormatError(path, lineno, f"expected {len(header)} tab-separated cells, got {len(cells)}")
        rows.append(Row(dict(zip(header, cells)), path, lineno))
    return rows


@dataclass(frozen=True)
class ConllSentence:
    """One blank-line block of a CoNLL-2003 file: words and their NER tags (B-/I-/O)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    docstart: bool


def read_conll(path: Path) -> list[Row]:
    """Blank-line blocks of a CoNLL file as ``ConllSentence`` rows (``-DOCSTART-`` included)."""
    rows, words, tags, start = [], [], [], None
    with open(_existing(path), encoding="utf8") as f:
        for lineno, line in enumerate(list(f) + ["\n"], 1):
            parts = line.split()
            if not parts:
                if words:
                    sent = ConllSentence(tuple(words), tuple(tags), words[0] == "-DOCSTART-")
                    rows.append(Row(sent, path, start))
                words, tags, start = [], [], None
                continue
            if len(parts) < 2:
                raise DataFormatError(path, lineno, f"expected 'word ... tag', got {line.strip()!r}")
            tag = parts[-1]
            if not (tag == "O" or re.fullmatch(r"[BI]-(PER|LOC|ORG|MISC)", tag)):
                raise DataFormatError(path, lineno, f"bad NER tag {tag!r} (expected O, or B-/I- followed by PER, LOC, ORG or MISC)")
            words.append(parts[0])
            tags.append(tag)
            start = start or lineno
    return rows


def read_json_files(folder: Path, pattern: str = "dev_*.txt") -> list[Row]:
    """One JSON object per file (MuTual), in the numeric order of the file names."""
    if not _existing(folder).is_dir():
        raise DataNotFoundError(f"{folder} should be a folder of {pattern} files")
    files = sorted(folder.glob(pattern), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    rows = []
    for p in files:
        try:
            rows.append(Row(json.loads(p.read_text(encoding="utf8")), p, 1))
        except json.JSONDecodeError as e:
            raise DataFormatError(p, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not rows:
        raise DataNotFoundError(f"{folder} holds no {pattern} files")
    return rows


# ---------------------------------------------------------------------------------- ZsRE
@dataclass(frozen=True)
class EditRequest:
    """One ZsRE edit: make ``prompt`` (which contains ``subject``) answer ``target_new``.

    ``ground_truth`` is the true answer, ``rephrase`` a paraphrase of the prompt (for
    generalization), ``locality_*`` an unrelated question and the model's expected answer,
    ``portability_*`` a question whose answer follows from the edit. ``prediction``: the
    answer ZsRE records as a model's prediction (its ``pred`` field), which the paper's scripts
    pass to the editors as the fact's ``ground_truth`` (KN attributes it).
    """

    prompt: str
    subject: str
    target_new: str
    ground_truth: str
    rephrase: str
    locality_prompt: str
    locality_answer: str
    portability_prompt: str | None = None
    portability_answer: str | None = None
    case_id: int = field(default=-1, compare=False)
    prediction: str | None = None


def load_zsre(data_dir: str | os.PathLike | None = None) -> list[EditRequest]:
    """All 1037 ZsRE records of ``edited-data/zsre.json`` as :class:`EditRequest` s."""
    path = resolve_data_dir(data_dir) / "edited-data" / "zsre.json"
    out = []
    for i, row in enumerate(read_json_array(path)):
        answers = row.field("answers", list)
        if not isinstance(answers[0], str) or not answers[0].strip():
            raise row.error("field 'answers' should start with a non-empty string")
        subject, prompt = row.field("subject"), row.field("src")
        if subject not in prompt:
            raise row.error(f"subject {subject!r} does not occur in the prompt {prompt!r}")
        port = row.value.get("portability") or {}
        out.append(
            EditRequest(
                prompt=prompt,
                subject=subject,
                target_new=row.field("alt"),
                ground_truth=answers[0],
                rephrase=row.field("rephrase"),
                locality_prompt=row.field("loc"),
                locality_answer=row.field("loc_ans"),
                portability_prompt=port.get("New Question"),
                portability_answer=port.get("New Answer"),
                case_id=i,
                prediction=row.value.get("pred"),
            )
        )
    return out


def task_path(relative: str, data_dir: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(data_dir) / "task-data" / relative
