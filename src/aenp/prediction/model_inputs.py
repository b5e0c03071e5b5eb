"""Coordinates as stored (datetimes, degrees in any convention, metres) in model units."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aenp.data.climate import Normalisation, decimal_years
from aenp.errors import InputError
from aenp.prediction.inputs import INPUTS


def model_coordinate(dim: str, values: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """One input (time, lat, lon or elevation) in model units; times as datetimes or cftime."""
    if dim == "time":
        # Each distinct time once: every point of a time step shares it, and cftime is slow.
        codes, times = pd.factorize(np.asarray(values), use_na_sentinel=False)
        values = decimal_years(np.asarray(times))[codes]
    return normalisation.normalise_input(dim, np.asarray(values, dtype=float))


def model_inputs(frame: pd.DataFrame, normalisation: Normalisation, dim_x: int) -> np.ndarray:
    """Model inputs ``[n, dx]`` of rows with the columns of :data:`INPUTS`.

    Raises:
        InputError: If an input is not finite.
    """
    x = np.stack(
        [model_coordinate(d, frame[d].to_numpy(), normalisation) for d in INPUTS[dim_x]],
        axis=-1,
    )
    if not np.isfinite(x).all():
        raise InputError(
            "coordinates must be finite (NaN or infinite latitude, longitude, time or elevation)"
        )
    return x
