"""The paper's own hparams files (tests/fixtures/paper_hparams, as the authors ship them) load
unchanged, and the files this package ships for the paper's models hold the same values."""
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from helpers.editing import HparamsError, read_hparams
from helpers.editing.hparams import HPARAMS_DIR

PAPER = Path(__file__).resolve().parents[1] / "fixtures" / "paper_hparams"
CASES = [(m, f) for m in ("ROME", "MEMIT", "KN", "MEND") for f in ("gpt2-xl", "llama-7b")]


@pytest.mark.parametrize("method,model", CASES)
def test_the_paper_file_loads_as_it_is(method, model):
    hp = read_hparams(method, PAPER / method / f"{model}.yaml")
    assert type(hp).__name__ == f"{method}HyperParams"
    raw = yaml.safe_load((PAPER / method / f"{model}.yaml").read_text())
    for f in dataclasses.fields(hp):
        if f.name in raw:
            value = raw[f.name]
            want = float(value) if isinstance(value, str) and re.fullmatch(r"[-+.\de]+", value) else value
            assert getattr(hp, f.name) == want, f.name  # "5e-1" is the number 0.5


def test_scientific_notation_is_read_as_a_number():
    hp = read_hparams("ROME", PAPER / "ROME" / "gpt2-xl.yaml")
    assert hp.v_lr == 0.5 and isinstance(hp.v_lr, float)
    assert read_hparams("MEND", PAPER / "MEND" / "llama-7b.yaml").lr == 1e-6


def test_a_file_of_another_method_is_refused():
    with pytest.raises(HparamsError, match="is a ROME file"):
        read_hparams("MEMIT", PAPER / "ROME" / "gpt2-xl.yaml")


def _differs_by_comment(text: str) -> set[str]:
    """Keys whose line in a shipped file says ``# paper: ...`` (a deliberate difference)."""
    return {m.group(1) for m in re.finditer(r"^(\w+):[^\n#]*#\s*paper:", text, re.M)}


@pytest.mark.parametrize("method,model", CASES)
def test_the_shipped_file_equals_the_papers_except_where_a_comment_says_why(method, model):
    shipped_path = HPARAMS_DIR / method / f"{model}.yaml"
    paper_hp = read_hparams(method, PAPER / method / f"{model}.yaml")
    shipped_hp = read_hparams(method, shipped_path)
    text = shipped_path.read_text()
    allowed = _differs_by_comment(text)
    paper_raw = yaml.safe_load((PAPER / method / f"{model}.yaml").read_text())
    shipped_raw = yaml.safe_load(text)
    fields = {f.name for f in dataclasses.fields(paper_hp)}
    differ = {k for k in fields if (k in paper_raw or k in shipped_raw)
              and getattr(paper_hp, k) != getattr(shipped_hp, k)}
    assert differ <= allowed, f"{shipped_path.name} differs from the paper's file in {sorted(differ - allowed)}"
    # every algorithmic key of the paper's file is written out in the shipped one
    assert {k for k in paper_raw if k in fields} <= set(shipped_raw)
