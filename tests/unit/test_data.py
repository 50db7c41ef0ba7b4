import json
import shutil
import time
from pathlib import Path

import pytest

import helpers
from helpers import paths
from helpers.errors import DataFormatError, DataNotFoundError, UnknownNameError

pytestmark = pytest.mark.data

COUNTS = {"reasoning": 1319, "nli": 2489, "open_qa": 3610, "closed_qa": 3267, "dialogue": 886,
          "summarization": 818, "ner": 3250, "sentiment": 872}


def test_zsre_has_every_field_of_an_edit():
    reqs = helpers.load_zsre()
    assert len(reqs) == 1037
    r = reqs[0]
    assert r.prompt == "When was the inception of IAAF Combined Events Challenge?"
    assert r.subject == "IAAF Combined Events Challenge" and r.target_new == "2006"
    assert r.ground_truth == "1998" and r.rephrase.startswith("When was the IAAF")
    assert r.locality_answer == "The String" and r.portability_answer == "Athletics"
    assert all(q.subject in q.prompt for q in reqs)
    assert [q.case_id for q in reqs[:3]] == [0, 1, 2]


@pytest.mark.parametrize("task", sorted(COUNTS))
def test_full_test_sets_have_the_papers_counts(task):
    assert len(helpers.load_task(task)) == COUNTS[task]


def test_ner_released_protocol_keeps_docstart_blocks():
    assert len(helpers.load_task("ner", protocol="released")) == 3466


def test_subsample_is_seeded_and_recorded():
    a = helpers.load_task("nli", n=50, seed=3)
    b = helpers.load_task("nli", n=50, seed=3)
    c = helpers.load_task("nli", n=50, seed=4)
    assert [e.id for e in a] == [e.id for e in b] != [e.id for e in c]
    assert len(a) == 50 and len({e.id for e in a}) == 50
    full = helpers.load_task("nli")
    assert all(full[e.id].fields == e.fields for e in a)


def test_unknown_task_names_the_closest():
    t = time.perf_counter()
    with pytest.raises(UnknownNameError, match="'sentiment'"):
        helpers.load_task("sentimnet")
    assert time.perf_counter() - t < 2


@pytest.fixture
def data_copy(tmp_path):
    """A writable copy of the data folder (MuTual reduced to 3 files)."""
    src = paths.data_dir()
    dst = tmp_path / "edithurt"
    shutil.copytree(src / "edited-data", dst / "edited-data")
    shutil.copytree(src / "task-data", dst / "task-data", ignore=shutil.ignore_patterns("test-dialogue"))
    (dst / "task-data" / "test-dialogue").mkdir()
    for i in (1, 2, 10):
        shutil.copy(src / "task-data" / "test-dialogue" / f"dev_{i}.txt", dst / "task-data" / "test-dialogue")
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_missing_data_folder_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITHURT_DATA", str(tmp_path / "nowhere"))
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError, match="make data") as e:
        helpers.load_zsre()
    assert "EDITHURT_DATA" in str(e.value) and time.perf_counter() - t < 2


def test_edithurt_data_comes_first(data_copy, monkeypatch):
    monkeypatch.setenv("EDITHURT_DATA", str(data_copy))
    assert paths.data_dir() == data_copy
    assert len(helpers.load_task("dialogue")) == 3


def test_dialogue_files_in_numeric_order(data_copy):
    assert [e.fields["article"][:8] for e in helpers.load_task("dialogue", data_dir=data_copy)] == [
        json.loads((data_copy / "task-data/test-dialogue" / f"dev_{i}.txt").read_text())["article"][:8]
        for i in (1, 2, 10)
    ]


def _rewrite_line(path: Path, lineno: int, new: str):
    lines = path.read_text(encoding="utf8").split("\n")
    lines[lineno - 1] = new
    path.write_text("\n".join(lines), encoding="utf8")


