"""Export of gp1d tasks and their ground truth to ``.npz`` or netCDF, for other libraries."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from aenp.batch import Batch
from aenp.data.gp import GPMixture, GPTasks, GroundTruth
from aenp.errors import InputError, MissingFileError
from aenp.files import atomic_write, check_destination

_EXPORT_DIMS = {
    "batch_index": ("task",),
    "num_context": ("task",),
    "xc": ("task", "context", "dim_x"),
    "yc": ("task", "context", "dim_y"),
    "xt": ("task", "target", "dim_x"),
    "yt": ("task", "target", "dim_y"),
    "kernel_index": ("task",),
    "gt_loglik": ("task",),
    "oracle_loglik": ("task",),
}
"""Arrays of an exported task file and their dimensions."""
_NPZ_ATTRIBUTES = "attributes"
"""Name of the array holding the generator's attributes, as JSON, in an ``.npz`` export."""


def export_tasks(
    path: str | os.PathLike,
    items: Sequence[tuple[GPTasks, GroundTruth]],
    generator: GPMixture,
) -> None:
    """Writes tasks and their ground truth to ``.npz`` or netCDF (``.nc``) for other libraries.

    One row per task, across all batches: ``xc, yc [task, context, d]`` NaN-padded to the
    largest context set, with the true size in ``num_context``; ``xt, yt [task, target, d]``;
    ``kernel_index``, ``gt_loglik``, ``oracle_loglik`` and ``batch_index`` (the batch each task
    came from) ``[task]``. The generator's settings are stored as attributes (for ``.npz``, as
    JSON in the array ``attributes``), including ``kernels``, a JSON list of kernel descriptions
    in ``kernel_index`` order. The file is written with :func:`aenp.files.atomic_write`, so an
    existing file is only ever replaced by a complete one.

    Args:
        path: Destination; the suffix ``.npz`` or ``.nc`` picks the format.
        items: Batches of tasks with their ground truth, as returned by
            :func:`~aenp.data.gp.gp1d_split`.
        generator: The generator the tasks came from, described in the file's attributes.

    Raises:
        InputError: For another suffix, no task, or ``path`` an existing folder.
        MissingFileError: If the folder that should hold ``path`` does not exist.
    """
    path = check_export_path(path)
    arrays = _task_arrays(items)
    attributes = {
        "noise_std": generator.noise_std,
        "num_context_range": list(generator.num_context),
        "num_target": generator.num_target,
        "context_range": list(generator.context_range),
        "target_range": list(generator.target_range),
        "shift": generator.shift,
        "kernels": json.dumps([repr(kernel) for kernel in generator.kernels]),
    }
    with atomic_write(path) as temporary:
        _WRITERS[path.suffix](temporary, arrays, attributes)


