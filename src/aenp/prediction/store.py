"""A zarr store written a block at a time, resumable, moved into place only when complete.

While a prediction to ``out`` runs, everything lives in one folder beside it,
``.<out name>.resumable.partial``::

    inputs.json   digests of what is predicted (model, context, targets, layout)
    store.zarr/   the store: coordinates and metadata from the start, data block by block
    done/         one empty file per finished block, written after the block's data

The folder appears whole (built under a temporary name by :func:`aenp.files.atomic_write`),
so it always holds its inputs and an empty store. A block counts as finished only once its
marker exists; each block writes exactly its own zarr chunks, so a block interrupted half-way
is written again in full on resumption, and no finished block is touched. When every block is
finished the store is moved onto ``out`` in one rename and the folder removed: ``out`` never
holds half a prediction, and an existing ``out`` is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from aenp.errors import InputError
from aenp.files import PARTIAL_MARK, atomic_write, check_destination, write_json

INPUTS_FILE = "inputs.json"
STORE = "store.zarr"
DONE = "done"


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a ``Path``, if a new zarr store may be moved there.

    Raises:
        InputError: If ``out`` does not end in ``.zarr`` or already exists.
        MissingFileError: If the folder that should hold it does not exist.
    """
    out = check_destination(out)
    if out.suffix != ".zarr":
        raise InputError(f"out must be a zarr store, a path ending in .zarr; got {out}")
    if out.exists():
        raise InputError(
            f"{out} is an existing file; a zarr store (a folder) cannot replace it: remove it "
            "or choose another path"
        )
    return out


class PartialStore:
    """The prediction to ``out`` being written, new or resumed.

    Args:
        out: Where the finished store goes.
        inputs: Digests of everything the prediction depends on.
        template: The prediction's coordinates and variables, chunked as its blocks (only
            read when the store is new).

    Raises:
        InputError: If ``out`` exists, or a partial prediction to ``out`` exists for other
            inputs or cannot be read (it is kept: finish it or remove it).
    """

    def __init__(self, out: str | os.PathLike, inputs: dict[str, str], template: xr.Dataset):
        self.out = check_out(out)
        self.folder = self.out.with_name(f".{self.out.name}.resumable{PARTIAL_MARK}")
        if self.folder.exists():
            self._check_inputs(inputs)
        else:
            with atomic_write(self.folder) as tmp, warnings.catch_warnings():
                # Zarr 3 notes that consolidated metadata is not yet in its specification;
                # xarray writes and reads it to open a store in one request.
                warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
                tmp.mkdir()
                write_json(tmp / INPUTS_FILE, inputs)
                template.to_zarr(tmp / STORE, compute=False)
                (tmp / DONE).mkdir()
        self._arrays = zarr.open_group(self.folder / STORE, mode="r+")

    @property
    def done(self) -> set[str]:
        """The names of the finished blocks."""
        return {p.name for p in (self.folder / DONE).iterdir() if not p.name.startswith(".")}

    def write(self, block: str, region: tuple[slice, ...], data: dict[str, np.ndarray]) -> None:
        """Writes a block's arrays to their region of the store, then marks it finished."""
        for name, values in data.items():
            self._arrays[name][region] = values
        with atomic_write(self.folder / DONE / block) as tmp:
            tmp.touch()

    def finish(self) -> Path:
        """Moves the complete store onto ``out`` and removes the folder; returns ``out``."""
        check_out(self.out)
        os.replace(self.folder / STORE, self.out)
        shutil.rmtree(self.folder)
        return self.out

    def _check_inputs(self, inputs: dict[str, str]) -> None:
        """Refuses a partial prediction of other inputs, or one that cannot be read."""
        try:
            saved = json.loads((self.folder / INPUTS_FILE).read_text())
        except (OSError, ValueError) as error:
            saved = error
        if not isinstance(saved, dict):
            raise InputError(
                f"{self.folder} is not a partial prediction aenp can resume (its {INPUTS_FILE} "
                f"is unreadable: {saved}); remove it to start afresh"
            )
        differ = sorted(k for k in inputs.keys() | saved.keys() if inputs.get(k) != saved.get(k))
        if differ:
            raise InputError(
                f"{self.folder} holds an unfinished prediction to {self.out} of other inputs "
                f"(different: {', '.join(differ)}); rerun with the same inputs to finish it, or "
                "remove the folder to start afresh"
            )
