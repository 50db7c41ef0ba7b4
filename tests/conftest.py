"""Shared fixtures. Tiers, one folder each and marked by it: ``unit`` (no model: seconds),
``integration`` (tiny random models; the embedded SmolLM2 where marked ``model``), ``notebooks``
(every notebook under the smoke profile), ``browser`` (JupyterLab in Chromium). Slow tests are
also marked ``slow``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TIERS = ("unit", "integration", "notebooks", "browser")


def pytest_collection_modifyitems(config, items):
    """Mark every test with its tier (its folder under tests/), so ``-m unit`` selects a tier."""
    here = Path(__file__).resolve().parent
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(here).parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from helpers.model.loading import embedded_folder

    tok = AutoTokenizer.from_pretrained(str(embedded_folder()))
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def smollm2():
    from helpers import load_model

    return load_model("smollm2-135m", device="cpu")


def _tiny(kind: str, vocab: int, layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=512, n_embd=64, n_layer=layers, n_head=4,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = LlamaForCausalLM(cfg)
    return model.eval()


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_model(request, smol_tokenizer):
    """A 2-layer model with random weights (GPT-2: Conv1D layout; Llama: Linear), sharing
    the SmolLM2 tokenizer's vocabulary."""
    return _tiny(request.param, len(smol_tokenizer)), smol_tokenizer


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_deep_model(request, smol_tokenizer):
    """Like ``tiny_model`` with 4 layers, so that there are layers below and above an edit."""
    return _tiny(request.param, len(smol_tokenizer), layers=4), smol_tokenizer


def pytest_runtest_setup(item):
    """Tests marked ``data`` need the paper's data: skipped (with how to get it) where it is
    missing, unless EDITHURT_REQUIRE_DATA=1 (CI), where a missing folder is a failure."""
    import os

    if item.get_closest_marker("data") is None:
        return
    from helpers.errors import DataNotFoundError
    from helpers.paths import data_dir

    try:
        data_dir()
    except DataNotFoundError as e:
        if os.environ.get("EDITHURT_REQUIRE_DATA") == "1":
            pytest.fail(str(e))
        pytest.skip(f"needs the paper's data: {e}")
