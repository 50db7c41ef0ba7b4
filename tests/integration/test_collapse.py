"""Collapse is a result, not an error: a chain applies every update the reference code would
(a 20× norm growth included) and records it per edit; a chain whose model ends with non-finite
weights ends as "collapsed at edit k", its later checkpoints scored at the floor, and a resumed
run of it edits nothing again. Hand calls of ``edit`` keep the package's guard."""
import math
from dataclasses import dataclass, field

import pytest
import torch

import helpers.runs.chain
from helpers.editing import EditHealthError, MethodSpec, register_method
from helpers.editing.modules import from_param_layout, get_module
from helpers.evaluation import TASKS, collapsed_examples
from helpers.model import LoadedModel
from helpers.runs import sweep
from helpers.runs.sweep import Chain
from tests.extending import capitals

pytestmark = [pytest.mark.data]


@dataclass
class ScaleHyperParams:
    """Edit ``i`` of a sequence (0-based) multiplies the matrix by ``factors[i]`` (1 past the
    list); at ``nan_at`` it writes NaN into it."""

    module: str
    factors: list = field(default_factory=list)
    nan_at: int = -1


def _scale(model, tok, requests, hp: ScaleHyperParams, state: dict) -> dict:
    i = state["edits"]
    state["edits"] += 1
    name = hp.module
    w = from_param_layout(get_module(model, name).weight.detach(), get_module(model, name)).float()
    if i == hp.nan_at:
        return {f"{name}.weight": torch.full_like(w, math.nan)}
    factor = hp.factors[i] if i < len(hp.factors) else 1.0
    return {f"{name}.weight": (factor - 1.0) * w}


SCALE = MethodSpec("SCALE", ScaleHyperParams, _scale, new_state=lambda: {"edits": 0})


def _setup(tiny_model, tmp_path, **hp):
    register_method(SCALE, replace=True)
    capitals.register()
    model, tok = tiny_model
    gpt2 = hasattr(model, "transformer")
    module = "transformer.h.1.mlp.c_proj" if gpt2 else "model.layers.1.mlp.down_proj"
    run = dict(model=LoadedModel(f"tiny-{type(model).__name__}", model, tok), tasks=["capitals"], n=None,
               hparams={"SCALE": {"module": module, **hp}}, store=tmp_path / "s.jsonl")
    return module, run


def test_a_chain_applies_a_20x_norm_growth_records_it_and_goes_on(tiny_model, tmp_path):
    model, tok = tiny_model
    module, run = _setup(tiny_model, tmp_path, factors=[1.01, 1.01, 20.0, 1.01, 1.01, 1.01])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    chain = [Chain("SCALE", 1, (0, 2, 4, 6))]
    found = sweep.run(chain, progress=False, **run)
    assert sorted(found.rows.edits.unique()) == [0, 2, 4, 6] and found.rows.collapsed_at.isna().all()
    traces = found.traces()
    growth = traces.set_index("edits").norm_growth
    assert growth[3] == pytest.approx(20 * 1.01 ** 2, rel=1e-4)  # applied, not refused
    assert growth[6] == pytest.approx(20 * 1.01 ** 5, rel=1e-4)  # and the chain went on
    # scaling a matrix scales its top singular value by the same factor
    assert traces.set_index("edits").top_singular_growth[3] == pytest.approx(20 * 1.01 ** 2, rel=1e-3)
    assert traces.finite.all() and not traces.collapsed.any()
    signals = found.measures("signals")
    assert signals.edits.tolist() == [0, 2, 4, 6] and signals.norm_growth.iloc[2] > 19
    # the stored weights of every edited checkpoint
    unit = found.units[0]
    assert all(found.store.get_tensors(unit.state_key(c)) is not None for c in (2, 4, 6))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # restored

    # by hand, the package's guard (its own safety option) refuses the same growth
    from helpers import EditRequest, edit

    req = EditRequest("The capital of Peru is", "Peru", "Lima", ground_truth="Lima", rephrase="Peru's capital is",
                      locality_prompt="The sky is", locality_answer="blue")
    with pytest.raises(EditHealthError, match="max_norm_growth"):
        edit(model, tok, req, "SCALE", {"module": module, "factors": [20.0]})
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    res = edit(model, tok, req, "SCALE", {"module": module, "factors": [20.0]}, guard=False)
    res.restore()


