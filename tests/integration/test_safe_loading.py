"""Safe loading: no code in the package can unpickle, run remote code or evaluate data, and a
pickle planted where a cache is expected is refused without running."""
import re
from pathlib import Path

import pytest

from helpers.errors import CacheError
from tests.bad_input_cases import plant_pickle

ROOT = Path(__file__).resolve().parents[2]
UNSAFE = {
    r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.load": "pickle",
    r"torch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
    r"trust_remote_code\s*=\s*True": "trust_remote_code=True",
    r"\byaml\.load\(|yaml\.unsafe_load|yaml\.Loader\b": "yaml.load (use yaml.safe_load)",
    r"(?<![\w.])eval\(|(?<![\w.])exec\(": "eval/exec",
    r"allow_pickle\s*=\s*True": "numpy allow_pickle=True",
}


def _sources():
    for folder in ("helpers", "bench", "scripts", "notebooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".ipynb") and ".ipynb_checkpoints" not in path.parts:
                yield path


def test_no_source_file_can_unpickle_or_run_remote_code():
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf8")
        for pattern, what in UNSAFE.items():
            for m in re.finditer(pattern, text):
                found.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {what}")
    assert not found, "\n".join(found)
    # the scan sees what it should: the planted test pickle in this very package's tests is caught
    assert re.search(list(UNSAFE)[0], "import pickle")


def test_a_pickle_planted_as_the_mend_network_is_refused_and_never_runs(tiny_model, tmp_path, monkeypatch):
    from helpers.editing import mend
    from helpers.paths import cache_dir
    from tests.integration.test_mend import mend_hparams

    model, tok = tiny_model
    monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path / "cache"))
    hp = mend_hparams(model)
    path = cache_dir("mend") / f"{mend._cache_key('tiny', hp)}.safetensors"
    plant_pickle(path, tmp_path / "pwned")
    with pytest.raises(CacheError, match="not a readable safetensors file .* and is not loaded: delete it"):
        mend.load_or_train(model, tok, hp, "tiny", records=[], progress=False)
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_planted_as_a_stored_edit_state_is_refused_and_never_runs(tmp_path):
    from helpers.results import ResultStore

    store = ResultStore(tmp_path / "r.jsonl")
    plant_pickle(store._tensor_path({"state": 1}), tmp_path / "pwned")
    with pytest.raises(CacheError, match="is not loaded: delete it and it is recomputed"):
        store.get_tensors({"state": 1})
    assert not (tmp_path / "pwned").exists()


def test_planted_pickles_would_run_if_unpickled(tmp_path):
    """The planted files are real exploits: unpickling one runs its payload (so the refusals
    above are what stops them)."""
    import pickle  # noqa: the one deliberate unpickling, of the test's own file

    path = tmp_path / "x.safetensors"
    plant_pickle(path, tmp_path / "ran")
    pickle.loads(path.read_bytes())
    assert (tmp_path / "ran").exists()
