import json

import errno
import os

import pandas as pd
import pytest

import helpers.runs.store as results
from helpers.runs.store import FORMAT, DiskFullError, ResultStore, StoreError, settings_key, upgrade


def test_key_ignores_order_and_sees_values():
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})


def test_an_edit_key_carries_its_own_methods_revision():
    """Each method's revision (helpers/editing/builtin.py says what raised each): KN at 3; ROME and
    AlphaEdit 5, MEMIT and R-ROME 6 since the target is spaced as each reference spaces it; MEND 5
    since its network is trained on the reference trainer's schedule (a later change of one method
    recomputes its results only); any spelling of a method gives one key."""
    from helpers.editing import METHODS
    from helpers.editing.keys import edit_key
    from helpers.editing.registry import DEFAULT_REVISION

    revisions = {m: edit_key(m, None, "smollm2-135m")["methods_revision"] for m in METHODS}
    assert revisions["KN"] == DEFAULT_REVISION == 3
    assert all(revisions[m] == 5 for m in ("ROME", "AlphaEdit", "MEND"))
    assert revisions["MEMIT"] == 6 and revisions["R-ROME"] == 6
    assert edit_key("alphaedit", None, "smollm2-135m") == edit_key("AlphaEdit", None, "smollm2-135m")


def test_an_edit_key_holds_the_values_of_its_hparams_files(tmp_path, monkeypatch):
    """Editing the YAML file an edit reads — the one shipped for the model, or the user's own —
    changes the key of its results, so they are recomputed rather than read back stale."""
    import helpers.editing.hparams as hparams_module
    from helpers.editing.keys import edit_key
    from helpers.model.loading import files_name

    (tmp_path / "ROME").mkdir()
    shipped = tmp_path / "ROME" / "tiny.yaml"
    monkeypatch.setattr(hparams_module, "HPARAMS_DIR", tmp_path)

    def key(hparams, model="tiny"):
        return settings_key(edit_key("ROME", hparams, model))

    shipped.write_text("layers: [1]\nv_lr: 0.5\n")
    first, with_override = key(None), key({"v_lr": 0.1})
    assert edit_key("ROME", None, "tiny")["hparams"]["shipped"] == {"layers": [1], "v_lr": 0.5}
    assert first != with_override and key(None, "other") != first  # no file shipped for "other"
    shipped.write_text("layers: [2]\nv_lr: 0.5\n")
    assert key(None) != first and key({"v_lr": 0.1}) != with_override
    own = tmp_path / "mine.yaml"
    own.write_text("layers: [1]\n")
    by_path = key(str(own))
    own.write_text("layers: [3]\n")
    assert key(str(own)) != by_path
    # the name a hub id's files go by: its alias
    assert files_name("openai-community/gpt2-xl") == "gpt2-xl" and files_name("/some/folder/tiny/") == "tiny"


def test_rows_survive_a_reopen_and_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    s = ResultStore(path)
    s.put({"task": "nli", "n": 5}, {"value": 0.5})
    s.put({"task": "ner", "n": 5}, {"value": 0.25})
    intact = path.read_bytes()
    with open(path, "a") as f:
        f.write('{"key": "abc", "settings": {"task": "x"')  # a crash mid-write
    again = ResultStore(path)  # a reader skips the torn line (it may be another writer's, in progress)
    assert len(again) == 2 and path.read_bytes() != intact
    with pytest.warns(UserWarning, match="dropped an unfinished last line"):
        again.put({"task": "x", "n": 5}, {"value": 1.0})  # a writer, holding the lock, cuts it
    assert path.read_bytes().startswith(intact)  # so the new row starts on a line of its own
    assert len(ResultStore(path)) == 3
    again = ResultStore(path)
    assert len(again) == 3
    assert again.get({"n": 5, "task": "ner"}) == {"value": 0.25}
    assert again.get({"task": "ner", "n": 6}) is None
    assert set(again.frame().task) == {"nli", "ner", "x"}


def test_numpy_scalars_are_stored_as_numbers(tmp_path):
    import numpy as np

    s = ResultStore(tmp_path / "r.jsonl")
    s.put({"k": 1}, {"v": np.float64(0.25), "n": np.int64(3)})
    rec = json.loads((tmp_path / "r.jsonl").read_text())
    assert rec["row"] == {"v": 0.25, "n": 3}


