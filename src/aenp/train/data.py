"""Lightning data module: fresh training tasks every epoch, fixed validation tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from aenp.data.batch import Batch
from aenp.errors import InputError

TaskSampler = Callable[[int, torch.Generator], Batch]


def seeded_generator(*entropy: int) -> torch.Generator:
    """A generator seeded from several integers (seed, epoch, rank, ...) without collisions."""
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


class TaskStream(IterableDataset):
    """A finite stream of freshly sampled batches, reproducible from its seed entropy.

    Args:
        sample: Draws one batch: ``sample(batch_size, generator) -> Batch``.
        num_batches: Batches per pass.
        batch_size: Tasks per batch.
        entropy: Integers seeding the stream (e.g. seed, epoch, rank).
    """

    def __init__(
        self, sample: TaskSampler, num_batches: int, batch_size: int, entropy: Sequence[int]
    ):
        self.sample = sample
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.entropy = tuple(entropy)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        generator = seeded_generator(*self.entropy)
        for _ in range(self.num_batches):
            yield self.sample(self.batch_size, generator)


class TaskDataModule(L.LightningDataModule):
    """Training tasks sampled anew each epoch (seeded by seed, epoch and rank); fixed validation.

    Under DDP each rank draws its own share of the epoch's tasks from its own seed.

    Args:
        sample: Draws one training batch: ``sample(batch_size, generator) -> Batch``.
        validation: Fixed validation batches.
        num_train_tasks: Training tasks per epoch (over all ranks).
        batch_size: Tasks per training batch.
        seed: Base seed of the training stream.
    """

    def __init__(
        self,
        sample: TaskSampler,
        validation: Sequence[Batch],
        num_train_tasks: int,
        batch_size: int,
        seed: int = 0,
    ):
        super().__init__()
        if num_train_tasks < batch_size:
            raise InputError(
                f"num_train_tasks ({num_train_tasks}) must be at least batch_size ({batch_size})"
            )
        self.sample = sample
        self.validation = list(validation)
        self.num_train_tasks = num_train_tasks
        self.batch_size = batch_size
        self.seed = seed

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int):
        """Moves a :class:`Batch` as a whole."""
        return batch.to(device)

    def train_dataloader(self) -> DataLoader:
        """This epoch's stream (requires ``reload_dataloaders_every_n_epochs=1``)."""
        epoch, rank, world = 0, 0, 1
        if self.trainer is not None:
            epoch = self.trainer.current_epoch
            rank, world = self.trainer.global_rank, self.trainer.world_size
        num_batches = max(1, self.num_train_tasks // (self.batch_size * world))
        stream = TaskStream(self.sample, num_batches, self.batch_size, (self.seed, epoch, rank))
        return DataLoader(stream, batch_size=None, collate_fn=_identity)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation batches, in order."""
        return DataLoader(self.validation, batch_size=None, collate_fn=_identity)


def _identity(batch: Batch) -> Batch:
    return batch
