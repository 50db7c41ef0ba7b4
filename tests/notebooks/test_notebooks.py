"""Every notebook runs headlessly under the smoke profile (papermill), as `make reproduce
PROFILE=smoke` runs it, and writes its tables and figures."""
import pandas as pd
import pytest

from helpers.report import reproduce

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.data]


@pytest.mark.parametrize("notebook", list(reproduce.load_profile("smoke")["notebooks"]))
def test_notebook_runs_under_smoke_profile(notebook, tmp_path):
    # The results store is the smoke profile's own (figures/smoke/results, as `make reproduce PROFILE=smoke`
    # and the browser tests use it): rows are keyed by every setting and revision, so a row another test of
    # this session computed is the same row, read instead of computed again. Figures and tables are
    # written fresh into tmp_path and checked there.
    shared = reproduce.figures_dir("smoke") / "results"
    shared.mkdir(parents=True, exist_ok=True)
    (tmp_path / "results").symlink_to(shared, target_is_directory=True)
    profile = reproduce.load_profile("smoke")
    params = reproduce.notebook_parameters("smoke", profile, notebook, tmp_path)
    reproduce.run_notebook(notebook, tmp_path / f"{notebook}.ipynb", params, timeout_s=600)  # a hang fails
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    tables = list((tmp_path / "tables").glob("*.csv"))
    assert tables and all(len(pd.read_csv(t)) > 0 for t in tables)


def test_every_notebook_is_in_every_profile():
    names = sorted(p.stem for p in reproduce.NOTEBOOKS.glob("*.ipynb"))
    for profile in ("smoke", "cpu", "paper"):
        assert sorted(reproduce.load_profile(profile)["notebooks"]) == names


def test_notebooks_are_thin():
    import ast
    import json

    for nb in reproduce.NOTEBOOKS.glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), nb
        for c in cells:
            if c["cell_type"] != "code":
                continue
            assert not c.get("outputs"), f"{nb} is committed with outputs"
            assert len("".join(c["source"]).strip().splitlines()) <= 15, nb
            if "parameters" in c.get("metadata", {}).get("tags", []):
                # nothing beyond names bound to literal values
                for node in ast.parse("".join(c["source"])).body:
                    assert isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets), nb
                    ast.literal_eval(node.value)
