"""The build's timing log (helpers/runs/timing.py): nested phases add up, nothing is written
unless a log is named, and timing.csv sums the lines of every piece of a build."""
import time

import pandas as pd
import pytest

from helpers.runs import timing


def test_a_phase_excludes_the_phases_nested_in_it(tmp_path, monkeypatch):
    log = tmp_path / "results" / "timing_log.csv"
    monkeypatch.setenv(timing.LOG_ENV, str(log))
    monkeypatch.setenv(timing.NOTEBOOK_ENV, "06_collapse_horizon")
    with timing.phase("ROME", "edit"):
        time.sleep(0.05)
        with timing.phase("ROME", "trace"):
            time.sleep(0.2)
    rows = timing.read_log(log)
    assert rows.phase.tolist() == ["trace", "edit"]  # the inner one ends first
    trace, edit = rows.seconds.astype(float)
    assert trace >= 0.2 and 0.05 <= edit < 0.2  # the edit's line does not count the trace's 0.2 s
    assert set(rows.notebook) == {"06_collapse_horizon"}


def test_nothing_is_written_without_a_log(tmp_path, monkeypatch):
    monkeypatch.delenv(timing.LOG_ENV, raising=False)
    with timing.phase("ROME", "edit"):
        pass
    assert not list(tmp_path.iterdir())


def test_timing_csv_sums_every_piece_per_phase_and_notebook(tmp_path):
    log = tmp_path / "log.csv"
    for seconds in (10.0, 20.0):  # two sessions' pieces of the same chain
        timing.append(log, "01", "ROME", "edit", seconds, seconds / 2)
    timing.append(log, "01", "", "notebook", 9.0, 8.0)  # a piece's figures, redrawn by the last run
    timing.append(log, "01", "", "notebook", 5.0, 4.0)  # the run whose figures landed
    timing.append(log, "02", "ROME", "evaluation", 7.0, 6.0)
    table = timing.summarize(timing.read_log(log)).set_index(["notebook", "chain", "phase"])
    assert table.loc[("01", "ROME", "edit"), "seconds"] == pytest.approx(30.0)
    assert table.loc[("01", "ROME", "edit"), "count"] == 2
    assert table.loc[("01", "", "notebook"), "seconds"] == pytest.approx(5.0)  # only the last notebook line
    assert table.loc[("01", "", "total"), "seconds"] == pytest.approx(35.0)
    assert table.loc[("01", "", "total"), "cpu_seconds"] == pytest.approx(19.0)
    assert table.loc[("all", "", "total"), "seconds"] == pytest.approx(42.0)
    lines = timing.summary_lines(table.reset_index())
    assert lines[0].startswith("01: 0.6 min wall") and "largest phase edit (86 %)" in lines[0]
    assert timing.summarize(pd.DataFrame(columns=timing.COLUMNS)).empty


def test_a_notebook_logs_what_it_spent_outside_its_phases(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from helpers.report import reproduce

    monkeypatch.delenv(timing.LOG_ENV, raising=False)
    started = time.perf_counter()
    with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):
        assert os.environ[timing.LOG_ENV] == str(reproduce.timing_log(tmp_path))
        with timing.phase("ROME", "edit"):  # as the kernel would, in its own process
            time.sleep(0.1)
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)"], check=True)
    wall = time.perf_counter() - started
    assert timing.LOG_ENV not in os.environ  # restored
    rows = timing.read_log(reproduce.timing_log(tmp_path)).set_index("phase")
    assert rows.loc["edit", "notebook"] == "06_collapse_horizon"
    assert float(rows.loc["notebook", "seconds"]) >= 0.2  # the child's 0.2 s
    assert rows.seconds.astype(float).sum() <= wall + 0.01  # the edit's 0.1 s is not counted again
    summary = reproduce.write_timing(tmp_path)
    assert (tmp_path / "timing.csv").exists() and set(summary.phase) == {"edit", "notebook", "total"}


def test_a_rerun_that_computes_nothing_leaves_the_log_as_the_build_wrote_it(tmp_path, monkeypatch):
    from helpers.report import reproduce

    monkeypatch.delenv(timing.LOG_ENV, raising=False)
    log = reproduce.timing_log(tmp_path)
    with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):
        with timing.phase("ROME", "edit"):
            time.sleep(0.01)
    built = log.read_text()
    with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):  # every row stored: only figures
        pass
    assert log.read_text() == built
    with reproduce.timed_notebook(tmp_path, "01_side_effects"):  # a notebook not built yet logs its line
        pass
    assert timing.read_log(log).notebook.tolist()[-1] == "01_side_effects"
    with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):  # a piece that computes logs again
        with timing.phase("ROME", "edit"):
            time.sleep(0.01)
    assert timing.read_log(log).phase.tolist()[-2:] == ["edit", "notebook"]


def test_a_notebook_that_fails_on_a_rerun_still_raises(tmp_path, monkeypatch):
    from helpers.report import reproduce

    monkeypatch.delenv(timing.LOG_ENV, raising=False)
    with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):
        with timing.phase("ROME", "edit"):
            pass
    with pytest.raises(RuntimeError, match="a figure failed"):  # nothing computed, the log already built
        with reproduce.timed_notebook(tmp_path, "06_collapse_horizon"):
            raise RuntimeError("a figure failed")
