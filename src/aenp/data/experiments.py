"""The experiments by name, and what training and evaluation need to know about one.

Each experiment lives next to its data: :class:`~aenp.data.gp1d.GP1D` beside
:mod:`aenp.data.gp`, :class:`~aenp.data.smoke2d.Smoke2D` beside :mod:`aenp.data.smoke`, and
:class:`~aenp.data.climate.Climate` in :mod:`aenp.data.climate`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import xarray as xr

from aenp.batch import Batch, EvaluationBatch, GridBatch
from aenp.data.climate import MIN_OBSERVED_FRACTION, Climate, Normalisation, Region
from aenp.data.gp1d import GP1D
from aenp.data.smoke2d import IN_MEMORY_BYTES, VALIDATION_FRACTION, Smoke2D
from aenp.errors import InputError

__all__ = [
    "EXPERIMENTS",
    "GP1D",
    "IN_MEMORY_BYTES",
    "MIN_OBSERVED_FRACTION",
    "VALIDATION_FRACTION",
    "Climate",
    "EvaluationBatch",
    "Experiment",
    "RegionalExperiment",
    "Smoke2D",
    "get_experiment",
]


class Experiment(Protocol):
    """What training and evaluation need to know about an experiment's data."""

    name: str
    dim_x: int
    dim_y: int
    evaluation_splits: tuple[str, ...]
    """Splits reported in the results table, in order (in-distribution first)."""
    ood_splits: tuple[str, ...]
    """Of those, the out-of-distribution ones."""
    max_num_context: int | None
    """Largest context set of a training batch of point sets, to which training pads them
    (static shapes); None for gridded experiments, whose batches have one shape already."""
    normalisation: Normalisation | None
    """How values and coordinates were mapped to the model's units, fitted on the training data
    (saved with the model, undone by prediction); None where the model sees the data as they
    are (gp1d, smoke2d)."""
    units: str
    """Units of the values in the data; empty where they have none (gp1d, smoke2d)."""
    regions: tuple[Region, Region] | None
    """The training and the out-of-distribution region on the Earth, for maps over both and the
    terrain analysis (the experiment is then a :class:`RegionalExperiment`); None where the data
    do not lie on the Earth (gp1d, smoke2d)."""

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch | GridBatch:
        """Draws a batch of fresh training tasks."""
        ...

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """A fixed, seeded split (``"val"`` or one of :attr:`evaluation_splits`)."""
        ...


class RegionalExperiment(Experiment, Protocol):
    """An experiment on the Earth: what maps of its regions and the terrain analysis need.

    An experiment whose :attr:`~Experiment.regions` are not None is one (:class:`Climate`).
    """

    normalisation: Normalisation
    regions: tuple[Region, Region]
    elevation: xr.DataArray | None
    """Surface elevation ``[lat, lon]`` (metres) of the field's cells for 4-D inputs, else
    None."""
    train_edge: float
    """The longitude where the training region meets the out-of-distribution one (figures)."""

    def figure_field(self) -> xr.DataArray:
        """The field ``[1, lat, lon]`` over both regions in the first test year (figures)."""
        ...

    def split_field(self, split: str) -> xr.DataArray:
        """A split's field ``[time, lat, lon]`` in the data's units."""
        ...


EXPERIMENTS = {"gp1d": GP1D, "smoke2d": Smoke2D, "climate": Climate}


def get_experiment(name: str, **options: Any) -> Experiment:
    """The experiment registered under ``name``, built with its ``options``."""
    if name not in EXPERIMENTS:
        raise InputError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name](**options)
