"""Comparisons at the scale float32 arithmetic can promise, on any CPU.

Two float32 computations of one quantity (another summation order, SIMD width, thread count or
batch padding) agree to a few units of 2⁻²⁴ ≈ 6e-8 *relative to the magnitudes they sum*, not
relative to each element of the result: an element a thousand times smaller than the largest can
differ in its every digit on another machine. So a float32 result is compared against the scale of
the whole quantity — the largest |element| of the expected value (or a scale the test names) —
never element by element, and never with an absolute tolerance that silently assumes a scale.

``FLOAT32`` (1e-4 of the scale) is the default: sums of thousands of terms through a few layers
stay below ~1e-5 of the scale; every deviation these tests pin (a wrong hook site, α = k/m, a
missing term, a shifted position) moves results by 1e-2 of the scale or more.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT32 = 1e-4


def scaled_difference(actual, expected, scale=None) -> float:
    """max |actual − expected| / scale, where scale defaults to max |expected| (both in float64)."""
    a = torch.as_tensor(actual).detach().to(torch.float64)
    e = torch.as_tensor(expected).detach().to(torch.float64)
    assert a.shape == e.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    if not a.numel():
        return 0.0
    s = float(e.abs().max()) if scale is None else float(scale)
    if s == 0.0:
        s = 1.0  # an all-zero expected value: compare absolutely
    return float((a - e).abs().max()) / s


def close(actual, expected, rel: float = FLOAT32, scale=None) -> bool:
    """Whether ``actual`` equals ``expected`` to ``rel`` of the scale (see the module's docstring)."""
    return scaled_difference(actual, expected, scale) <= rel


def assert_close(actual, expected, rel: float = FLOAT32, scale=None, what: str = "") -> None:
    """Assert ``actual`` equals ``expected`` to ``rel`` of the scale, saying by how much it does not."""
    d = scaled_difference(actual, expected, scale)
    assert d <= rel, f"{what + ': ' if what else ''}max |difference| is {d:.3g} of the scale (allowed {rel:g})"


def _value_lists(actual: Sequence[float], expected: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Both lists as float64 tensors without the places where both are NaN, and what is wrong
    with their lengths or NaNs ("" when nothing)."""
    a = torch.tensor([float(x) for x in actual], dtype=torch.float64)
    e = torch.tensor([float(x) for x in expected], dtype=torch.float64)
    if a.shape != e.shape:
        return a, e, f"{len(a)} values vs {len(e)}"
    if not (a.isnan() == e.isnan()).all():
        return a, e, "NaN in one list only"
    keep = ~(a.isnan() & e.isnan())
    return a[keep], e[keep], ""


def assert_values_close(actual: Sequence[float], expected: Sequence[float], rel: float = FLOAT32,
                        what: str = "") -> None:
    """Lists of float32-computed values (NLLs, log-probabilities): NaN where both are NaN."""
    a, e, wrong = _value_lists(actual, expected)
    assert not wrong, f"{what}: {wrong}"
    assert_close(a, e, rel, what=what)


def values_close(actual: Sequence[float], expected: Sequence[float], rel: float = FLOAT32) -> bool:
    """Whether two lists of float32-computed values agree as ``assert_values_close`` asks."""
    a, e, wrong = _value_lists(actual, expected)
    return not wrong and close(a, e, rel)
