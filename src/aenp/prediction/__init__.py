"""Prediction for scientists: xarray or pandas in, predictive mean and std in physical units out.

The context is a gridded field (an xarray DataArray or one-variable Dataset; NaN cells are
unobserved) or station observations (a pandas DataFrame with ``lat``, ``lon``, optionally
``time``, and one value column). The targets are a grid (any DataArray or Dataset with latitude
and longitude, and time for 3-D models; its values are ignored) or a DataFrame of coordinates.
Coordinates are recognised in the same conventions as :func:`aenp.data.climate.open_field`
(ERA5, WFDE5, WeatherBench2, 0-360 longitudes, descending latitudes), and the result carries
exactly the targets' own coordinates.

A 2-D model (inputs lat, lon) treats every time step of the context as one task; a 3-D model
(time, lat, lon) conditions on the whole context at once, as does a 4-D model (time, lat, lon,
elevation), which also needs the surface elevation of every point: an ``elevation`` column of
a DataFrame, else the ``elevation`` argument (a field in metres, or ``"terrain"`` for the
built-in terrain map, averaged over the cells of a grid). Point-set models (the transformer
NPs) take the targets in chunks, with a progress bar, so a large target grid never needs memory
for all of them at once. Convolutional models, trained on gridded data, predict on the target
grid itself, which must have the training data's cell size: the context is placed on its
nearest cells (points off the grid are left out, with a warning), and tasks go through in
chunks. Predicting far outside the training region or years gives a warning. A prediction
larger than memory goes to a zarr store block by block, resumably
(:func:`~aenp.prediction.streaming.predict_to_zarr`, or ``out=`` of :func:`predict`).

One step per module: :mod:`~aenp.prediction.inputs` (context and targets from xarray or
pandas), :mod:`~aenp.prediction.model_inputs` (coordinates in model units),
:mod:`~aenp.prediction.elevation`, :mod:`~aenp.prediction.extrapolation`, the two inference
strategies :mod:`~aenp.prediction.points` and :mod:`~aenp.prediction.gridded`,
:mod:`~aenp.prediction.output`, :mod:`~aenp.prediction.preparation` (the model and options),
:mod:`~aenp.prediction.predictor` (:func:`predict`), :mod:`~aenp.prediction.io` (files), and
for predictions written block by block :mod:`~aenp.prediction.reader` (the context, a region
at a time), :mod:`~aenp.prediction.store` (the resumable store) and
:mod:`~aenp.prediction.streaming` (:func:`~aenp.prediction.streaming.predict_to_zarr`).
"""

from aenp.prediction.elevation import Elevation
from aenp.prediction.extrapolation import EXTRAPOLATION_MARGIN, ExtrapolationWarning
from aenp.prediction.gridded import CELL_SIZE_RTOL
from aenp.prediction.inputs import COORDINATE_COLUMNS, GRID_DIMS, INPUTS
from aenp.prediction.io import predict_files
from aenp.prediction.predictor import predict
from aenp.prediction.preparation import DEFAULT_CHUNK_SIZE, load_predictor
from aenp.prediction.streaming import DEFAULT_BLOCK_SIDE, DEFAULT_BLOCK_TIME, predict_to_zarr

__all__ = [
    "CELL_SIZE_RTOL",
    "COORDINATE_COLUMNS",
    "DEFAULT_BLOCK_SIDE",
    "DEFAULT_BLOCK_TIME",
    "DEFAULT_CHUNK_SIZE",
    "EXTRAPOLATION_MARGIN",
    "GRID_DIMS",
    "INPUTS",
    "Elevation",
    "ExtrapolationWarning",
    "load_predictor",
    "predict",
    "predict_files",
    "predict_to_zarr",
]
