"""Safe loading: no code in the package can unpickle, run remote code or evaluate data, and a
pickle planted where a cache is expected is refused without running."""
import re
from pathlib import Path

import pytest

from helpers.errors import CacheError
from tests.bad_input_cases import plant_pickle

ROOT = Path(__file__).resolve().parents[2]
# the patterns are assembled from parts so that this file does not itself contain what it forbids
P, T, Y = "pick" + "le", "trust_remote" + "_code", "ya" + "ml"
UNSAFE = {
    rf"\bimport {P}\b|\bfrom {P}\b|\b{P}\.load": P,
    r"torch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
    rf"{T}\s*=\s*True": f"{T}=True",
    rf"\b{Y}\.load\(|{Y}\.unsafe_load|{Y}\.Loader\b": f"{Y}.load (use {Y}.safe_load)",
    r"(?<![\w.])ev" + r"al\(|(?<![\w.])ex" + r"ec\(": "eval/exec",
    r"allow_" + P + r"\s*=\s*True": f"numpy allow_{P}=True",
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
    # the scan sees what it should: each pattern catches the thing it names
    for line in (f"import {P}", f"torch.load(f)", f"x({T}=True)", f"{Y}.load(f)", "ev" + "al(s)"):
        assert any(re.search(p, line) for p in UNSAFE), line


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
    from helpers.runs.store import ResultStore

    store = ResultStore(tmp_path / "r.jsonl")
    plant_pickle(store._tensor_path({"state": 1}), tmp_path / "pwned")
    with pytest.raises(CacheError, match="is not loaded: delete it and it is recomputed"):
        store.get_tensors({"state": 1})
    assert not (tmp_path / "pwned").exists()


def test_the_planted_files_are_real_exploits(tmp_path):
    """Read without running it, the planted file calls ``os.system`` when unpickled: the
    refusals above are what stops it."""
    import pickletools

    path = tmp_path / "planted.safetensors"
    plant_pickle(path, tmp_path / "marker")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes())]
    names = [arg for name, arg in ops if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE")]
    assert ("REDUCE", None) in ops and "system" in names and any("touch" in str(n) for n in names)
