"""Warnings for points far outside the training region or years."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from aenp.data.climate import FULL_TURN, Normalisation, decimal_years, wrap_longitude

EXTRAPOLATION_MARGIN = 0.1
"""How far outside the training region or years (in model units: a tenth of the region's half
side, or of half the training span) a point must lie for :func:`aenp.predict` to warn."""


class ExtrapolationWarning(UserWarning):
    """Points lie far outside the training region or years (filter it where that is meant)."""


def _training_extent(normalisation: Normalisation) -> dict[str, tuple[float, float]]:
    """The training region (degrees) and, if known, years, as ``{dim: (low, high)}``.

    Runs saved before the region was recorded give the box their normalisation maps to
    [-1, 1]², which holds the region.
    """
    norm = normalisation
    side = norm.coord_scale
    extent = {
        "lat": (norm.lat_origin - side, norm.lat_origin + side),
        "lon": (norm.lon_origin - side, norm.lon_origin + side),
    }
    if None not in (norm.south, norm.north, norm.west, norm.east):
        extent = {"lat": (norm.south, norm.north), "lon": (norm.west, norm.east)}
    if norm.time_origin is not None and norm.time_scale is not None:
        extent["time"] = (norm.time_origin - norm.time_scale, norm.time_origin + norm.time_scale)
    return extent


def _distance_outside(dim: str, values: np.ndarray, low: float, high: float) -> float:
    """How far the farthest value lies outside ``[low, high]`` (0 if none does).

    Longitudes go round the globe, the shorter way: ``[170, 200]`` and ``[170, -160]`` are
    both a range across the antimeridian.
    """
    if dim != "lon":
        return float(np.max(np.maximum(low - values, values - high), initial=0.0))
    half = ((high - low) % FULL_TURN) / 2
    offset = np.abs(wrap_longitude(values - (low + half)))
    return float(np.max(offset - half, initial=0.0))


def warn_if_extrapolating(frames: list[pd.DataFrame], normalisation: Normalisation) -> None:
    """Warns if rows (time, lat, lon) lie far outside the training region or years."""
    scales = {"lat": normalisation.coord_scale, "lon": normalisation.coord_scale}
    scales["time"] = normalisation.time_scale
    names = {"lat": "° beyond the training latitudes", "lon": "° beyond the training longitudes"}
    names["time"] = " years beyond the training years"
    far = []
    for dim, (low, high) in _training_extent(normalisation).items():
        columns = [frame[dim].dropna().to_numpy() for frame in frames]
        columns = [decimal_years(c) if dim == "time" else c for c in columns if len(c)]
        if not columns:
            continue
        values = np.concatenate(columns).astype(float)
        distance = _distance_outside(dim, values, low, high)
        if distance > EXTRAPOLATION_MARGIN * scales[dim]:
            far.append(f"up to {distance:.3g}{names[dim]} {low:.6g} to {high:.6g}")
    if far:
        warnings.warn(
            "predicting far outside the training data, where the model extrapolates: "
            + "; ".join(far),
            ExtrapolationWarning,
            stacklevel=3,  # the caller of predict
        )
