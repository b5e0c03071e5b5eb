"""Longitude is periodic: wrapping to [-180, 180), moving by whole turns, the shortest arc."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

FULL_TURN = 360.0
"""Degrees of longitude around the globe."""
CELL_TOLERANCE = 1e-6
"""Degrees within which two cell centres are the same cell (far below any grid spacing)."""

ArrayT = TypeVar("ArrayT")


def wrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes (any convention, e.g. 0-360) as float64 degrees in [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def on_branch(lon: ArrayT, start: float) -> ArrayT:
    """Longitudes moved by whole turns into ``[start, start + 360)``.

    Those already there come back bit for bit (unlike with :func:`wrap_longitude`).
    """
    return lon - FULL_TURN * ((lon - start) // FULL_TURN)


def unwrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes moved by whole turns onto the shortest arc holding them all.

    The arc starts after the widest gap between neighbouring longitudes around the globe, so
    a grid stored as 150..180 and -180..-110 becomes 150..250. Longitudes in [-180, 180)
    whose widest gap is the one across 180° (every grid that does not cross it, and global
    grids) come back bit for bit.

    Args:
        lon: Degrees east, any convention and order, ``[n]``.

    Returns:
        Float64 degrees ``[n]`` in ``[west, west + 360)``, in the input's order.
    """
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size == 0:
        return lon
    ordered = np.unique(on_branch(lon, -180.0))
    gaps = np.diff(ordered, append=ordered[0] + FULL_TURN)
    # The gap across 180° wins ties (to rounding), so ordinary grids keep their longitudes.
    widest = len(gaps) - 1 if gaps[-1] >= gaps.max() - CELL_TOLERANCE else int(np.argmax(gaps))
    return on_branch(lon, ordered[(widest + 1) % len(ordered)])
