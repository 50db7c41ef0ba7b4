"""Every stored result keeps its key across refactors: the keys the package makes for a set of
chains (each method, regularisers, overrides, both protocols) equal those recorded before the
method and task registries and the one chain runner replaced the tables they were built from
(``tests/fixtures/store_keys.json``). A change that alters a key recomputes stored results, and
must say so by raising a revision, not by accident."""
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.data]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_keys.json"


def _keys() -> dict:
    from helpers.data import load_zsre
    from helpers.editing import Prune, Regularizer
    from helpers.editing.keys import edit_key
    from helpers.evaluation import scoring_key
    from helpers.runs import sweep
    from helpers.runs.keys import settings_key

    recs = load_zsre()
    chains = [sweep.Chain("ROME", 1, (0, 1, 5)), sweep.Chain("MEMIT", 10, (0, 1), setting="batch-single"),
              sweep.Chain("MEMIT", 2, (0, 1, 3), setting="batch-sequential", seed=1), sweep.Chain("KN", 1, (0, 2)),
              sweep.Chain("MEND", 1, (0, 3)), sweep.Chain("R-ROME", 1, (0, 2)), sweep.Chain("AlphaEdit", 1, (0, 2)),
              sweep.Chain("ROME", 1, (0, 2), Regularizer("rect", 0.4)), sweep.Chain("ROME", 1, (0, 2), Prune()),
              sweep.Chain("MEMIT", 1, (0, 2), Regularizer("random", 0.4, seed=3))]
    out = {}
    for c in chains:
        for hp in (None, {"v_lr": 0.3} if c.method in ("ROME", "MEMIT", "R-ROME", "AlphaEdit") else None):
            u = sweep.ChainUnit(c, recs, "smollm2-135m", ["sentiment", "ner", "closed_qa"], 40, 0, "paper", hp)
            rows, states = u.settings()
            out[f"{c.label} {hp}"] = [settings_key(s) for s in rows + states]
    for m in ("ROME", "MEMIT", "KN", "MEND", "R-ROME", "AlphaEdit"):
        out[f"edit {m}"] = settings_key(edit_key(m, None, "smollm2-135m"))
        out[f"edit {m} gpt2-xl"] = settings_key(edit_key(m, None, "gpt2-xl"))
    for p in ("paper", "released"):
        out[f"task {p}"] = settings_key({"task": "ner", **scoring_key(p, "ner")})
    return out


def _revisions() -> dict:
    from helpers.editing import method_spec

    return {m: method_spec(m).revision for m in ("ROME", "MEMIT", "KN", "MEND", "R-ROME", "AlphaEdit")}


def _method_of(key: str) -> str | None:
    """The method a recorded key belongs to (its chain label or ``edit <method>``); None for task keys."""
    for m in sorted(_revisions(), key=len, reverse=True):
        if key.startswith(f"edit {m} ") or key == f"edit {m}" or key.startswith(f"{m} ") or key.startswith(f"{m} ("):
            return m
    return None


def test_every_stored_key_is_the_one_recorded_unless_its_method_was_revised():
    """A key may change only with its method's revision (docs/results.md: a stored result of another
    revision is recomputed, never mixed in). Re-record after a revision with
    ``python -m tests.integration.test_store_keys``."""
    recorded = json.loads(FIXTURE.read_text())
    now = _keys()
    assert set(now) == set(recorded["keys"])
    revisions = _revisions()
    for key, value in recorded["keys"].items():
        method = _method_of(key)
        if method is None or revisions[method] == recorded["revisions"][method]:
            assert now[key] == value, f"{key}: its key changed without a new revision of {method or 'the tasks'}"
        else:
            assert now[key] != value, f"{key}: {method}'s revision changed but its key did not"


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps({"revisions": _revisions(), "keys": _keys()}, indent=1, sort_keys=True) + "\n")
