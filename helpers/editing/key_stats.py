"""Key statistics for MEMIT (and ROME with ``mom2_adjustment``): the second moment
``C = E[k kᵀ]`` of a weight matrix's input over a text corpus.

Computed once per (model, module, corpus, sample count, dtype), from the unedited model
(``helpers.editing.prepare``), and cached as safetensors under ``$EDITHURT_CACHE/stats`` with a
JSON record of what produced it (never pickle).

Corpora: ``self`` (the offline default) — texts sampled from the model itself, seeded, so
no downstream test set leaks into the statistics; ``wikipedia`` — the hub's Wikipedia dump,
as the original MEMIT (needs the dataset hub).
"""
from __future__ import annotations

import json

import torch
from tqdm.auto import tqdm

from ..errors import CacheError
from ..paths import cache_dir
from ..files import load_safetensors, save_safetensors
from ..model.batching import encode_padded
from ..model.loading import files_name
from .modules import get_module

SELF_TEXT_TOKENS = 64  # length of each self-sampled text
# In the cached files' names: 2, the statistics of the unedited model (before it, a process that
# resumed a sequence from stored edited weights could compute them from those weights).
STATS_REVISION = 2
_MEMORY: dict = {}


def stats_path(model_name: str, module_name: str, corpus: str, n_samples: int, dtype: str):
    """Where the statistics of ``module_name`` are cached (``$EDITHURT_CACHE/stats``)."""
    name = f"{model_name}__{module_name}__{corpus}__{n_samples}__{dtype}__r{STATS_REVISION}"
    return cache_dir("stats") / f"{name}.safetensors"


def corpus_texts(model, tok, corpus: str, n: int, seed: int = 0) -> list[str]:
    if corpus == "self":
        from ..model.generate import generate
        from .templates import SEED_WORDS

        prompts = [SEED_WORDS[i % len(SEED_WORDS)] for i in range(n)]
        gens = generate(model, tok, prompts, SELF_TEXT_TOKENS, sample_top_k=40, seed=seed,
                        batch_tokens=1 << 20, max_batch_size=128, desc="sampling stats corpus")
        return [p + g.text for p, g in zip(prompts, gens)]
    if corpus == "wikipedia":
        from datasets import load_dataset

        ds = load_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
        return [row["text"][:2000] for _, row in zip(range(n), ds)]
    raise ValueError(f"unknown statistics corpus {corpus!r}: use 'self' (offline) or 'wikipedia'")


def key_second_moments(model, tok, module_names, corpus: str = "self", n_samples: int = 1000,
                       dtype: str = "float32", model_name: str = "model", batch_size: int = 32) -> dict:
    """``{module name: E[k kᵀ]}`` over every token of ``n_samples`` corpus texts, ``k`` the
    module's input (``[in, in]``). Cached on disk; the missing ones are computed together in
    one pass over the corpus."""
    out, missing = {}, []
    for name in module_names:
        path = stats_path(model_name, name, corpus, n_samples, dtype)
        key = path.stem
        if key in _MEMORY:
            out[name] = _MEMORY[key]
        elif path.exists():
            stored = load_safetensors(path, "delete it and the statistics are computed again")
            if "mom2" not in stored:
                raise CacheError(f"{path} holds no 'mom2' tensor: delete it and the statistics are computed again")
            out[name] = _MEMORY[key] = stored["mom2"]
        else:
            missing.append((name, key, path))
    if not missing:
        return out
    texts = corpus_texts(model, tok, corpus, n_samples)
    device = next(model.parameters()).device
    totals, count, seen = {}, 0, {}
    hooks = [get_module(model, name).register_forward_pre_hook(
        lambda m, args, name=name: seen.__setitem__(name, args[0])) for name, _, _ in missing]
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="key statistics", leave=False):
            ids, mask = encode_padded(tok, texts[start:start + batch_size], device)
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            for name, _, _ in missing:
                k = seen[name][mask.bool()].to(getattr(torch, dtype)).double()
                totals[name] = k.T @ k if name not in totals else totals[name] + k.T @ k
            count += int(mask.sum())
    finally:
        for h in hooks:
            h.remove()
    for name, key, path in missing:
        mom2 = (totals[name] / count).to(getattr(torch, dtype)).cpu()
        save_safetensors({"mom2": mom2}, path)
        record = {"model": model_name, "module": name, "corpus": corpus, "n_samples": n_samples,
                  "dtype": dtype, "tokens": count,
                  "corpus_note": "texts sampled from the model (top-40, seeded)" if corpus == "self" else corpus}
        path.with_suffix(".json").write_text(json.dumps(record, indent=1))
        out[name] = _MEMORY[key] = mom2
    return out


def inverse_key_covariance(model, tok, module_name: str, hp) -> torch.Tensor:
    mom2 = key_second_moments(model, tok, [module_name], hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype,
                              files_name(model))[module_name]
    return torch.linalg.inv(mom2.double()).float().to(next(model.parameters()).device)
