"""RECT and its baselines: property tests (hypothesis) and hand-made cases."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import Regularizer, regularize
from helpers.errors import UnknownNameError
from helpers.editing.regularize import RegularizerError, kept_count, relative_change
from tests.numerics import assert_close

shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))
fractions = st.floats(0.01, 1.0)


@st.composite
def update_and_weight(draw, zeros_in_weight=False):
    rows, cols = draw(shapes)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(rows, cols, generator=gen)
    delta[delta.abs() < 1e-3] = 1e-3  # every element non-zero: "kept" is visible
    weight = torch.randn(rows, cols, generator=gen)
    if zeros_in_weight:
        weight[torch.rand(rows, cols, generator=gen) < 0.3] = 0.0
    return delta, weight


@settings(max_examples=200, deadline=None)
@given(update_and_weight(zeros_in_weight=True), fractions)
def test_rect_keeps_exactly_k_of_the_largest_relative_changes_unchanged(dw, k):
    delta, weight = dw
    out = regularize(delta, weight, "rect", k)
    kept = out != 0
    assert int(kept.sum()) == kept_count(delta.numel(), k)
    assert torch.equal(out[kept], delta[kept])  # values untouched
    assert not torch.isnan(out).any()
    score = relative_change(delta, weight)
    if kept.any() and (~kept).any():
        assert score[kept].min() >= score[~kept].max()  # ordered by δ
    # a changed zero weight is an infinite relative change: kept before anything finite
    inf = torch.isinf(score)
    if int(inf.sum()) <= int(kept.sum()):
        assert kept[inf].all()


@settings(max_examples=100, deadline=None)
@given(update_and_weight(), fractions, st.integers(0, 1000))
def test_random_keeps_exactly_k_and_depends_only_on_the_seed(dw, k, seed):
    delta, weight = dw
    out = regularize(delta, weight, "random", k, seed)
    kept = out != 0
    assert int(kept.sum()) == kept_count(delta.numel(), k)
    assert torch.equal(out[kept], delta[kept])
    assert torch.equal(out, regularize(delta, weight * 7, "random", k, seed))  # the weight plays no part


@settings(max_examples=50, deadline=None)
@given(update_and_weight())
def test_k_of_one_is_the_identity(dw):
    delta, weight = dw
    for how in ("none", "rect", "random"):
        assert torch.equal(regularize(delta, weight, how, 1.0), delta)


def test_rect_ties_are_broken_by_position():
    delta = torch.ones(2, 3)
    weight = torch.ones(2, 3)  # every δ = 1
    out = regularize(delta, weight, "rect", 0.5)
    assert out.flatten().tolist() == [1, 1, 1, 0, 0, 0]
    assert torch.equal(out, regularize(delta, weight, "rect", 0.5))


def test_rect_on_a_hand_made_example():
    weight = torch.tensor([[1.0, -2.0], [0.5, 8.0]])
    delta = torch.tensor([[0.125, 1.0], [-0.5, 2.0]])  # δ = 0.125, 0.5, 1.0, 0.25
    assert regularize(delta, weight, "rect", 0.5).tolist() == [[0.0, 1.0], [-0.5, 0.0]]
    assert regularize(delta, weight, "rect", 0.25).tolist() == [[0.0, 0.0], [-0.5, 0.0]]


def test_zero_weights_and_zero_updates_give_no_nan():
    weight = torch.tensor([[0.0, 0.0, 1.0]])
    delta = torch.tensor([[0.0, 3.0, 0.5]])
    assert relative_change(delta, weight).tolist() == [[0.0, float("inf"), 0.5]]
    assert regularize(delta, weight, "rect", 0.34).tolist() == [[0.0, 3.0, 0.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_is_kept(dtype):
    delta, weight = torch.randn(6, 4).to(dtype), torch.randn(6, 4).to(dtype)
    for how in ("rect", "random", "pca", "pca_lowrank"):
        out = regularize(delta, weight, how, 0.5)
        assert out.dtype == dtype and out.shape == delta.shape


def test_pca_writes_the_scores_into_the_first_k_columns_of_the_in_by_out_view():
    """The released code's PCA: on ΔWᵀ ([in, out]) with round(k·out) components, the scores in
    the first columns; the rest is zero, and the scores' total variance is the top eigenvalues'."""
    torch.manual_seed(0)
    delta = torch.randn(10, 40, dtype=torch.float64)  # [out, in]
    out = regularize(delta, torch.ones_like(delta), "pca", 0.3)
    view = out.T  # [in, out]
    assert (view[:, 3:] == 0).all() and (view[:, :3] != 0).all()
    centred = delta.T - delta.T.mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    assert view[:, :3].square().sum(0) == pytest.approx(eig[:3].tolist(), rel=1e-8)


def test_pca_lowrank_reproduces_a_rank_one_update_and_truncates_others():
    torch.manual_seed(0)
    rank_one = torch.outer(torch.randn(8), torch.randn(12))
    assert_close(regularize(rank_one, torch.ones_like(rank_one), "pca_lowrank", 0.2), rank_one)  # float32 SVD
    full = torch.randn(8, 12, dtype=torch.float64)
    low = regularize(full, torch.ones_like(full), "pca_lowrank", 0.25)  # 2 of 8 output columns
    centred = low.T - low.T.mean(0)
    assert torch.linalg.matrix_rank(centred) == 2


def test_pca_does_not_depend_on_which_gram_matrix_is_used():
    torch.manual_seed(1)
    tall, wide = torch.randn(5, 30, dtype=torch.float64), torch.randn(30, 5, dtype=torch.float64)
    for delta in (tall, wide):
        out = regularize(delta, torch.ones_like(delta), "pca_lowrank", 0.4)
        x = delta.T - delta.T.mean(0)
        u, s, vt = torch.linalg.svd(x, full_matrices=False)
        n = kept_count(delta.shape[0], 0.4)
        ref = (u[:, :n] * s[:n]) @ vt[:n] + delta.T.mean(0)
        assert torch.allclose(out.T, ref, atol=1e-8)


def test_bad_settings_are_named():
    d = torch.ones(2, 2)
    for k in (0, -0.1, 1.5, "0.4"):
        with pytest.raises(RegularizerError, match=r"k is the fraction .* \(0, 1\]"):
            regularize(d, d, "rect", k)
    with pytest.raises(UnknownNameError, match="rect"):
        regularize(d, d, "rectt", 0.4)
    with pytest.raises(RegularizerError, match=r"shape \(2, 2\) but the weight \(2, 3\)"):
        regularize(d, torch.ones(2, 3), "rect", 0.4)
    with pytest.raises(RegularizerError, match="k is the fraction"):
        Regularizer("rect", k=40)


def test_labels_use_the_papers_names():
    assert Regularizer("none").label == "Unregularized"
    assert Regularizer("rect", 0.4).label == "RECT 40%"
    assert Regularizer("random", 0.4).label == "Random 40%"
