"""The experiments' data: training-task samplers and fixed evaluation splits, by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from aenp.data.batch import Batch, GridBatch
from aenp.data.climate import (
    FULL_TURN,
    Normalisation,
    Region,
    covering_region,
    decimal_years,
    default_data_path,
    elevation_at,
    elevation_variables,
    get_region,
    open_elevation,
    open_field,
    select_cells,
    select_region,
    select_years,
    terrain_elevation,
)
from aenp.data.gp import (
    GP1D_OOD_SHIFT,
    NUM_CONTEXT,
    TARGET_RANGE,
    GPMixture,
    gp1d_generator,
    gp1d_split,
)
from aenp.data.smoke import SmokeStore
from aenp.errors import InputError


@dataclass(frozen=True)
class EvaluationBatch:
    """A batch of evaluation tasks with, where known, the exact log-likelihoods ``[batch]``."""

    batch: Batch | GridBatch
    gt_loglik: torch.Tensor | None = None
    oracle_loglik: torch.Tensor | None = None


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

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch | GridBatch:
        """Draws a batch of fresh training tasks."""
        ...

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """A fixed, seeded split (``"val"`` or one of :attr:`evaluation_splits`)."""
        ...


class GP1D:
    """Synthetic 1-D regression from a non-stationary GP mixture (DESIGN §3 gp1d)."""

    name = "gp1d"
    dim_x = 1
    dim_y = 1
    evaluation_splits = ("test", "ood")
    ood_splits = ("ood",)
    train_range = TARGET_RANGE
    """Interval the training targets cover, marked on figures."""
    max_num_context = NUM_CONTEXT[1]
    ood_shift = GP1D_OOD_SHIFT

    def __init__(self) -> None:
        self.train_generator = gp1d_generator("train")

    def generator(self, split: str) -> GPMixture:
        """The task generator behind a split (for ground-truth predictives in figures)."""
        return gp1d_generator(split)

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch of fresh training tasks."""
        return self.train_generator.sample(batch_size, generator).batch

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """A fixed split with its exact ground truth."""
        return [
            EvaluationBatch(tasks.batch, truth.loglik, truth.oracle_loglik)
            for tasks, truth in gp1d_split(name, num_tasks, batch_size)
        ]


