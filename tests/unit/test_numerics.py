"""tests/numerics.py: float32 results compared at the scale of the whole quantity."""
import math

import pytest
import torch

from tests.numerics import assert_close, assert_values_close, close, values_close


def test_rounding_of_a_small_element_passes_where_elementwise_tolerance_fails():
    """The KN failure: an element 1e4 times smaller than the largest differs in its last bits."""
    expected = torch.tensor([1e-3, 1e-7, -5e-4])
    actual = expected + torch.tensor([1e-10, 5e-8, -2e-10])  # 50% of the small element, 5e-5 of the scale
    assert not torch.allclose(actual, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())
    assert_close(actual, expected)


def test_a_deviation_of_a_hundredth_of_the_scale_fails_with_its_size():
    expected = torch.linspace(-1, 1, 10)
    with pytest.raises(AssertionError, match="0.02 of the scale"):
        assert_close(expected + 0.02 * (torch.arange(10) == 3), expected, what="layer 0")
    assert not close(expected * 1.01, expected)
    assert close(torch.zeros(3), torch.zeros(3))  # all zero: compared absolutely


def test_value_lists_pair_nans_and_compare_at_their_scale():
    assert_values_close([10.0, math.nan, 2.0], [10.0005, math.nan, 2.0])  # 5e-5 of 10
    assert values_close([], [])
    assert values_close([math.nan], [math.nan])
    assert not values_close([1.0, math.nan], [1.0, 2.0])  # NaN on one side only
    assert not values_close([1.0], [1.0, 2.0])
    assert not values_close([10.0, 2.0], [10.0, 2.01])
    with pytest.raises(AssertionError, match="NaN in one list only"):
        assert_values_close([math.nan], [1.0])
