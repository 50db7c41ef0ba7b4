"""helpers.report.tables: the CSV and Markdown tables every notebook writes."""
import pandas as pd

from helpers.report.tables import to_markdown, write_table


def test_write_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"task": ["nli", "ner"], "value": [0.5, float("nan")]})
    write_table(df, tmp_path, "t")
    assert pd.read_csv(tmp_path / "tables" / "t.csv").task.tolist() == ["nli", "ner"]
    md = (tmp_path / "tables" / "t.md").read_text().splitlines()
    assert md[0] == "| task | value |" and md[2] == "| nli | 0.500 |" and md[3] == "| ner |  |"
    assert to_markdown(df).count("\n") == 3