class Smoke2D:
    """2-D smoke plumes (DESIGN §3 smoke2d): each task is one simulated density field.

    A random fraction of the cells is context (drawn once per batch, so every task of a batch
    has as many context cells) and ``num_targets`` of the other cells are targets. The last
    :data:`VALIDATION_FRACTION` of the training simulations are held out for validation.

    Args:
        data_dir: A store written by ``aenp data smoke``.
        downsample: Average the fields over ``downsample × downsample`` blocks of cells.
        context_fraction: Range ``(low, high)`` of the fraction of cells in the context.
        num_targets: Target cells per task.
    """

    name = "smoke2d"
    max_num_context = None
    dim_x = 2
    dim_y = 1
    evaluation_splits = ("test",)
    ood_splits = ()
    domain = ((0.0, 1.0), (0.0, 1.0))
    split_seeds: ClassVar[dict[str, int]] = {"val": 2_025_001, "test": 2_025_002}

    def __init__(
        self,
        data_dir: str = "data/smoke-64",
        downsample: int = 1,
        context_fraction: tuple[float, float] = (0.05, 0.5),
        num_targets: int = 256,
    ):
        self.store = SmokeStore(data_dir)
        resolution = self.store.resolution
        if downsample < 1 or resolution % downsample:
            raise InputError(
                f"downsample must divide the store's resolution {resolution}, got {downsample}"
            )
        low, high = context_fraction
        self.resolution = resolution // downsample
        cells = self.resolution**2
        if not 0 < low <= high < 1 or round(high * cells) + num_targets > cells:
            raise InputError(
                f"context_fraction {tuple(context_fraction)} and num_targets {num_targets} do "
                f"not fit a {self.resolution}×{self.resolution} grid"
            )
        self.downsample = downsample
        self.context_fraction = (low, high)
        self.num_targets = num_targets
        num_train = self.store.density("train").shape[0]
        self.num_validation = max(1, round(VALIDATION_FRACTION * num_train))
        centres = (torch.arange(self.resolution) + 0.5) / self.resolution
        self.axes = (centres, centres)
        self._in_memory: dict[str, np.ndarray] = {}

    def _fields(self, split: str, indices: Sequence[int]) -> torch.Tensor:
        """Density fields ``[n, res, res]`` of the given simulations.

        A split small enough (:data:`IN_MEMORY_BYTES`) is read once and kept in memory;
        a larger one is read lazily, only the chunks a batch needs.
        """
        array = self.store.density(split)
        if split not in self._in_memory and array.nbytes <= IN_MEMORY_BYTES:
            self._in_memory[split] = np.asarray(array[:])
        source = self._in_memory.get(split, array)
        unique, inverse = np.unique(np.asarray(indices), return_inverse=True)
        fields = torch.from_numpy(np.asarray(source[unique.tolist()]))
        if self.downsample > 1:
            fields = F.avg_pool2d(fields[:, None], self.downsample)[:, 0]
        return fields[torch.from_numpy(inverse)]

    def _tasks(self, fields: torch.Tensor, generator: torch.Generator) -> GridBatch:
        """Random context and target cells over each field."""
        batch_size, cells = fields.shape[0], self.resolution**2
        low, high = self.context_fraction
        fraction = low + (high - low) * torch.rand((), generator=generator).item()
        num_context = max(1, round(fraction * cells))
        order = torch.argsort(torch.rand(batch_size, cells, generator=generator), dim=1)
        roles = torch.zeros(batch_size, cells, dtype=torch.long)
        roles.scatter_(1, order[:, :num_context], 1)
        roles.scatter_(1, order[:, num_context : num_context + self.num_targets], 2)
        shape = (batch_size, self.resolution, self.resolution)
        return GridBatch(
            fields[..., None], (roles == 1).view(shape), (roles == 2).view(shape), self.axes
        )

    def sample_train(self, batch_size: int, generator: torch.Generator) -> GridBatch:
        """Draws a batch of tasks from the training simulations (validation ones excluded)."""
        num_train = self.store.density("train").shape[0] - self.num_validation
        indices = torch.randint(num_train, (batch_size,), generator=generator).tolist()
        return self._tasks(self._fields("train", indices), generator)

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """Fixed, seeded tasks of a split.

        ``"val"`` comes from the held-out training simulations and ``"test"`` from the test
        simulations, cycling through them if ``num_tasks`` exceeds their number.
        """
        if name not in self.split_seeds:
            raise InputError(
                f"unknown smoke2d split {name!r}; valid: {', '.join(self.split_seeds)}"
            )
        if name == "val":
            first = self.store.density("train").shape[0] - self.num_validation
            source, pool = "train", range(first, first + self.num_validation)
        else:
            source, pool = "test", range(self.store.density("test").shape[0])
        generator = torch.Generator().manual_seed(self.split_seeds[name])
        items = []
        for start in range(0, num_tasks, batch_size):
            indices = [
                pool[i % len(pool)] for i in range(start, min(start + batch_size, num_tasks))
            ]
            items.append(EvaluationBatch(self._tasks(self._fields(source, indices), generator)))
        return items


