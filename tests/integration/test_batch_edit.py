"""A batch edited as the released editor edits it (``BaseEditor.batch_edit`` of the paper's EasyEdit
fork): the requests split into chunks of the hparams' ``batch_size``, each chunk edited on the model
the chunk before left, nothing restored in between — against one joint edit of the whole batch."""
from types import SimpleNamespace

import pytest
import torch

from helpers import EditRequest
from helpers.editing import EditSequence, apply_update, batch_chunks, edit, memit, read_hparams
from helpers.editing.hparams import HPARAMS_DIR
from tests.integration.test_memit import memit_hparams, tmp_cache  # noqa: F401 - the fixture
from tests.numerics import assert_close

REQS = [EditRequest(prompt=f"The capital of {c} is", subject=c, target_new=t, ground_truth="x", rephrase="x",
                    locality_prompt="y", locality_answer="z")
        for c, t in (("France", "Rome"), ("Japan", "Lima"), ("Peru", "Oslo"), ("Kenya", "Paris"), ("Chile", "Cairo"))]
FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "paper_hparams"


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_chunks_as_released_equal_the_released_loop(tiny_model, tmp_cache):
    """The released loop, replayed here: for each chunk of batch_size requests, compute MEMIT's
    update on the model as the chunks before left it, and add it (keep_original_weight=False:
    nothing is put back). The package's edit with batch_edit: chunks ends on the same weights."""
    model, tok = tiny_model
    hp = memit.MEMITHyperParams(**memit_hparams(model, batch_size=2, batch_edit="chunks"))
    unedited = _weights(model)
    applied = []
    try:
        for start in range(0, len(REQS), hp.batch_size):  # the released editor's _chunks
            applied.append(apply_update(model, memit.apply(model, tok, REQS[start:start + hp.batch_size], hp),
                                        method="MEMIT", max_norm_growth=None))
        released = _weights(model)
    finally:
        for r in reversed(applied):
            r.restore()
    assert len(applied) == 3  # 2 + 2 + 1
    res = edit(model, tok, REQS, "MEMIT", hp, sequence=EditSequence())
    try:
        mine = _weights(model)
    finally:
        res.restore()
    assert all(torch.equal(p, unedited[n]) for n, p in model.named_parameters())  # restore() undoes every chunk
    for name in res.deltas:
        assert_close(mine[name], released[name])
        assert_close(res.deltas[name], released[name] - unedited[name])


def test_the_two_readings_differ_on_the_same_requests(tiny_model, tmp_cache):
    model, tok = tiny_model
    chunked = edit(model, tok, REQS, "MEMIT", memit_hparams(model, batch_size=1, batch_edit="chunks"))
    chunked.restore()
    joint = edit(model, tok, REQS, "MEMIT", memit_hparams(model, batch_size=1, batch_edit="joint"))
    joint.restore()
    name = next(iter(joint.deltas))
    diff = (chunked.deltas[name] - joint.deltas[name]).norm()
    assert diff > 0.05 * joint.deltas[name].norm()  # five one-fact edits in sequence are not one solve over five


def test_the_papers_files_read_as_chunks_and_the_packages_own_as_joint():
    for method in ("MEMIT", "MEND"):
        paper = read_hparams(method, FIXTURES / method / "gpt2-xl.yaml")
        assert paper.batch_edit == "chunks" and paper.batch_size == 1
        assert [(s.start, s.stop) for s in batch_chunks(paper, 3)] == [(0, 1), (1, 2), (2, 3)]
        own = read_hparams(method, HPARAMS_DIR / method / "smollm2-135m.yaml")
        assert own.batch_edit == "joint" and [(s.start, s.stop) for s in batch_chunks(own, 3)] == [(0, 3)]
    assert read_hparams("AlphaEdit", HPARAMS_DIR / "AlphaEdit" / "gpt2-xl.yaml").batch_edit == "joint"


def test_an_unknown_reading_is_refused():
    from helpers.editing import HparamsError

    with pytest.raises(HparamsError, match="batch_edit 'both'"):
        batch_chunks(SimpleNamespace(batch_edit="both", batch_size=1), 3)


@pytest.mark.data
def test_a_batch_of_one_fact_shares_its_rows_across_the_readings():
    """One fact is one chunk under either reading: the two chains' rows have one key (computed once),
    while batches of two keep a key per reading."""
    from helpers.data import load_zsre
    from helpers.runs import sweep
    from helpers.runs.keys import settings_key

    recs = load_zsre()

    def keys(size, reading):
        unit = sweep.ChainUnit(sweep.Chain("MEMIT", size, (0, 1), setting="batch-single", batch_edit=reading), recs,
                               "smollm2-135m", ["sentiment"], 4, 0, "paper", None)
        return [settings_key(unit.row_key(1, "sentiment")), unit.batch_edit]

    (one_joint, label_joint), (one_chunks, label_chunks) = keys(1, "joint"), keys(1, "chunks")
    assert one_joint == one_chunks and (label_joint, label_chunks) == ("joint", "chunks")
    assert keys(2, "joint")[0] != keys(2, "chunks")[0]