def test_a_full_disk_leaves_the_store_as_it_was_and_the_next_write_works(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.put({"a": 1}, {"v": 1})
    intact = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "write", half_then_full)
    with pytest.raises(DiskFullError, match="free some space and run the same command again"):
        store.put({"a": 2}, {"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == intact and store.get({"a": 2}) is None
    store.put({"a": 2}, {"v": 2})
    assert ResultStore(path).get({"a": 2}) == {"v": 2}


def test_a_full_disk_while_saving_tensors_leaves_no_partial_file(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(DiskFullError, match="nothing half-written was kept"):
        store.put_tensors({"a": 1}, {"w": torch.ones(2)})
    assert list((tmp_path / "r_tensors").iterdir()) == []


def test_an_older_store_is_refused_then_upgraded_with_every_row(tmp_path):
    path = tmp_path / "r.jsonl"
    old = [{"key": settings_key({"t": i}), "settings": {"t": i}, "row": {"v": i}} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(StoreError, match="line 1: a record of results-store format 1"):
        ResultStore(path)
    assert upgrade(path) == 3
    store = ResultStore(path)
    assert [store.get({"t": i}) for i in range(3)] == [{"v": 0}, {"v": 1}, {"v": 2}]
    assert all(json.loads(l)["format"] == FORMAT for l in path.read_text().splitlines())


def test_a_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"format": FORMAT + 1, "key": "a", "settings": {}, "row": {}}) + "\n")
    with pytest.raises(StoreError, match=f"format {FORMAT + 1}; this version reads format {FORMAT}: use the version"):
        ResultStore(path)


def _lock_holder(store_path):
    """Who holds the store's lock, as its lock file says (empty: nobody)."""
    lock = store_path.with_name(store_path.name + ".lock")
    return lock.read_text() if lock.exists() else ""


@pytest.mark.parametrize("missing", ["row", "tensors", "examples"])
def test_a_lazy_writing_block_takes_the_lock_at_its_first_miss_and_keeps_it_to_its_end(tmp_path, missing):
    import torch

    path = tmp_path / "r.jsonl"
    first = ResultStore(path)
    first.put({"a": 1}, {"v": 1})
    first.put_tensors({"a": 1}, {"t": torch.ones(2)})
    first.put_examples({"a": 1}, pd.DataFrame({"x": [1]}))
    store = ResultStore(path)
    with store.writing(lazy=True):
        assert store.get({"a": 1}) == {"v": 1} and store.get_tensors({"a": 1})["t"].tolist() == [1.0, 1.0]
        assert len(store.get_examples({"a": 1})) == 1
        assert _lock_holder(path) == ""  # everything found: no lock taken
        look = {"row": store.get, "tensors": store.get_tensors, "examples": store.get_examples}[missing]
        assert look({"a": 2}) is None
        assert _lock_holder(path).startswith(f"process {os.getpid()} ")  # taken at the miss...
        store.put({"a": 2}, {"v": 2})
        assert store.get({"a": 1}) == {"v": 1}
        assert _lock_holder(path).startswith(f"process {os.getpid()} ")  # ...and kept after the write
    assert _lock_holder(path) == ""  # released with the block
    assert len(ResultStore(path)) == 2


def test_a_lazy_block_computes_a_missing_result_only_while_holding_the_lock(tmp_path):
    import torch

    path = tmp_path / "r.jsonl"

    def held():
        return _lock_holder(path).startswith(f"process {os.getpid()} ")

    with ResultStore(path).writing(lazy=True) as store:
        assert store.row({"a": 1}, lambda: {"held": held()}) == {"held": True}
    with ResultStore(path).writing(lazy=True) as store:
        assert store.row({"a": 1}, lambda: pytest.fail("computed a stored row")) == {"held": True}
        assert not held()
        assert store.tensors({"a": 2}, lambda: {"held": torch.tensor([float(held())])})["held"].tolist() == [1.0]
    assert not held()
    with ResultStore(path).writing(lazy=True) as store:
        store.put({"a": 3}, {"v": 3})  # a write without a miss before it also takes the lock for the block
        assert held()
    assert not held()


def test_a_lazy_lock_is_released_at_the_outer_block_s_end_on_error_too_and_taken_again_by_the_next_block(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)

    def held():
        return _lock_holder(path).startswith(f"process {os.getpid()} ")

    with store.writing(lazy=True):
        with store.writing(lazy=True):  # nested (a decorated function calling another)
            assert store.get({"a": 1}) is None and held()
        assert held()  # still the outer block's
    assert not held()
    with pytest.raises(RuntimeError), store.writing(lazy=True):
        store.get({"a": 1})
        raise RuntimeError("inside the block")
    assert not held()
    with store.writing(lazy=True):  # the same object again: it computes only under the lock
        assert not held()
        assert store.row({"a": 1}, lambda: {"held": held()}) == {"held": True}
    assert not held()


def test_a_lazy_block_reads_what_another_writer_stored_while_it_waited_for_the_lock(tmp_path, monkeypatch):
    import contextlib

    path = tmp_path / "r.jsonl"
    theirs = tmp_path / "theirs.jsonl"
    ResultStore(theirs).put({"a": 1}, {"v": "theirs"})
    real_lock = results.store_lock

    @contextlib.contextmanager
    def lock_after_the_other_writer(p, *args, **kwargs):
        with open(path, "ab") as f:  # the other writer finishes its row while this one waits
            f.write(theirs.read_bytes())
        with real_lock(p, *args, **kwargs):
            yield

    store = ResultStore(path)
    monkeypatch.setattr(results, "store_lock", lock_after_the_other_writer)
    with store.writing(lazy=True):
        assert store.get({"a": 1}) == {"v": "theirs"}  # found after the lock: not computed again