class Climate:
    """Real gridded temperature (DESIGN §3 climate): tasks are patches of a field.

    A task is a ``patch × patch`` block of cells (2-D inputs: latitude, longitude) at one time
    step, or a ``window × patch × patch`` block of consecutive time steps (3-D inputs: time,
    latitude, longitude; 4-D inputs add each cell's surface elevation, an extra input of the
    grid). The tasks of a batch share the patch's location (so they share one grid) and
    differ in time. A random fraction (drawn per batch) of the observed cells is
    context and the other observed cells (or ``max_targets`` of them) are targets, as many in
    every task of the batch; missing cells (NaN) are neither. Values and coordinates are
    normalised with :attr:`normalisation`, fitted to the training data (one scale for both
    spatial axes, so translations are not distorted).

    Splits: training and ``val`` in the training region (in ``train_years`` and ``val_years``),
    ``test`` in the training region in ``test_years`` (in distribution), ``ood`` in the OOD
    region in ``test_years``.

    Args:
        data: A netCDF file or zarr store; None: the offline default
            (:func:`aenp.data.climate.default_data_path`).
        variable: The data variable; None picks the only gridded one.
        dims: 2 (lat, lon), 3 (time, lat, lon) or 4 (time, lat, lon, elevation).
        elevation: For ``dims`` 4: a file holding a surface elevation field (see
            :func:`aenp.data.climate.open_elevation`), interpolated to the data's cells, or
            ``"terrain"`` for the built-in global terrain map
            (:func:`aenp.data.climate.terrain_elevation`); None: the data file's own elevation
            variable if it has one, else the terrain map.
        train_region: Region name or "south,north,west,east" box for training and ``test``
            (``west > east``: a box across the antimeridian, e.g. "-20,20,150,-110").
        ood_region: Region for the ``ood`` split.
        train_years: Inclusive years of the training split.
        val_years: Inclusive years of the validation split.
        test_years: Inclusive years of ``test`` and ``ood``.
        patch: Cells per side of a patch (at most the smaller region's size).
        window: Consecutive time steps per task when ``dims`` is 3.
        context_fraction: Range ``(low, high)`` of the fraction of observed cells in the context.
        max_targets: At most this many target cells per task (a random subset of the other
            observed cells); None: all of them.
    """

    name = "climate"
    max_num_context = None
    dim_y = 1
    evaluation_splits = ("test", "ood")
    ood_splits = ("ood",)
    split_seeds: ClassVar[dict[str, int]] = {"val": 2_026_001, "test": 2_026_002, "ood": 2_026_003}

    def __init__(
        self,
        data: str | None = None,
        variable: str | None = None,
        dims: int = 2,
        elevation: str | None = None,
        train_region: str = "na_west",
        ood_region: str = "na_east",
        train_years: tuple[int, int] = (1860, 2039),
        val_years: tuple[int, int] = (2040, 2059),
        test_years: tuple[int, int] = (2060, 2099),
        patch: int = 24,
        window: int = 8,
        context_fraction: tuple[float, float] = (0.05, 0.5),
        max_targets: int | None = None,
    ):
        if dims not in (2, 3, 4):
            raise InputError(
                "dims must be 2 (lat, lon), 3 (time, lat, lon) or 4 (time, lat, lon, "
                f"elevation), got {dims}"
            )
        low, high = context_fraction
        if not 0 < low <= high < 1:
            raise InputError(
                f"context_fraction must satisfy 0 < low <= high < 1, got {context_fraction}"
            )
        if max_targets is not None and max_targets < 1:
            raise InputError(f"max_targets must be at least 1 or None, got {max_targets}")
        path = default_data_path() if data is None else data
        field = open_field(path, variable)
        self.max_targets = max_targets
        self.dim_x = dims
        self.patch = patch
        self.window = window if dims >= 3 else 1
        self.context_fraction = (low, high)
        self.field = field
        self.elevation = _field_elevation(path, field, elevation) if dims == 4 else None
        """Surface elevation ``[lat, lon]`` (metres) of the field's cells, for 4-D inputs."""
        self.regions = (get_region(train_region), get_region(ood_region))
        self.test_years = tuple(test_years)
        train = select_years(select_region(field, train_region), train_years)
        self.normalisation = Normalisation.fit(
            train, None if self.elevation is None else select_region(self.elevation, train_region)
        )
        self.fields = {
            "train": train,
            "val": select_years(select_region(field, train_region), val_years),
            "test": select_years(select_region(field, train_region), test_years),
            "ood": select_years(select_region(field, ood_region), test_years),
        }
        for split, part in self.fields.items():
            _, num_lat, num_lon = part.shape
            if min(num_lat, num_lon) < patch or part.sizes["time"] < self.window:
                raise InputError(
                    f"the {split} split has {part.sizes['time']} time step(s) of "
                    f"{num_lat}×{num_lon} cells, too few for patches of {patch}×{patch} cells "
                    f"and {self.window} time step(s); lower patch or window"
                )
        self._values_cache: dict[str, np.ndarray] = {}
        self._corners_cache: dict[str, np.ndarray] = {}
        self._elevation_cache: dict[str, torch.Tensor] = {}

    @property
    def figure_region(self) -> Region:
        """The smallest box holding the training and OOD regions (figures)."""
        return covering_region("figure", *self.regions)

    @property
    def train_edge(self) -> float:
        """The longitude where the training region meets the OOD one, as in figure_field."""
        west = self.figure_region.lon[0]
        (train_west, train_east), (ood_west, _) = (r.lon_span(west) for r in self.regions)
        return train_east if train_east <= ood_west else train_west

    def figure_field(self) -> xr.DataArray:
        """The field ``[1, lat, lon]`` over both regions in the first test year (figures).

        Longitudes increase from the west edge of :attr:`figure_region`, past 180° if it
        crosses the antimeridian (see :func:`aenp.data.climate.select_region`).
        """
        years = select_years(self.field, (self.test_years[0], self.test_years[0]))
        return select_region(years.isel(time=[0]), self.figure_region).load()

    def _values(self, split: str) -> np.ndarray:
        """Normalised values ``[time, lat, lon]`` of a split (NaN where missing), cached."""
        if split not in self._values_cache:
            values = self.fields[split].values.astype(np.float32)
            self._values_cache[split] = self.normalisation.normalise_values(values)
        return self._values_cache[split]

    def _corners(self, split: str) -> np.ndarray:
        """Patch corners ``[n, 2]`` (lat, lon) whose cells are observed at least half the time.

        Raises:
            ValueError: If no patch of the split is.
        """
        if split not in self._corners_cache:
            observed = np.isfinite(self._values(split)).mean(axis=0) >= MIN_OBSERVED_FRACTION
            sums = np.pad(observed.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            p = self.patch
            counts = sums[p:, p:] - sums[:-p, p:] - sums[p:, :-p] + sums[:-p, :-p]
            corners = np.argwhere(counts >= MIN_OBSERVED_FRACTION * p * p)
            if not len(corners):
                raise InputError(
                    f"no {p}×{p} patch of the {split} split has at least "
                    f"{MIN_OBSERVED_FRACTION:.0%} of its cells observed; lower patch"
                )
            self._corners_cache[split] = corners
        return self._corners_cache[split]

    def _axes(self, split: str, time: int, lat: int, lon: int) -> tuple[torch.Tensor, ...]:
        """Normalised coordinates of the patch starting at (time, lat, lon)."""
        part = self.fields[split]
        lat_deg = part["lat"].values[lat : lat + self.patch]
        lon_deg = part["lon"].values[lon : lon + self.patch]
        x_lat, x_lon = self.normalisation.normalise_coords(lat_deg, lon_deg)
        # Model longitudes turn over opposite the training region's centre; a patch across
        # that line (far out of distribution) is kept continuous.
        x_lon = np.unwrap(x_lon, period=FULL_TURN / self.normalisation.coord_scale)
        axes = [torch.as_tensor(x_lat), torch.as_tensor(x_lon)]
        if self.dim_x >= 3:
            years = self.normalisation.normalise_time(
                decimal_years(part)[time : time + self.window]
            )
            # Evenly spaced from the first step (months of unequal length are equal steps).
            step = np.diff(years).mean() if self.window > 1 else 1.0
            axes.insert(0, torch.as_tensor(years[0] + step * np.arange(self.window)))
        return tuple(a.to(torch.get_default_dtype()) for a in axes)

    def _extra_inputs(self, split: str, lat: int, lon: int) -> torch.Tensor | None:
        """Normalised elevation ``[window, patch, patch, 1]`` of a patch (4-D inputs only)."""
        if self.elevation is None:
            return None
        if split not in self._elevation_cache:
            metres = select_cells(self.elevation, self.fields[split]).values
            z = self.normalisation.normalise_input("elevation", metres)
            self._elevation_cache[split] = torch.as_tensor(z, dtype=torch.get_default_dtype())
        block = self._elevation_cache[split][lat : lat + self.patch, lon : lon + self.patch]
        return block[None, ..., None].expand(self.window, *block.shape, 1)

    def _tasks(self, split: str, batch_size: int, generator: torch.Generator) -> GridBatch:
        """A batch of tasks at one random patch location and random times."""
        values = self._values(split)
        num_time = values.shape[0]
        corners = self._corners(split)
        lat, lon = map(int, corners[int(torch.randint(len(corners), (), generator=generator))])
        starts = torch.randint(num_time - self.window + 1, (batch_size,), generator=generator)
        blocks = np.stack(
            [
                values[t : t + self.window, lat : lat + self.patch, lon : lon + self.patch]
                for t in starts.tolist()
            ]
        )
        y = torch.from_numpy(blocks if self.dim_x >= 3 else blocks[:, 0])
        # Every task gets as many context and target cells (so point-set models see equal
        # sets): cells are ranked at random, missing ones last.
        observed = torch.isfinite(y).flatten(1)
        num_observed = int(observed.sum(1).min())
        low, high = self.context_fraction
        fraction = low + (high - low) * torch.rand((), generator=generator).item()
        num_context = min(max(1, round(fraction * num_observed)), num_observed - 1)
        num_used = num_observed
        if self.max_targets is not None:
            num_used = min(num_observed, num_context + self.max_targets)
        scores = torch.rand(observed.shape, generator=generator) + (~observed).float()
        rank = torch.argsort(torch.argsort(scores, dim=1), dim=1)
        context = (rank < num_context).view(y.shape)
        target = ((rank >= num_context) & (rank < num_used)).view(y.shape)
        return GridBatch(
            torch.nan_to_num(y)[..., None].to(torch.get_default_dtype()),
            context,
            target,
            self._axes(split, int(starts[0]), lat, lon),
            self._extra_inputs(split, lat, lon),
        )

    def sample_train(self, batch_size: int, generator: torch.Generator) -> GridBatch:
        """Draws a batch of training tasks."""
        return self._tasks("train", batch_size, generator)

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """Fixed, seeded tasks of ``val``, ``test`` or ``ood``."""
        if name not in self.split_seeds:
            raise InputError(
                f"unknown climate split {name!r}; valid: {', '.join(self.split_seeds)}"
            )
        generator = torch.Generator().manual_seed(self.split_seeds[name])
        return [
            EvaluationBatch(self._tasks(name, min(batch_size, num_tasks - start), generator))
            for start in range(0, num_tasks, batch_size)
        ]


def _field_elevation(path, field: xr.DataArray, source: str | None) -> xr.DataArray:
    """Surface elevation (metres) at a field's cells; 0 (sea level) where it is missing.

    Args:
        path: The field's file, searched for an elevation variable when ``source`` is None.
        field: The field ``[time, lat, lon]``.
        source: An elevation file, ``"terrain"``, or None (see :class:`Climate`).

    Raises:
        ValueError: If the elevation is missing at a cell where the field is observed.
    """
    lat, lon = field["lat"].values, field["lon"].values
    if source is None:
        source = str(path) if elevation_variables(path) else "terrain"
    if source == "terrain":
        return terrain_elevation(lat, lon)
    elevation = open_elevation(source)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    values = elevation_at(elevation, grid_lat, grid_lon, allow_missing=True)
    observed = np.isfinite(field.values).any(axis=0)
    missing = int((~np.isfinite(values[observed])).sum())
    if missing:
        raise InputError(
            f"the elevation from {source} is missing at {missing} observed cell(s) of the data"
        )
    return xr.DataArray(
        np.nan_to_num(values),
        coords={"lat": lat, "lon": lon},
        dims=("lat", "lon"),
        name="elevation",
    )


MIN_OBSERVED_FRACTION = 0.5
"""Least share of observed (finite) cells of a climate patch, averaged over time."""
VALIDATION_FRACTION = 0.1
"""Share of the smoke training simulations held out for validation."""
IN_MEMORY_BYTES = 2**30
"""Largest split of a smoke store that is read into memory at once (1 GiB)."""

EXPERIMENTS = {"gp1d": GP1D, "smoke2d": Smoke2D, "climate": Climate}


def get_experiment(name: str, **options: Any) -> Experiment:
    """The experiment registered under ``name``, built with its ``options``."""
    if name not in EXPERIMENTS:
        raise InputError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name](**options)
