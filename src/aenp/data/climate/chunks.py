"""Reading a lazy (dask-backed) field a chunk-aligned block at a time, never all of it at once.

A field too large for memory stays lazy (see :class:`~aenp.data.climate.Climate`'s
``max_in_memory_bytes``). Three tools read it in pieces that follow its chunks:
:func:`time_blocks` cuts the time axis at chunk boundaries, :func:`observed_fraction` maps how
often each cell is observed from a sample of time steps, and :class:`ChunkReader` serves the
windows of a batch from one block, read once over the patch's chunks and kept in an LRU cache
bounded in bytes (:class:`BlockCache`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from aenp.errors import InputError

OBSERVED_SAMPLE_STEPS = 64
"""Time steps (evenly spaced) over which :func:`observed_fraction` maps a lazy field."""
CACHE_BYTES = 256 * 2**20
"""Default bound of a :class:`ChunkReader`'s cache of blocks, in bytes."""
BLOCK_BYTES = 64 * 2**20
"""Least float32 bytes a streaming pass reads at once (fewer, larger reads; ARCO-ERA5, for one,
stores one time step per chunk)."""
MAX_CHUNK_BYTES = 2**30
"""Largest chunk (float32 bytes) of a lazy field: it is read a chunk at a time."""


def is_lazy(da: xr.DataArray) -> bool:
    """Whether a field's values are still to be read (dask-backed), not held in memory."""
    return da.chunks is not None


def float32_bytes(da: xr.DataArray) -> int:
    """Bytes the field's values take in float32, as the climate experiment holds them."""
    return 4 * da.size


def require_small_chunks(da: xr.DataArray) -> xr.DataArray:
    """Returns a lazy field whose chunks take at most :data:`MAX_CHUNK_BYTES` each.

    Raises:
        ValueError: If a chunk is larger (a netCDF variable stored contiguously, such as a
            netCDF3 file's, is one chunk), saying how to store the field in smaller ones.
    """
    largest = dict(zip(da.dims, (max(sizes) for sizes in da.chunks), strict=True))
    if 4 * math.prod(largest.values()) > MAX_CHUNK_BYTES:
        raise InputError(
            f"field {da.name!r} is stored in chunks of up to {largest} cells, over "
            f"{MAX_CHUNK_BYTES / 2**20:.0f} MiB each, and a field too large for memory is "
            "read a chunk at a time; store it in chunks of a few MB, e.g. "
            "xr.open_dataset(path, chunks={'time': 24}).to_zarr('field.zarr') or "
            "nccopy -c time/24,lat/128,lon/128 in.nc out.nc"
        )
    return da


def as_slice(index: np.ndarray) -> np.ndarray | slice:
    """Consecutive indices as a slice, the others as they are.

    A lazy field read by a slice keeps its chunks aligned with its store, and reads far faster
    than by an index array.
    """
    if len(index) and (np.diff(index) == 1).all():
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def time_blocks(da: xr.DataArray, min_steps: int = 1) -> list[slice]:
    """The time axis of a lazy field cut at chunk boundaries into blocks of whole chunks.

    Consecutive chunks are merged until a block holds at least ``min_steps`` steps; a shorter
    remainder at the end joins the block before it.

    Returns:
        Slices of the time axis, in order, covering it once.
    """
    bounds = np.cumsum((0, *da.chunksizes["time"]))
    blocks, start = [], 0
    for stop in bounds[1:].tolist():
        if stop - start >= min_steps:
            blocks.append(slice(start, stop))
            start = stop
    if start < bounds[-1]:
        first = blocks.pop().start if blocks else 0
        blocks.append(slice(first, int(bounds[-1])))
    return blocks


