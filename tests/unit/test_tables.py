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


def test_a_figure_saved_twice_from_the_same_numbers_has_the_same_bytes(tmp_path):
    import time

    import matplotlib.pyplot as plt

    from helpers.report import tables

    pages = []
    for i in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2])
        tables.save_figure(fig, tmp_path / str(i), "fig")
        plt.close(fig)
        pages.append((tmp_path / str(i) / "fig.pdf").read_bytes())
        time.sleep(1.1)  # a creation date would differ by a second
    assert pages[0] == pages[1]
