"""Ray stays optional: the package and the local sweep never import it."""
import subprocess
import sys

import pytest


def test_the_local_backend_never_imports_ray():
    code = ("import sys, helpers, helpers.runs.sweep, helpers.report.reproduce\n"
            "from helpers.runs.sweep import Chain, chains\n"
            "chains({'ROME': [0, 1]})\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_backend_for_make_reproduce_is_refused(capsys):
    from helpers.report import reproduce

    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--backend", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err
