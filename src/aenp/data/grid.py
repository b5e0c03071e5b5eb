"""Re-exports :class:`Grid`, which lives in :mod:`aenp.grid`."""

from aenp.grid import Grid

__all__ = ["Grid"]