def streaming_blocks(da: xr.DataArray) -> list[slice]:
    """:func:`time_blocks` of at least :data:`BLOCK_BYTES` each, for one pass over a field."""
    step_bytes = float32_bytes(da.isel(time=0))
    return time_blocks(da, min_steps=max(1, -(-BLOCK_BYTES // step_bytes)))


def observed_fraction(
    da: xr.DataArray, max_steps: int = OBSERVED_SAMPLE_STEPS, progress: bool = False
) -> np.ndarray:
    """Share of time steps at which each cell is observed (finite), ``[lat, lon]``.

    A field in memory counts all its steps. A lazy field counts at most ``max_steps`` evenly
    spaced steps (the first and the last among them), read one time chunk at a time: a coarse
    map that costs a few chunk reads per cell, not a pass over the field.
    """
    if not is_lazy(da):
        return np.isfinite(da.values).mean(axis=0)
    num_time = da.sizes["time"]
    steps = np.unique(np.linspace(0, num_time - 1, min(num_time, max_steps)).round().astype(int))
    counts = np.zeros((da.sizes["lat"], da.sizes["lon"]), dtype=np.int64)
    by_block = [steps[(steps >= b.start) & (steps < b.stop)] for b in time_blocks(da)]
    by_block = [inside for inside in by_block if len(inside)]
    for inside in tqdm(by_block, desc="observed cells", unit="chunk", disable=not progress):
        counts += np.isfinite(da.isel(time=inside).values).sum(axis=0)
    return counts / len(steps)


def patch_windows(
    values: np.ndarray, starts: list[int], lat: int, lon: int, window: int, patch: int
) -> np.ndarray:
    """Windows ``[batch, window, patch, patch]`` of ``values [time, lat, lon]`` at a patch.

    The windows start at each of ``starts`` (time) and at cell ``(lat, lon)``.
    """
    return np.stack([values[t : t + window, lat : lat + patch, lon : lon + patch] for t in starts])


class BlockCache:
    """Arrays by key, at most ``max_bytes`` in all; the least recently used go first.

    An array larger than the bound is returned but not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._arrays: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._arrays)

    def get(self, key: Hashable, read: Callable[[], np.ndarray]) -> np.ndarray:
        """The array kept under ``key``, else ``read()``, kept while the bound allows."""
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        array = read()
        if array.nbytes <= self.max_bytes:
            self._arrays[key] = array
            self.nbytes += array.nbytes
            while self.nbytes > self.max_bytes:
                self.nbytes -= self._arrays.popitem(last=False)[1].nbytes
        return array


class ChunkReader:
    """Windows of a lazy field ``[time, lat, lon]`` for batches of tasks, read block by block.

    The time axis is cut into blocks of whole chunks holding at least ``window`` steps
    (:func:`time_blocks`). The windows of a batch lie in one block: the block is drawn with
    probability proportional to the window starts it holds (so every window that does not
    cross a block edge is equally likely), then the batch's starts uniformly inside it. The
    block is read over the patch's cells widened to chunk boundaries, passed through
    ``transform`` and kept in a :class:`BlockCache`, so a batch reads each chunk it needs once,
    and later batches near it read none. The cache changes what is read, never what is drawn.

    Args:
        field: A lazy field ``[time, lat, lon]``.
        window: Time steps per window.
        transform: Applied to each block's float32 values (e.g. normalisation).
        cache: Where blocks are kept (it may serve several readers); None: a cache of its own
            of :data:`CACHE_BYTES`.
    """

    def __init__(
        self,
        field: xr.DataArray,
        window: int,
        transform: Callable[[np.ndarray], np.ndarray],
        cache: BlockCache | None = None,
    ):
        self.field = field
        self.window = window
        self.transform = transform
        self.cache = BlockCache(CACHE_BYTES) if cache is None else cache
        self.blocks = time_blocks(field, min_steps=window)
        # Window starts in the blocks up to each: a start drawn among all picks its block.
        self._cumulative_starts = np.cumsum([b.stop - b.start - window + 1 for b in self.blocks])
        self._bounds = {dim: np.cumsum((0, *field.chunksizes[dim])) for dim in ("lat", "lon")}

    def sample(
        self, lat: int, lon: int, patch: int, batch_size: int, generator: torch.Generator
    ) -> tuple[list[int], np.ndarray]:
        """Draws a block and ``batch_size`` starts in it; the windows at patch ``(lat, lon)``.

        Returns:
            The start steps ``[batch]`` and the transformed windows
            ``[batch, window, patch, patch]``.
        """
        pick = int(torch.randint(int(self._cumulative_starts[-1]), (), generator=generator))
        index = int(np.searchsorted(self._cumulative_starts, pick, side="right"))
        block = self.blocks[index]
        offsets = torch.randint(
            block.stop - block.start - self.window + 1, (batch_size,), generator=generator
        )
        lat0, lat1 = self._widened("lat", lat, patch)
        lon0, lon1 = self._widened("lon", lon, patch)
        cells = {"time": block, "lat": slice(lat0, lat1), "lon": slice(lon0, lon1)}
        values = self.cache.get(
            (self, index, lat0, lon0, lat1, lon1),
            lambda: self.transform(self.field.isel(cells).values.astype(np.float32)),
        )
        windows = patch_windows(
            values, offsets.tolist(), lat - lat0, lon - lon0, self.window, patch
        )
        return (block.start + offsets).tolist(), windows

    def _widened(self, dim: str, start: int, size: int) -> tuple[int, int]:
        """Cells ``[start, start + size)`` of ``dim`` widened to its chunk boundaries."""
        bounds = self._bounds[dim]
        first = bounds[np.searchsorted(bounds, start, side="right") - 1]
        return int(first), int(bounds[np.searchsorted(bounds, start + size, side="left")])
