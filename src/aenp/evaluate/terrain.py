"""Where an approximate climate model departs from equivariance, against the terrain.

The paper expects the fixed inputs of a model of real temperature to act where the field is
not stationary: over mountains and coasts. :func:`departure_by_terrain` measures it: the
per-cell departure ``|μ − μ_strict|`` over the training region in the test years, set against
the surface elevation and its slope.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from aenp.data.climate import observed_mask, select_cells, terrain_elevation
from aenp.data.experiments import Experiment, RegionalExperiment
from aenp.errors import InputError, InputTypeError
from aenp.evaluate.metrics import departure_from_equivariance, is_approximate
from aenp.models.neural_process import NeuralProcess
from aenp.prediction import ExtrapolationWarning, predict

HIGH_GROUND = 1500.0
"""Cells above this elevation (m) count as mountains."""
LOW_GROUND = 500.0
"""Cells below this elevation (m) count as lowlands."""


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long samples (ties get their mean rank)."""
    ranks = pd.DataFrame({"a": np.ravel(a), "b": np.ravel(b)}).rank()
    return float(np.corrcoef(ranks["a"], ranks["b"])[0, 1])


def _predicted_mean(
    model: NeuralProcess, context, truth, experiment: RegionalExperiment
) -> np.ndarray:
    """The model's predictive mean at the cells of ``truth``, in the data's units."""
    options = {"progress": False, "elevation": experiment.elevation}
    return predict(model, context, truth, experiment.normalisation, **options)["mean"].values


def departure_by_terrain(
    model: NeuralProcess,
    experiment: Experiment,
    every: int = 4,
    fraction: float = 0.3,
    seed: int = 0,
) -> dict[str, float]:
    """How the departure of an approximate model from equivariance follows the terrain.

    For one test year in ``every``, a random ``fraction`` of the training region's cells is the
    context and every cell a target; the departure of a cell is ``|μ − μ_strict|`` (in the
    data's units) averaged over those years. A 2-D model sees one year; 3-D and 4-D models see
    it as a window of one step. The elevation is the experiment's own for 4-D inputs, else the
    terrain map's cell means (:func:`aenp.data.climate.terrain_elevation`); the slope is the
    elevation's gradient magnitude in metres per cell.

    Args:
        model: An approximate model trained on ``experiment``.
        experiment: An experiment on the Earth (a
            :class:`~aenp.data.experiments.RegionalExperiment`, such as climate).
        every: Use one test year in this many.
        fraction: Share of the cells in the context.
        seed: Seed of the context cells.

    Returns:
        ``mean``, ``high`` and ``low`` (mean departure over all cells, cells above
        :data:`HIGH_GROUND` and below :data:`LOW_GROUND`; NaN where there are none), and the
        Spearman correlations ``elevation`` and ``slope`` of the per-cell departure.

    Raises:
        TypeError: If the experiment's data do not lie on the Earth (its ``regions`` are None).
        ValueError: If the model has no fixed inputs (it cannot depart from equivariance).
    """
    if experiment.regions is None:
        raise InputTypeError(
            "departure_by_terrain needs an experiment on the Earth (with regions, such as "
            f"climate), got {experiment.name}, whose data have no terrain"
        )
    if not is_approximate(model):
        raise InputError("the model has no fixed inputs: it cannot depart from equivariance")
    field = experiment.split_field("test")
    if experiment.elevation is not None:
        metres = select_cells(experiment.elevation, field).values
    else:
        metres = terrain_elevation(field["lat"].values, field["lon"].values).values
    rng = np.random.default_rng(seed)
    departures = []
    with warnings.catch_warnings():
        # The test years lie beyond the training years on purpose.
        warnings.simplefilter("ignore", ExtrapolationWarning)
        for step in range(0, field.sizes["time"], every):
            truth = field.isel(time=[step])
            context = truth.where(rng.random(truth.shape) < fraction)
            departure = departure_from_equivariance(
                model, context, truth, experiment, mean=_predicted_mean
            )
            departures.append(departure.reshape(metres.shape))
    departure = np.mean(departures, axis=0)
    # Reduced chunk by chunk: the test split may be larger than memory.
    observed = observed_mask(field).any("time").values
    departure, slope = departure[observed], np.hypot(*np.gradient(metres))[observed]
    metres = metres[observed]

    def over(cells: np.ndarray) -> float:
        return float(departure[cells].mean()) if cells.any() else float("nan")

    return {
        "mean": float(departure.mean()),
        "high": over(metres > HIGH_GROUND),
        "low": over(metres < LOW_GROUND),
        "elevation": spearman(departure, metres),
        "slope": spearman(departure, slope),
    }


def terrain_table(rows: dict[str, dict[str, float]], units: str) -> str:
    """Markdown table of :func:`departure_by_terrain` results, one row per model name."""
    lines = [
        f"| model | mean departure ({units}) | above {HIGH_GROUND:.0f} m | below "
        f"{LOW_GROUND:.0f} m | Spearman with elevation | with slope |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['mean']:.3f} | {r['high']:.3f} | {r['low']:.3f} | "
            f"{r['elevation']:+.2f} | {r['slope']:+.2f} |"
        )
    return "\n".join(lines)
