import math

import pytest
import torch

from aenp.models.likelihood import HeteroscedasticNormal


def test_std_is_the_floor_plus_softplus_of_the_raw_spread():
    raw = [-1e4, -30.0, -1.0, 0.0, 0.5, 3.0, 40.0]
    mean = [float(i) for i in range(len(raw))]
    # One task, dy = 2: the features of each target are (mean, mean, raw, raw).
    z = torch.tensor([[[m, m, r, r] for m, r in zip(mean, raw, strict=True)]], dtype=torch.float64)
    pred = HeteroscedasticNormal(min_std=0.01)(z)
    expected = torch.tensor([0.01 + math.log1p(math.exp(r)) for r in raw], dtype=torch.float64)
    assert pred.mean.shape == pred.stddev.shape == (1, len(raw), 2)
    for d in range(2):
        torch.testing.assert_close(pred.mean[0, :, d], torch.tensor(mean, dtype=torch.float64))
        torch.testing.assert_close(pred.stddev[0, :, d], expected, rtol=1e-12, atol=0)
    # A very negative spread leaves exactly the floor.
    assert pred.stddev[0, 0, 0].item() == 0.01


def test_mean_and_spread_halves_are_not_swapped():
    z = torch.tensor([[[1.0, 2.0, -3.0, 4.0]]], dtype=torch.float64)
    pred = HeteroscedasticNormal(min_std=0.5)(z)
    torch.testing.assert_close(pred.mean, torch.tensor([[[1.0, 2.0]]], dtype=torch.float64))
    expected = [0.5 + math.log1p(math.exp(-3.0)), 0.5 + math.log1p(math.exp(4.0))]
    torch.testing.assert_close(pred.stddev, torch.tensor([[expected]], dtype=torch.float64))


@pytest.mark.parametrize("min_std", [0.0, -1e-3, math.nan])
def test_non_positive_floor_is_refused(min_std):
    with pytest.raises(ValueError, match="min_std must be positive"):
        HeteroscedasticNormal(min_std)
