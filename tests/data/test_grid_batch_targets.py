"""GridBatch.with_every_cell_a_target: the batch that maps a prediction over a whole grid."""

import torch

from aenp.batch import GridBatch
from aenp.testing import random_grid_batch


def test_every_cell_becomes_a_target_and_nothing_else_changes():
    batch = random_grid_batch(shape=(4, 6), dtype=torch.float64)
    elevation = torch.linspace(0, 1, 24, dtype=torch.float64).reshape(4, 6, 1)
    batch = GridBatch(batch.y, batch.context_mask, batch.target_mask, batch.axes, elevation)
    missing = torch.isnan(batch.y)
    assert bool(missing.any())
    every = batch.with_every_cell_a_target()
    assert bool(every.target_mask.all())
    assert torch.equal(every.context_mask, batch.context_mask)
    assert torch.equal(every.y[~missing], batch.y[~missing])
    assert bool((every.y[missing] == 0).all())
    assert every.axes is batch.axes and every.extra_inputs is elevation