def test_a_nan_chain_ends_collapsed_and_resumes_without_editing_again(tiny_model, tmp_path, monkeypatch):
    model, tok = tiny_model
    module, run = _setup(tiny_model, tmp_path, factors=[1.01] * 6, nan_at=2)  # the third edit writes NaN
    chain = [Chain("SCALE", 1, (0, 2, 4, 6))]
    found = sweep.run(chain, progress=False, **run)
    rows = found.rows.set_index("edits")
    assert math.isnan(rows.loc[2].collapsed_at) and math.isfinite(rows.loc[2].gold_nll)  # measured
    assert rows.loc[4].collapsed_at == 3 and rows.loc[6].collapsed_at == 3
    assert rows.loc[4].value == 0.0 and rows.loc[6].value == 0.0  # the floor: empty answers
    vocab = model.get_output_embeddings().weight.shape[0]
    assert rows.loc[4].gold_nll == pytest.approx(math.log(vocab))
    traces = found.traces().set_index("edits")
    assert not traces.collapsed[2] and traces.collapsed[3] and traces.collapsed[6] and not traces.finite[3]
    assert traces.heldout_nll[3] == pytest.approx(math.log(vocab))
    assert found.measures("signals").set_index("edits").perplexity[4] == pytest.approx(vocab)
    assert found.measures("editing").set_index("edits").reliability[6] == 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the model was restored

    # a crash while the collapse was recorded: the last checkpoint's rows are lost
    unit = found.units[0]
    path = tmp_path / "s.jsonl"
    lost = {sweep.settings_key(unit.row_key(6, "capitals")), sweep.settings_key(unit.measure_key(6, "editing"))}
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not any(k in line for k in lost)]
    assert len(kept) < len(lines)
    path.write_text("\n".join(kept) + "\n")

    def no_edit(*a, **k):
        raise AssertionError("a collapsed chain was edited again")

    monkeypatch.setattr(helpers.runs.chain, "edit", no_edit)
    again = sweep.run(chain, progress=False, **run).rows.set_index("edits")
    assert again.loc[6].collapsed_at == 3 and again.loc[6].value == 0.0


def test_a_model_that_produces_nothing_scores_every_task_at_its_floor(smol_tokenizer):
    for task in TASKS:
        ev = collapsed_examples(smol_tokenizer, task, n=4, seed=0, vocab_size=49152)
        assert ev.row["value"] == 0.0, task
        assert ev.row["gold_nll"] == pytest.approx(math.log(49152)), task
        assert ev.records.collapsed.all() and (ev.records.output == "").all()
        if ev.records.has_labels.any():
            assert ev.row["label_acc"] == 0.0


def test_a_chain_that_ends_at_its_collapse_stops_there_without_floor_rows(tiny_model, tmp_path, monkeypatch):
    module, run = _setup(tiny_model, tmp_path, factors=[1.01] * 6, nan_at=2)  # the third edit writes NaN
    chain = [Chain("SCALE", 1, (0, 2, 4, 6), until_collapse=1.0)]
    found = sweep.run(chain, progress=False, **run)
    assert found.rows.edits.tolist() == [0, 2]  # no checkpoint past the collapse, no floor
    traces = found.traces()
    assert traces.edits.tolist() == [0, 1, 2, 3] and traces.collapsed.tolist() == [False, False, False, True]
    assert found.measures("signals").edits.tolist() == [0, 2]
    unit = found.units[0]
    assert unit.collapsed_at(found.store) == 3 and unit.last_edit(found.store) == 3 and not unit.missing(found.store)
    assert found.store.get(unit.trace_key(4)) is None

    def no_edit(*a, **k):
        raise AssertionError("an ended chain was edited again")

    monkeypatch.setattr(helpers.runs.chain, "edit", no_edit)
    assert sweep.run(chain, progress=False, **run).rows.edits.tolist() == [0, 2]


