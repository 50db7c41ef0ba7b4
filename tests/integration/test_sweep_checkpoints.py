"""What a chain measures at its checkpoints besides the tasks (collapse signals, editing
performance), PRUNE in a chain, and checkpoints read from stored states without editing again."""
import weakref

import pytest
import torch

import helpers.editing.prune
import helpers.runs.chain
import helpers.runs.sweep
from helpers import Prune
from helpers.runs.sweep import Chain, checkpoint_measures
from tests.integration.test_sweep import TASKS, _hp, _run
from tests.numerics import assert_values_close, values_close

pytestmark = [pytest.mark.data]


def _measures(model_tok, chain_list, measure, store, **kw):
    model, tok = model_tok
    from helpers.model import LoadedModel

    return checkpoint_measures(chain_list, measure, LoadedModel("tiny", model, tok), TASKS, n=2, seed=0,
                               hparams=_hp(model), store=store, **kw)


def test_signals_and_editing_performance_are_stored_at_every_checkpoint(tiny_deep_model, tmp_path):
    store = tmp_path / "s.jsonl"
    chain = [Chain("ROME", 1, (0, 1, 3))]
    _run(tiny_deep_model, chain, store=store)
    signals = _measures(tiny_deep_model, chain, "signals", store)
    assert signals.edits.tolist() == [0, 1, 3]
    first = signals.iloc[0]
    assert first.norm_growth == 1.0 and first.condition_growth == 1.0 and first.perplexity > 1
    assert (signals.norm_growth.iloc[1:] != 1.0).all() and (signals.perplexity.iloc[1:] != first.perplexity).all()
    windows = _measures(tiny_deep_model, chain, "signals", store, records=True)
    assert set(windows.columns) >= {"window", "nll_sum", "tokens", "edits"} and windows.tokens.min() > 0
    editing = _measures(tiny_deep_model, chain, "editing", store)
    assert editing.edits.tolist() == [1, 3] and editing.n.tolist() == [1, 3]
    per_record = _measures(tiny_deep_model, chain, "editing", store, records=True)
    assert len(per_record) == 4 and per_record.reliability.between(0, 1).all()
    # locality compares with the unedited model: every value a share
    assert per_record.locality.between(0, 1).all()


def test_missing_measures_are_read_from_the_stored_states_without_editing(tiny_deep_model, tmp_path, monkeypatch):
    store = tmp_path / "s.jsonl"
    chain = [Chain("ROME", 1, (0, 2, 4))]
    _run(tiny_deep_model, chain, store=store)
    lines = store.read_text().splitlines()
    kept = [l for l in lines if '"side_effects_signals"' not in l or '"edits": []' in l]
    assert len(kept) < len(lines)
    store.write_text("\n".join(kept) + "\n")

    def no_edit(*a, **k):
        raise AssertionError("a checkpoint with stored weights was edited again")

    monkeypatch.setattr(helpers.runs.chain, "edit", no_edit)
    # nothing is edited, so nothing is read ahead for an edit either (no templates, no statistics)
    monkeypatch.setattr(helpers.runs.chain, "prepare", no_edit)
    _run(tiny_deep_model, chain, store=store)
    assert _measures(tiny_deep_model, chain, "signals", store).edits.tolist() == [0, 2, 4]


def test_a_prune_chain_edits_unrestrained_and_is_read_restrained(tiny_deep_model, tmp_path, monkeypatch):
    """With PRUNE's restraint replaced by "drop the whole update", the chain's checkpoints read
    as the unedited model, while the stored weights (where the next edit starts) are edited."""
    model, _ = tiny_deep_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    monkeypatch.setattr(helpers.editing.prune, "restrain", lambda delta, original, reduce="log": torch.zeros_like(delta))
    store = tmp_path / "p.jsonl"
    rows = _run(tiny_deep_model, [Chain("ROME", 1, (0, 1, 2), Prune())], store=store)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    cols = ["task", "value", "gold_nll"]
    at0 = rows[rows.edits == 0][cols].reset_index(drop=True)
    for count in (1, 2):
        got = rows[rows.edits == count][cols].reset_index(drop=True)
        assert got.task.equals(at0.task)
        assert_values_close(got.gold_nll, at0.gold_nll)
    signals = _measures(tiny_deep_model, [Chain("ROME", 1, (0, 1, 2), Prune())], "signals", store)
    assert signals.norm_growth.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert rows.chain.iloc[0] == "ROME + PRUNE (instance-sequential)"
    # the unregularised chain of the same records shares nothing but the unedited rows
    plain = _run(tiny_deep_model, [Chain("ROME", 1, (0, 2))], store=store)
    assert not values_close(plain[plain.edits == 2].gold_nll, at0.gold_nll)


