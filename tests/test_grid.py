"""What counts as a regular grid axis: one tolerance for batches and prediction alike."""

import numpy as np
import pytest
import torch

from aenp.grid import GRID_SPACING_RTOL, Grid, is_evenly_spaced


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_within_the_tolerance_count_as_even_and_beyond_it_do_not(dtype):
    def axis(departure: float) -> torch.Tensor:
        """Steps of 0.5, alternately longer and shorter by ``departure`` of a step."""
        steps = 0.5 * (1 + departure * torch.tensor([1.0, -1.0] * 4, dtype=torch.float64))
        return (3.0 + torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])).to(dtype)

    assert is_evenly_spaced(axis(0.5 * GRID_SPACING_RTOL))
    assert not is_evenly_spaced(axis(2 * GRID_SPACING_RTOL))


def test_steps_small_against_the_values_are_even_within_their_rounding():
    # Eight hourly steps 20 years into a normalised time axis: float32 rounds each step by up to
    # 1% of its length, far beyond GRID_SPACING_RTOL.
    step = 1 / (8766 * 10)
    hours = (0.9 + step * torch.arange(8, dtype=torch.float64)).to(torch.float32)
    assert not torch.allclose(hours.diff(), hours.diff().mean(), rtol=GRID_SPACING_RTOL, atol=0)
    assert is_evenly_spaced(hours)
    # A step off by a tenth is not rounding.
    assert not is_evenly_spaced(torch.cat([hours, hours[-1:] + 1.1 * step]))


def test_an_axis_must_increase():
    axis = torch.linspace(0.0, 1.0, 5)
    assert is_evenly_spaced(axis)
    assert not is_evenly_spaced(axis.flip(0))
    assert not is_evenly_spaced(torch.zeros(3))


def test_a_single_point_is_evenly_spaced():
    assert is_evenly_spaced(torch.tensor([2.5]))


def test_grid_points_are_the_product_of_the_axes_in_row_major_order():
    grid = Grid((torch.tensor([0.0, 1.0]), torch.tensor([10.0, 20.0, 30.0])))
    expected = np.array([[[x, y] for y in (10, 20, 30)] for x in (0, 1)], dtype=np.float32)
    assert grid.shape == (2, 3)
    np.testing.assert_array_equal(grid.points().numpy(), expected)
