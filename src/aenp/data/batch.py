"""Re-exports the batch types, which live in :mod:`aenp.batch` (tolerance: :mod:`aenp.grid`)."""

from aenp.batch import Batch, GridBatch, target_loglik
from aenp.grid import GRID_SPACING_RTOL

__all__ = ["GRID_SPACING_RTOL", "Batch", "GridBatch", "target_loglik"]
