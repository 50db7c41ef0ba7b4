import json

import pandas as pd

from helpers.results import ResultStore, settings_key, to_markdown, write_table


def test_key_ignores_order_and_sees_values():
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})


def test_rows_survive_a_reopen_and_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    s = ResultStore(path)
    s.put({"task": "nli", "n": 5}, {"value": 0.5})
    s.put({"task": "ner", "n": 5}, {"value": 0.25})
    with open(path, "a") as f:
        f.write('{"key": "abc", "settings": {"task": "x"')  # a crash mid-write
    again = ResultStore(path)
    assert len(again) == 2
    assert again.get({"n": 5, "task": "ner"}) == {"value": 0.25}
    assert again.get({"task": "ner", "n": 6}) is None
    assert set(again.frame().task) == {"nli", "ner"}


def test_numpy_scalars_are_stored_as_numbers(tmp_path):
    import numpy as np

    s = ResultStore(tmp_path / "r.jsonl")
    s.put({"k": 1}, {"v": np.float64(0.25), "n": np.int64(3)})
    rec = json.loads((tmp_path / "r.jsonl").read_text())
    assert rec["row"] == {"v": 0.25, "n": 3}


def test_write_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"task": ["nli", "ner"], "value": [0.5, float("nan")]})
    write_table(df, tmp_path / "t")
    assert pd.read_csv(tmp_path / "t.csv").task.tolist() == ["nli", "ner"]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "| task | value |" and md[2] == "| nli | 0.500 |" and md[3] == "| ner |  |"
    assert to_markdown(df).count("\n") == 3
