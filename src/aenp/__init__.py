"""aenp: approximately equivariant neural processes.

The public surface: :func:`build_model` (registry of neural processes), :func:`approximate`
and :func:`strictly_equivariant` (the fixed-input mechanism), :func:`save` / :func:`load`,
:class:`Batch`, :func:`predict` (xarray or pandas in and out, in physical units), and the
:mod:`aenp.testing` helpers.
"""

import importlib
from typing import TYPE_CHECKING, Any

from aenp import testing
from aenp.batch import Batch, GridBatch
from aenp.models.io import load, save
from aenp.models.registry import build_model, model_keys, model_name
from aenp.nn.fixed_inputs import FixedInputs, approximate, strictly_equivariant
from aenp.version import __version__

if TYPE_CHECKING:
    from aenp.prediction import predict


_LAZY = {"predict": "aenp.prediction"}
"""Names whose modules load pandas and xarray, imported on first use so ``import aenp`` is light."""

__all__ = [
    "Batch",
    "FixedInputs",
    "GridBatch",
    "__version__",
    "approximate",
    "build_model",
    "load",
    "model_keys",
    "model_name",
    "predict",
    "save",
    "strictly_equivariant",
    "testing",
]


def __getattr__(name: str) -> Any:
    """Imports a name of :data:`_LAZY` on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'aenp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, the lazy ones included."""
    return sorted(set(globals()) | set(__all__))