def test_rescue_chains_edit_the_same_records_counted_in_facts():
    from helpers.runs.sweep import SweepError, rescue_chains

    grid = rescue_chains([["ROME", 1, "none"], ["rome", 1, "rect", 0.4], ["ROME", 1, "prune"], ["r-rome", 1, "none"],
                          ["MEMIT", 5, "none"], ["alphaedit", 5, "none"]], [0, 25, 50], seed=3, orderings=2)
    assert len(grid) == 12 and {c.seed for c in grid} == {3, 4}
    first = grid[:6]
    assert [c.variant for c in first] == ["ROME", "ROME + RECT 40%", "ROME + PRUNE", "R-ROME", "MEMIT", "AlphaEdit"]
    assert [c.checkpoints for c in first] == [(0, 25, 50)] * 4 + [(0, 5, 10)] * 2
    assert first[4].setting == "batch-sequential" and first[0].setting == "instance-sequential"
    with pytest.raises(SweepError, match="multiples of 5"):
        rescue_chains([["MEMIT", 5, "none"]], [0, 12])
    with pytest.raises(SweepError, match="one fact at a time"):
        Chain("R-ROME", 2)


def test_the_horizons_chains_and_their_downstream_chains_edit_the_same_records():
    from helpers.data import load_zsre
    from helpers.report import horizon
    from helpers.runs.sweep import ChainUnit, SweepError

    # 110 edits: past the length where a seeded sample of n records stops being a prefix of a longer one
    grid = horizon.horizon_chains([["ROME", 1, "none"], ["ROME", 1, "rect", 0.4], ["ROME", 1, "prune"]],
                                  {"ROME": 110}, seed=0, orderings=1, tasks_at=[0, 20])
    assert [c.checkpoints for c in grid] == [(0, 1, 2, 4, 8, 16, 20, 32, 64, 110)] * 3  # 20 added
    assert [c.tasks_at for c in grid] == [(0, 20)] * 3 and [c.draw for c in grid] == [110] * 3
    assert [c.until_collapse for c in grid] == [horizon.COLLAPSE_RISE, horizon.COLLAPSE_RISE, None]  # PRUNE runs on
    fixed = horizon.downstream_chains(grid, 20)
    assert [c.checkpoints for c in fixed] == [(0, 20)] * 3 and all(c.until_collapse is None for c in fixed)
    records = load_zsre()
    for long, short in zip(grid, fixed):
        args = (records, "smollm2-135m", ["sentiment"], 2, 0, "paper", None)
        a, b = ChainUnit(long, *args), ChainUnit(short, *args)
        assert b.batches == a.batches[:20] and b.row_key(20, "sentiment") == a.row_key(20, "sentiment")
    undrawn = ChainUnit(Chain("ROME", 1, (0, 20)), records, "smollm2-135m", ["sentiment"], 2, 0, "paper", None)
    assert undrawn.batches != ChainUnit(grid[0], records, "smollm2-135m", ["sentiment"], 2, 0, "paper", None).batches[:20]
    with pytest.raises(SweepError, match="until_collapse"):
        horizon.horizon_chains([["ROME", 1, "none"]], 8, until_collapse=0.5)
    with pytest.raises(SweepError, match="tasks_at"):
        Chain("ROME", 1, (0, 4), tasks_at=(0, 3))


@pytest.mark.parametrize("method", ["MEMIT", "ROME"])
def test_a_chain_resumed_in_a_fresh_process_edits_as_the_uninterrupted_one(tiny_deep_model, tmp_path, monkeypatch,
                                                                             method):
    """ROME's and MEMIT's context templates (sampled from the model) and key statistics are read
    once per process. A chain resumed from its stored edited weights in a new process (a rerun
    after a crash, a Ray worker) reads them off the unedited model before it jumps, so its next
    edit is the uninterrupted chain's (read off the edited model, MEMIT's statistics of layer 1
    and both methods' templates would change)."""
    from helpers.editing import key_stats, rome
    from helpers.model import LoadedModel
    from helpers.runs.sweep import side_effects
    from tests.integration.test_memit import memit_hparams
    from tests.integration.test_rome import tiny_hparams

    model, tok = tiny_deep_model
    sampled = {"context_templates": None, "context_template_length_params": [[5, 5]]}
    hp = {"MEMIT": {**memit_hparams(model), **sampled},
          "ROME": {**tiny_hparams(model, mom2_adjustment=True, mom2_n_samples=6), **sampled}}[method]
    hp = {method: hp}

    def fresh_process(cache: str):  # nothing in memory, nothing on disk
        monkeypatch.setenv("EDITHURT_CACHE", str(tmp_path / cache))
        monkeypatch.setattr(key_stats, "_MEMORY", {})
        monkeypatch.setattr(rome, "_TEMPLATES", weakref.WeakKeyDictionary())

    def run(checkpoints, store):
        return side_effects([Chain(method, 1, checkpoints)], LoadedModel("tiny", model, tok), TASKS, n=2, seed=0,
                            hparams=hp, progress=False, store=tmp_path / store)

    fresh_process("first")
    whole = run((0, 1, 2), "whole.jsonl")
    fresh_process("second")
    run((0, 1), "resumed.jsonl")
    fresh_process("third")
    edits = []
    real_edit = helpers.runs.chain.edit
    monkeypatch.setattr(helpers.runs.chain, "edit", lambda *a, **k: edits.append(1) or real_edit(*a, **k))
    resumed = run((0, 1, 2), "resumed.jsonl")
    assert len(edits) == 1  # the second edit only: the first is the stored state
    at2 = [t[t.edits == 2].sort_values("task").reset_index(drop=True) for t in (whole, resumed)]
    assert at2[0].value.tolist() == at2[1].value.tolist()
    assert_values_close(at2[1].gold_nll, at2[0].gold_nll)