def test_a_chain_ends_at_the_first_edit_past_the_rise_the_horizon_reads(tiny_model, tmp_path, monkeypatch):
    from helpers.report import horizon

    module, run = _setup(tiny_model, tmp_path, factors=[1.01] * 6)
    # the held-out NLL after each edit, raised by a script (a tiny random model barely moves): past
    # the 1-nat rule at edit 3, back under it at 4
    script = iter([0.1, 0.5, 1.5, 0.2, 3.0, 3.0])
    real = sweep.ChainUnit._trace

    def scripted(m, tok, originals, tops):
        row = real(m, tok, originals, tops)
        return {**row, "heldout_nll": row["heldout_nll"] + next(script)}

    monkeypatch.setattr(sweep.ChainUnit, "_trace", staticmethod(scripted))
    ended = sweep.run([Chain("SCALE", 1, (0, 2, 4, 6), until_collapse=1.0)], progress=False, **run)
    traces = ended.traces()
    assert traces.edits.tolist() == [0, 1, 2, 3] and ended.rows.edits.tolist() == [0, 2]
    assert int(horizon.collapse_points(traces).collapse.iloc[0]) == 3  # the horizon's rule, read independently
    assert not traces.collapsed.any()  # ended by the rule, its weights finite
    # the same script with the rule 2 nats: past it first at edit 5
    script = iter([0.1, 0.5, 1.5, 0.2, 3.0, 3.0])
    run["store"] = tmp_path / "two.jsonl"
    two = sweep.run([Chain("SCALE", 1, (0, 2, 4, 6), until_collapse=2.0)], progress=False, **run)
    assert two.traces().edits.max() == 5 and two.rows.edits.tolist() == [0, 2, 4]

    # a store where a chain run to its length left traces past the rule: the ending chain reads them, edits nothing
    script = iter([0.1, 0.5, 1.5, 0.2, 3.0, 3.0])
    run["store"] = tmp_path / "full.jsonl"
    assert sweep.run([Chain("SCALE", 1, (0, 2, 4, 6))], progress=False, **run).traces().edits.max() == 6

    def no_edit(*a, **k):
        raise AssertionError("edited again")

    monkeypatch.setattr(helpers.runs.chain, "edit", no_edit)
    again = sweep.run([Chain("SCALE", 1, (0, 2, 4, 6), until_collapse=1.0)], progress=False, **run)
    assert again.traces().edits.max() == 3 and again.rows.edits.tolist() == [0, 2]


def test_a_chain_reads_the_tasks_only_at_its_tasks_at_and_a_fixed_chain_shares_them(tiny_model, tmp_path, monkeypatch):
    module, run = _setup(tiny_model, tmp_path, factors=[1.01] * 4)
    found = sweep.run([Chain("SCALE", 1, (0, 1, 2, 4), tasks_at=(0, 2))], progress=False, **run)
    assert found.rows.edits.tolist() == [0, 2]
    unit = found.units[0]
    assert [c for c in (1, 4) if found.store.get(unit.row_key(c, "capitals")) is not None] == []  # none computed
    assert found.measures("signals").edits.tolist() == [0, 1, 2, 4]  # the measures at every checkpoint

    def no_edit(*a, **k):
        raise AssertionError("a row the longer chain read was computed again")

    monkeypatch.setattr(helpers.runs.chain, "edit", no_edit)
    fixed = sweep.run([Chain("SCALE", 1, (0, 2))], progress=False, **run)
    assert fixed.rows.edits.tolist() == [0, 2]
    assert fixed.rows.value.tolist() == found.rows.value.tolist()