def check_export_path(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path``, if :func:`export_tasks` can write there.

    Call it before making the tasks, which may take minutes.

    Raises:
        InputError: For a suffix other than ``.npz`` or ``.nc``, or an existing folder.
        MissingFileError: If the folder that should hold ``path`` does not exist.
    """
    path = Path(path)
    if path.suffix not in _WRITERS:
        raise InputError(f"path must end in one of {', '.join(_WRITERS)}; got {str(path)!r}")
    return check_destination(path)


def load_exported_tasks(path: str | os.PathLike) -> list[tuple[GPTasks, GroundTruth]]:
    """Reads a file written by :func:`export_tasks` back into the batches that were exported.

    The round trip is exact: the same batches, tensors, dtypes and ground truth.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise InputError(f"path must end in one of {', '.join(_READERS)}; got {str(path)!r}")
    if not path.is_file():
        raise MissingFileError(f"no exported task file at {str(path)!r}")
    arrays = reader(path)
    items = []
    for batch_id in np.unique(arrays["batch_index"]):
        rows = np.flatnonzero(arrays["batch_index"] == batch_id)
        batch_arrays = {
            name: torch.from_numpy(np.ascontiguousarray(values[rows]))
            for name, values in arrays.items()
        }
        sizes = batch_arrays["num_context"].unique()
        if len(sizes) != 1:
            raise InputError(
                f"{str(path)!r}: the tasks of batch {batch_id} have different num_context "
                f"{sizes.tolist()}; a batch shares one context size"
            )
        num_context = int(sizes[0])
        batch = Batch(
            xc=batch_arrays["xc"][:, :num_context],
            yc=batch_arrays["yc"][:, :num_context],
            xt=batch_arrays["xt"],
            yt=batch_arrays["yt"],
        )
        tasks = GPTasks(batch=batch, kernel_index=batch_arrays["kernel_index"])
        truth = GroundTruth(
            loglik=batch_arrays["gt_loglik"], oracle_loglik=batch_arrays["oracle_loglik"]
        )
        items.append((tasks, truth))
    return items


def _task_arrays(items: Sequence[tuple[GPTasks, GroundTruth]]) -> dict[str, np.ndarray]:
    """One row per task, context sets NaN-padded to the largest."""
    if len(items) == 0:
        raise InputError("items is empty: there are no tasks to export")
    columns: dict[str, list[Tensor]] = {
        "batch_index": [
            torch.full((len(tasks),), i, dtype=torch.long) for i, (tasks, _) in enumerate(items)
        ],
        "num_context": [
            torch.full((len(tasks),), tasks.batch.xc.shape[1], dtype=torch.long)
            for tasks, _ in items
        ],
        "xc": [tasks.batch.xc for tasks, _ in items],
        "yc": [tasks.batch.yc for tasks, _ in items],
        "xt": [tasks.batch.xt for tasks, _ in items],
        "yt": [tasks.batch.yt for tasks, _ in items],
        "kernel_index": [tasks.kernel_index for tasks, _ in items],
        "gt_loglik": [truth.loglik for _, truth in items],
        "oracle_loglik": [truth.oracle_loglik for _, truth in items],
    }
    max_context = max(tasks.batch.xc.shape[1] for tasks, _ in items)
    for name in ("xc", "yc"):
        columns[name] = [
            torch.nn.functional.pad(t, (0, 0, 0, max_context - t.shape[1]), value=math.nan)
            for t in columns[name]
        ]
    arrays = {}
    for name, tensors in columns.items():
        kinds = {(t.dtype, tuple(t.shape[1:])) for t in tensors}
        if len(kinds) != 1:
            raise InputError(
                f"items must agree on the dtype and per-task shape of {name} to be exported "
                f"together; got {sorted(map(str, kinds))}"
            )
        arrays[name] = torch.cat([t.detach().cpu() for t in tensors]).numpy()
    return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray], attributes: dict) -> None:
    with path.open("wb") as file:
        np.savez(file, **arrays, **{_NPZ_ATTRIBUTES: np.array(json.dumps(attributes))})


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        _check_arrays(path, data.files)
        return {name: data[name] for name in _EXPORT_DIMS}


def _write_netcdf(path: Path, arrays: dict[str, np.ndarray], attributes: dict) -> None:
    dataset = xr.Dataset(
        {name: (dims, arrays[name]) for name, dims in _EXPORT_DIMS.items()}, attrs=attributes
    )
    dataset.to_netcdf(path, engine="netcdf4")


def _read_netcdf(path: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(path, engine="netcdf4") as dataset:
        _check_arrays(path, dataset.data_vars)
        return {name: dataset[name].to_numpy() for name in _EXPORT_DIMS}


def _check_arrays(path: Path, present: Sequence[str]) -> None:
    missing = [name for name in _EXPORT_DIMS if name not in present]
    if missing:
        raise InputError(f"{str(path)!r} lacks the required array(s) {', '.join(missing)}")


_WRITERS: dict[str, Callable[[Path, dict[str, np.ndarray], dict], None]] = {
    ".npz": _write_npz,
    ".nc": _write_netcdf,
}
_READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    ".npz": _read_npz,
    ".nc": _read_netcdf,
}
