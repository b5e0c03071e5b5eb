"""Prediction from files to a file: what ``aenp predict`` runs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import xarray as xr

from aenp.data.climate import TIME_NAMES, open_elevation, open_field
from aenp.data.climate.io import open_dataset
from aenp.errors import InputError, MissingFileError
from aenp.files import atomic_write
from aenp.prediction.inputs import station_frame
from aenp.prediction.predictor import predict
from aenp.prediction.preparation import DEFAULT_CHUNK_SIZE
from aenp.prediction.store import check_out
from aenp.prediction.streaming import DEFAULT_BLOCK_SIDE, DEFAULT_BLOCK_TIME, predict_to_zarr


def predict_files(
    run_dir: str | os.PathLike,
    context: str | os.PathLike,
    targets: str | os.PathLike,
    out: str | os.PathLike,
    variable: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    elevation: str | os.PathLike | None = None,
    block_time: int = DEFAULT_BLOCK_TIME,
    block_side: int = DEFAULT_BLOCK_SIDE,
) -> Path:
    """:func:`predict` from files to a file (what ``aenp predict`` runs).

    ``context`` and ``targets`` are CSV tables (stations) or netCDF/zarr grids; ``out`` is
    written as netCDF (``.nc``), zarr (``.zarr``) or CSV (``.csv``, for CSV targets) by its
    suffix, with :func:`aenp.files.atomic_write`: an existing file is only replaced by a
    complete one, and an existing folder is never replaced. A zarr store is written block by
    block (``block_time`` time steps by ``block_side`` cells a side) by
    :func:`~aenp.prediction.streaming.predict_to_zarr`, reading the context a block at a time,
    and resumes where an interrupted run stopped. ``out`` is checked before predicting.
    ``elevation`` (4-D models) is an elevation file (see
    :func:`aenp.data.climate.open_elevation`) or ``"terrain"``.

    Raises:
        InputError: If ``out`` has another suffix, one unlike the targets' kind (a table for
            CSV targets, else a grid), or is an existing folder; for an unreadable file; or as
            :func:`predict`.
        MissingFileError: If an input file, or the folder that should hold ``out``, is missing.
    """
    out = Path(out)
    writers = {
        ".nc": lambda result, path: result.to_netcdf(path),
        ".csv": lambda result, path: result.to_csv(path, index=False),
    }
    suffixes = [".nc", ".zarr", ".csv"]
    if out.suffix not in suffixes:
        raise InputError(f"--out must end in {', '.join(suffixes)}, got {out}")
    table = Path(targets).suffix == ".csv"
    if table != (out.suffix == ".csv"):
        kind = "a table (CSV targets): use .csv" if table else "a grid: use .nc or .zarr"
        raise InputError(f"the prediction will be {kind} for --out, got {out}")
    if elevation is not None:
        elevation = "terrain" if str(elevation) == "terrain" else open_elevation(elevation)
    if out.suffix == ".zarr":
        check_out(out)
        return predict_to_zarr(
            run_dir,
            _read_table_or_grid(context, variable),
            _read_table_or_grid(targets, None, values=False),
            out,
            chunk_size=chunk_size,
            block_time=block_time,
            block_side=block_side,
            elevation=elevation,
        )
    # Entering atomic_write checks out's folder before the prediction, which may take long.
    with atomic_write(out) as tmp:
        result = predict(
            run_dir,
            _read_table_or_grid(context, variable),
            _read_table_or_grid(targets, None, values=False),
            chunk_size=chunk_size,
            elevation=elevation,
        )
        writers[out.suffix](result, tmp)
    return out


def _read_table_or_grid(
    path: str | os.PathLike, variable: str | None, values: bool = True
) -> pd.DataFrame | xr.DataArray | xr.Dataset:
    """A CSV file as a DataFrame, or a netCDF/zarr grid (its field, or just its coordinates).

    ``values``: the file is the context (a CSV needs a value column), not the targets.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no file at {path}")
    if path.suffix == ".csv":
        return _read_table(path, values)
    if values:
        return open_field(path, variable)
    return open_dataset(path)


def _read_table(path: Path, values: bool) -> pd.DataFrame:
    """A CSV table of stations (``values``) or target points, checked so errors name the file."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{path} is empty; expected a CSV table: a header (e.g. lat,lon,value) and one row "
            "per point"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path} as a CSV table: {error}") from error
    for column in table.columns:
        if str(column).lower() in TIME_NAMES:
            try:
                table[column] = table[column].astype("datetime64[ns]")
            except (ValueError, TypeError) as error:
                raise InputError(
                    f"{path}: column {column!r} must hold dates such as 2020-07-01: {error}"
                ) from error
    station_frame(table, need_value=values, what=str(path))
    return table
