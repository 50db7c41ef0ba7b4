"""Methods and tasks of a user's own reach every run: a profile's ``extensions`` are loaded by every
notebook, a .py file or a module, and what they register can be named like the package's own."""
import json
from pathlib import Path

import pytest

from helpers import load_extensions, method_names, task_names
from helpers.extensions import ExtensionError
from helpers.report import reproduce

PLUGIN = '''
from dataclasses import dataclass
from helpers.editing import MethodSpec, register_method

@dataclass
class ZeroHyperParams:
    layer: int = 0

def apply(model, tok, requests, hp):
    return {}

def register():
    register_method(MethodSpec("ZERO-TEST", ZeroHyperParams, apply), replace=True)
'''


def test_a_py_file_is_loaded_and_registers_its_method(tmp_path):
    path = tmp_path / "my_methods.py"
    path.write_text(PLUGIN)
    (module,) = load_extensions([str(path)])
    assert "ZERO-TEST" in method_names() and module.ZeroHyperParams().layer == 0
    load_extensions([str(path)])  # twice: its registration replaces its own


def test_a_module_name_is_imported_and_a_missing_one_is_named():
    load_extensions(["tests.extending.capitals"])
    assert "capitals" in task_names()
    with pytest.raises(ExtensionError, match="'no_such_module_here' cannot be imported"):
        load_extensions(["no_such_module_here"])
    with pytest.raises(ExtensionError, match="no such file"):
        load_extensions(["missing/plugin.py"])


def test_every_notebook_declares_extensions_and_loads_them_first():
    for nb in sorted(reproduce.NOTEBOOKS.glob("0*.ipynb")):
        assert "extensions" in reproduce.notebook_declared_parameters(nb.stem), nb.name
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert "helpers.load_extensions(extensions)" in "".join(cells[1]["source"]), nb.name


def test_a_profiles_extensions_reach_every_notebook_with_files_found_from_the_root(tmp_path):
    profile = {**reproduce.load_profile("smoke"), "extensions": ["my_methods.py", "some.module"]}
    params = reproduce.notebook_parameters("smoke", profile, "02_weight_statistics", tmp_path)
    assert params["extensions"] == [str(reproduce.REPO_ROOT / "my_methods.py"), "some.module"]
    assert Path(params["extensions"][0]).is_absolute()
