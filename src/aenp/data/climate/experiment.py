"""The climate experiment: tasks are patches of a real gridded field."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import xarray as xr

from aenp.batch import EvaluationBatch, GridBatch
from aenp.data.climate.cf import decimal_years
from aenp.data.climate.chunks import (
    CACHE_BYTES,
    BlockCache,
    ChunkReader,
    float32_bytes,
    is_lazy,
    observed_fraction,
    patch_windows,
    require_small_chunks,
)
from aenp.data.climate.default_data import default_data_path
from aenp.data.climate.io import (
    FieldSource,
    describe_source,
    elevation_variables,
    open_elevation,
    open_field,
)
from aenp.data.climate.longitude import FULL_TURN
from aenp.data.climate.normalisation import Normalisation
from aenp.data.climate.regions import (
    Region,
    covering_region,
    get_region,
    select_cells,
    select_region,
    select_years,
)
from aenp.data.climate.terrain import elevation_at, terrain_elevation
from aenp.errors import InputError

MIN_OBSERVED_FRACTION = 0.5
"""Least share of observed (finite) cells of a climate patch, averaged over time."""
MAX_IN_MEMORY_BYTES = 2**30
"""Default bound (float32 bytes) of a field held in memory; a larger one stays lazy."""


class Climate:
    """Real gridded temperature (docs/architecture.md, climate): tasks are patches of a field.

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

    Fields larger than memory: a field whose float32 values fit ``max_in_memory_bytes`` is
    loaded whole and sampled from memory. A larger one stays lazy, every split of it (so
    memory stays bounded whatever the sizes of the splits), and is read chunk by chunk: its
    normalisation in one pass over blocks of time, its valid patches from the observed
    fraction of each cell over at most 64 evenly spaced steps
    (:func:`~aenp.data.climate.chunks.observed_fraction`), and each batch from one block of
    whole time chunks over the patch's chunks, through an LRU cache of ``cache_bytes``
    (:class:`~aenp.data.climate.chunks.ChunkReader`). Either way the same seed gives the same
    tasks; a lazy split's tasks differ from those the same split would give in memory.

    Args:
        data: A netCDF file or zarr store (read lazily, in its own chunks), or a Dataset or
            DataArray already opened; None: the offline default
            (:func:`aenp.data.climate.default_data_path`).
        variable: The data variable; None picks the only gridded one.
        dims: 2 (lat, lon), 3 (time, lat, lon) or 4 (time, lat, lon, elevation).
        elevation: For ``dims`` 4: a file (or Dataset) holding a surface elevation field (see
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
        max_in_memory_bytes: Load the field if its float32 values take at most this many
            bytes; a larger one stays lazy (and must be stored in chunks of at most
            :data:`~aenp.data.climate.chunks.MAX_CHUNK_BYTES`). 0: keep a file lazy; None:
            load the field whatever its size. A field given in memory stays there.
        cache_bytes: Bound of the cache of blocks read from lazy splits, all splits together.
        progress: Show progress bars while lazy splits are read (normalisation, valid
            patches).
        normalisation: The normalisation fitted to this training split before (a trained
            model's, which evaluation reuses); None fits it, a full pass over a lazy split.
    """

    name = "climate"
    max_num_context = None
    dim_y = 1
    evaluation_splits = ("test", "ood")
    ood_splits = ("ood",)
    split_seeds: ClassVar[dict[str, int]] = {"val": 2_026_001, "test": 2_026_002, "ood": 2_026_003}

    def __init__(
        self,
        data: FieldSource | None = None,
        variable: str | None = None,
        dims: int = 2,
        elevation: FieldSource | None = None,
        train_region: str = "na_west",
        ood_region: str = "na_east",
        train_years: tuple[int, int] = (1860, 2039),
        val_years: tuple[int, int] = (2040, 2059),
        test_years: tuple[int, int] = (2060, 2099),
        patch: int = 24,
        window: int = 8,
        context_fraction: tuple[float, float] = (0.05, 0.5),
        max_targets: int | None = None,
        max_in_memory_bytes: int | None = MAX_IN_MEMORY_BYTES,
        cache_bytes: int = CACHE_BYTES,
        progress: bool = True,
        normalisation: Normalisation | None = None,
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
        if (max_in_memory_bytes is not None and max_in_memory_bytes < 0) or cache_bytes < 0:
            raise InputError(
                "max_in_memory_bytes must be at least 0 or None and cache_bytes at least 0, "
                f"got {max_in_memory_bytes} and {cache_bytes}"
            )
        self.max_in_memory_bytes = max_in_memory_bytes
        self.progress = progress
        path = default_data_path() if data is None else data
        field = self._loaded_if_small(open_field(path, variable))
        self.max_targets = max_targets
        self.dim_x = dims
        self.patch = patch
        self.window = window if dims >= 3 else 1
        self.context_fraction = (low, high)
        self.field = field
        self.elevation = _field_elevation(path, field, elevation, progress) if dims == 4 else None
        """Surface elevation ``[lat, lon]`` (metres) of the field's cells, for 4-D inputs."""
        self.regions = (get_region(train_region), get_region(ood_region))
        """The training and the out-of-distribution region."""
        self.test_years = tuple(test_years)
        splits = {
            "train": (train_region, train_years),
            "val": (train_region, val_years),
            "test": (train_region, test_years),
            "ood": (ood_region, test_years),
        }
        self.fields = {
            split: select_years(select_region(field, region), years)
            for split, (region, years) in splits.items()
        }
        self.normalisation = normalisation or Normalisation.fit(
            self.fields["train"],
            None if self.elevation is None else select_region(self.elevation, train_region),
            progress=progress,
        )
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
        self._readers: dict[str, ChunkReader] = {}
        self._block_cache = BlockCache(cache_bytes)

    def _loaded_if_small(self, field: xr.DataArray) -> xr.DataArray:
        """The field, loaded if its float32 values fit :attr:`max_in_memory_bytes`.

        A field given in memory stays there.
        """
        limit = self.max_in_memory_bytes
        if limit is None or float32_bytes(field) <= limit:
            return field.compute()
        return require_small_chunks(field) if is_lazy(field) else field

    @property
    def units(self) -> str:
        """Units of the field's values (its ``units`` attribute; empty if it has none)."""
        return self.field.attrs.get("units", "")

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

    def split_field(self, split: str) -> xr.DataArray:
        """A split's field ``[time, lat, lon]`` in the data's units (lazy if too large).

        Raises:
            ValueError: Unless ``split`` is ``train``, ``val``, ``test`` or ``ood``.
        """
        if split not in self.fields:
            raise InputError(f"unknown climate split {split!r}; valid: {', '.join(self.fields)}")
        return self.fields[split]

    def _values(self, split: str) -> np.ndarray:
        """Normalised values ``[time, lat, lon]`` of a split in memory (NaN where missing)."""
        if split not in self._values_cache:
            values = self.fields[split].values.astype(np.float32)
            self._values_cache[split] = self.normalisation.normalise_values(values)
        return self._values_cache[split]

    def _corners(self, split: str) -> np.ndarray:
        """Patch corners ``[n, 2]`` (lat, lon) whose cells are observed at least half the time.

        The time a lazy split's cells are observed is estimated from a sample of steps
        (:func:`~aenp.data.climate.chunks.observed_fraction`).

        Raises:
            ValueError: If no patch of the split is.
        """
        if split not in self._corners_cache:
            fraction = observed_fraction(self.fields[split], progress=self.progress)
            observed = fraction >= MIN_OBSERVED_FRACTION
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
                decimal_years(part["time"][time : time + self.window])
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

    def _reader(self, split: str) -> ChunkReader:
        """The reader of a lazy split's windows, sharing one cache with the other splits."""
        if split not in self._readers:
            self._readers[split] = ChunkReader(
                self.fields[split],
                self.window,
                self.normalisation.normalise_values,
                self._block_cache,
            )
        return self._readers[split]

    def _tasks(self, split: str, batch_size: int, generator: torch.Generator) -> GridBatch:
        """A batch of tasks at one random patch location and random times."""
        corners = self._corners(split)
        lat, lon = map(int, corners[int(torch.randint(len(corners), (), generator=generator))])
        if is_lazy(self.fields[split]):
            starts, blocks = self._reader(split).sample(lat, lon, self.patch, batch_size, generator)
        else:
            values = self._values(split)
            num_starts = values.shape[0] - self.window + 1
            starts = torch.randint(num_starts, (batch_size,), generator=generator).tolist()
            blocks = patch_windows(values, starts, lat, lon, self.window, self.patch)
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
            self._axes(split, starts[0], lat, lon),
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


def _field_elevation(
    path: FieldSource, field: xr.DataArray, source: FieldSource | None, progress: bool
) -> xr.DataArray:
    """Surface elevation (metres) at a field's cells; 0 (sea level) where it is missing.

    Args:
        path: The field's source, searched for an elevation variable when ``source`` is None.
        field: The field ``[time, lat, lon]``.
        source: An elevation file or Dataset, ``"terrain"``, or None (see :class:`Climate`).
        progress: Show a progress bar while a lazy field's observed cells are found.

    Raises:
        ValueError: If the elevation is missing at a cell where the field is observed (of a
            lazy field, at one of the steps :func:`~aenp.data.climate.chunks.observed_fraction`
            reads).
    """
    lat, lon = field["lat"].values, field["lon"].values
    if source is None:
        source = path if elevation_variables(path) else "terrain"
    if isinstance(source, str) and source == "terrain":
        return terrain_elevation(lat, lon)
    elevation = open_elevation(source)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    values = elevation_at(elevation, grid_lat, grid_lon, allow_missing=True)
    observed = observed_fraction(field, progress=progress) > 0
    missing = int((~np.isfinite(values[observed])).sum())
    if missing:
        raise InputError(
            f"the elevation from {describe_source(source)} is missing at {missing} observed "
            "cell(s) of the data"
        )
    return xr.DataArray(
        np.nan_to_num(values),
        coords={"lat": lat, "lon": lon},
        dims=("lat", "lon"),
        name="elevation",
    )
