"""aenp: approximately equivariant neural processes.

The public surface: :func:`build_model` (registry of neural processes), :func:`approximate`
and :func:`strictly_equivariant` (the fixed-input mechanism), :func:`save` / :func:`load`,
:class:`Batch`, :func:`predict` (xarray or pandas in and out, in physical units), and the
:mod:`aenp.testing` helpers.
"""

from aenp import testing
from aenp.data.batch import Batch, GridBatch
from aenp.models.io import load, save
from aenp.models.registry import build_model, model_keys, model_name
from aenp.nn.fixed_inputs import FixedInputs, approximate, strictly_equivariant
from aenp.prediction import predict

__version__ = "0.1.0"

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
