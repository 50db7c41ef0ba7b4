"""Every case of ``tests/bad_input_cases.py``: the exception type and its message; and the
table in docs/reliability.md is exactly that list."""
import importlib
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.bad_input_cases import CASES, render_table

pytestmark = [pytest.mark.data]

TABLE_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@pytest.fixture(scope="module")
def tiny_llama(smol_tokenizer):
    from tests.conftest import _tiny

    model = _tiny("llama", len(smol_tokenizer))
    model.config._name_or_path = "tiny"  # no hparams are shipped under this name
    return model, smol_tokenizer


def _exception_class(dotted: str):
    if "." not in dotted:
        return getattr(__builtins__, dotted, None) or __import__("builtins").__dict__[dotted]
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_gets_a_clear_error(case, tiny_llama, tmp_path, monkeypatch):
    import torch

    model, tok = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = SimpleNamespace(model=model, tok=tok, tmp=tmp_path, monkeypatch=monkeypatch)
    with pytest.raises(_exception_class(case.error)) as e:
        case.run(ctx)
    message = str(e.value.code if isinstance(e.value, SystemExit) else e.value)
    assert case.says in message, f"{case.what}: the message was {message!r}"
    # whatever failed, the model's weights are as they were
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_there_are_at_least_25_cases_and_the_reliability_page_shows_them_all():
    assert len(CASES) >= 25
    text = TABLE_PAGE.read_text(encoding="utf8")
    found = re.search(r"<!-- bad-inputs:start -->\n(.*?)\n<!-- bad-inputs:end -->", text, re.S)
    assert found, "docs/reliability.md lacks the bad-inputs table markers"
    assert found.group(1).strip() == render_table(), \
        "docs/reliability.md's bad-input table is out of date: replace it with `python -m tests.bad_input_cases`"