@pytest.mark.parametrize("task,file,line,new,match", [
    ("reasoning", "test-reasoning.jsonl", 7, '{"question": "q?", "answer": "no final line"}', "####"),
    ("closed_qa", "test-ClosedDomainQA.jsonl", 12, '{"question": "q", "passage": "p"}', "missing field 'answer'"),
    ("open_qa", "test-OpenDomainQA.jsonl", 5, '{"question": "q", "answer": [1], "output": ', "invalid JSON"),
    ("nli", "test-NLI.tsv", 4, "3\tA\tB\tmaybe", "label should be"),
    ("sentiment", "test-SentimentAnalysis.tsv", 9, "good film", "cells"),
    ("ner", "test-NER.txt", 20, "Simmons NNP I-NP I-PERSON", "bad NER tag"),
])
def test_malformed_row_names_file_and_line(data_copy, task, file, line, new, match):
    path = data_copy / "task-data" / file
    _rewrite_line(path, line, new)
    with pytest.raises(DataFormatError, match=match) as e:
        helpers.load_task(task, data_dir=data_copy)
    assert e.value.path == str(path) and e.value.line == line
    assert f"{file}, line {line}" in str(e.value)


def test_malformed_zsre_record_names_its_line(data_copy):
    path = data_copy / "edited-data" / "zsre.json"
    records = json.loads(path.read_text())
    records[2]["alt"] = ""
    path.write_text(json.dumps(records, indent=1))
    with pytest.raises(DataFormatError, match="field 'alt' is empty") as e:
        helpers.load_zsre(data_copy)
    starts = [i + 1 for i, l in enumerate(path.read_text().split("\n")) if l == " {"]
    assert e.value.line == starts[2]  # the third record's opening line


def test_malformed_summarization_json_names_line(data_copy):
    path = data_copy / "task-data" / "test-summarization.json"
    path.write_text('[\n  {"id": "1", "summary": "s", "dialogue": "d"},\n  {"id": "2", "summary": "s" "dialogue": "d"}\n]')
    with pytest.raises(DataFormatError, match="invalid JSON") as e:
        helpers.load_task("summarization", data_dir=data_copy)
    assert e.value.line == 3


def test_a_perfect_ner_answer_scores_one_on_the_whole_file():
    # every prompt answered with exactly its gold entities (or "None"): entity F1 must be 1, which
    # fails if gold entities ending in "." ("U.S.", "Inc.") are compared unnormalised
    from helpers.evaluation.tasks import Reply

    t = helpers.get_task("ner")
    prompts = [p for e in helpers.load_task("ner") for p in t.prompts(e, "paper")]
    assert any(p.target and p.target[0].endswith(".") for p in prompts)
    assert t.score(prompts, [Reply(p.gold_text or " None") for p in prompts], "paper") == (1.0, 1.0)


def test_released_nli_reads_the_file_as_the_scripts_did():
    # csv's default quoting strips the quote marks around 69 first sentences; the paper protocol
    # keeps the file's text
    paper, rel = helpers.load_task("nli"), helpers.load_task("nli", protocol="released")
    differ = [(a, b) for a, b in zip(paper, rel) if a.fields != b.fields]
    assert len(paper) == len(rel) == 2489 and len(differ) == 69
    a, b = differ[0]
    assert a.fields["s1"].startswith('"') and not b.fields["s1"].startswith('"')


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["empty", "gold"])
def test_released_open_qa_replays_the_script_on_the_real_prompts(answer):
    # the first 40 examples in file order (the script's flag is set by example 6)
    from tests.unit.test_released import END, script_open_qa

    from helpers.evaluation.tasks import Reply

    t = helpers.get_task("open_qa")
    prompts = [t.prompts(e, "released")[0] for e in helpers.load_task("open_qa", protocol="released")[:40]]
    # "gold": the gold answer, then the 20-token limit (no end token); "empty": the end token at once
    new = [" " + p.target[0] if answer == "gold" else "" for p in prompts]
    replies = [Reply(n, END + p.text + (n or END)) for p, n in zip(prompts, new)]
    value, _ = t.score(prompts, replies, "released")
    assert value * len(prompts) == pytest.approx(script_open_qa([r.transcript for r in replies], [p.target for p in prompts]))
    assert (value > 0.25) if answer == "gold" else (value < 0.05)
