"""The smoke2d experiment: tasks are random cells of simulated smoke density fields."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from aenp.batch import EvaluationBatch, GridBatch
from aenp.data.smoke import SmokeStore
from aenp.errors import InputError

VALIDATION_FRACTION = 0.1
"""Share of the smoke training simulations held out for validation."""
IN_MEMORY_BYTES = 2**30
"""Largest split of a smoke store that is read into memory at once (1 GiB)."""


class CellRole(IntEnum):
    """What a cell of a smoke task is."""

    UNUSED = 0
    CONTEXT = 1
    TARGET = 2


class Smoke2D:
    """2-D smoke plumes (docs/architecture.md, smoke2d): each task is one simulated density field.

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
    normalisation = None
    """Models see the densities and the unit square's coordinates as they are."""
    units = ""
    regions = None
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
        roles = torch.full((batch_size, cells), CellRole.UNUSED, dtype=torch.long)
        roles.scatter_(1, order[:, :num_context], CellRole.CONTEXT)
        roles.scatter_(1, order[:, num_context : num_context + self.num_targets], CellRole.TARGET)
        shape = (batch_size, self.resolution, self.resolution)
        context, target = (roles == CellRole.CONTEXT), (roles == CellRole.TARGET)
        return GridBatch(fields[..., None], context.view(shape), target.view(shape), self.axes)

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
