"""Lightning data module: fresh training tasks every epoch, fixed validation tasks.

Training batches can be padded to a fixed context size (with a context mask, which every model
honours exactly), so that a compiled training step sees one shape, and sampled in a worker
process, off the training step's critical path; either way the tasks are the same.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Iterator, Sequence

import dask
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from aenp.batch import Batch
from aenp.errors import InputError

TaskSampler = Callable[[int, torch.Generator], Batch]
SAMPLING_WORKER_START = "forkserver"
"""How a sampling worker starts: forked from a server process that runs no threads, the sampler
sent to it pickled. A fork of the training process itself copies the locks of its other threads
(zarr's and dask's readers, gloo's) in whatever state they are, and now and then such a worker
hung before sampling anything, and its DDP run with it."""
SAMPLING_WORKER_PRELOAD = ["aenp.data.experiments", "aenp.train.data"]
"""Modules the server imports when it starts (the process's one forkserver, at its first
worker), so that each epoch's worker starts in milliseconds, not seconds."""


def refuse_training_in_a_starting_worker() -> None:
    """Raises :class:`InputError` if called while a sampling worker process starts.

    A starting worker imports the main script again (as ``__mp_main__``, to find what its
    pickled sampler may name there), so a script that trains at its top level would start
    training again in every worker, which then fails.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise InputError(
            "a sampling worker (data.num_workers=1) imports the script that started training "
            "again, and this script starts training at its top level: put the training under "
            '`if __name__ == "__main__":`, or sample in the training process with '
            "data.num_workers=0"
        )


def mixed_seed(*entropy: int) -> int:
    """A seed mixed from several integers (seed, epoch, rank, ...), in ``[0, 2**63)``.

    Distinct entropies give unrelated seeds, except that trailing zeros are ignored (``(1, 2)``
    and ``(1, 2, 0)`` give the same seed): tell streams of different purposes apart by a
    non-zero entry, not by one more zero.
    """
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)


def seeded_generator(*entropy: int) -> torch.Generator:
    """A generator seeded with :func:`mixed_seed` of ``entropy``."""
    return torch.Generator().manual_seed(mixed_seed(*entropy))


class TaskStream(IterableDataset):
    """A finite stream of freshly sampled batches, reproducible from its seed entropy.

    Args:
        sample: Draws one batch: ``sample(batch_size, generator) -> Batch``.
        num_batches: Batches per pass.
        batch_size: Tasks per batch.
        entropy: Integers seeding the stream (e.g. seed, epoch, rank).
        num_context: Pad every batch of point sets to this many context points (with a context
            mask; see :meth:`aenp.batch.Batch.pad_context`), or None to leave them as drawn.
    """

    def __init__(
        self,
        sample: TaskSampler,
        num_batches: int,
        batch_size: int,
        entropy: Sequence[int],
        num_context: int | None = None,
    ):
        self.sample = sample
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.entropy = tuple(entropy)
        self.num_context = num_context

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        generator = seeded_generator(*self.entropy)
        for _ in range(self.num_batches):
            batch = self.sample(self.batch_size, generator)
            if self.num_context is not None and isinstance(batch, Batch):
                batch = batch.pad_context(self.num_context)
            yield batch


class TaskDataModule(L.LightningDataModule):
    """Training tasks sampled anew each epoch (seeded by seed, epoch and rank); fixed validation.

    Under DDP each rank draws its own share of the epoch's tasks from its own seed.

    Args:
        sample: Draws one training batch: ``sample(batch_size, generator) -> Batch``.
        validation: Fixed validation batches.
        num_train_tasks: Training tasks per epoch (over all ranks).
        batch_size: Tasks per training batch.
        seed: Base seed of the training stream.
        num_context: Pad training batches of point sets to this many context points, or None.
        num_workers: Worker processes sampling training batches ahead of the step: 0 samples
            in the training process, 1 in one worker, which receives ``sample`` pickled (the
            same stream of tasks either way).

    Raises:
        InputError: If ``num_workers`` is not 0 or 1, if a worker would receive a ``sample``
            that cannot be pickled, or if there are fewer training tasks than a batch.
    """

    def __init__(
        self,
        sample: TaskSampler,
        validation: Sequence[Batch],
        num_train_tasks: int,
        batch_size: int,
        seed: int = 0,
        num_context: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if num_train_tasks < batch_size:
            raise InputError(
                f"num_train_tasks ({num_train_tasks}) must be at least batch_size ({batch_size})"
            )
        self.sample = sample
        self.validation = list(validation)
        self.num_train_tasks = num_train_tasks
        if num_workers not in (0, 1):
            # Several workers would each draw the whole stream: its tasks would repeat.
            raise InputError(
                f"data.num_workers must be 0 (sample in the training process) or 1 (in a "
                f"worker process), got {num_workers!r}"
            )
        self.worker_start = None
        if num_workers:
            try:
                pickle.dumps(sample)
            except (pickle.PicklingError, AttributeError, TypeError) as error:
                raise InputError(
                    f"data.num_workers=1 sends the task sampler to a worker process pickled, "
                    f"and {sample!r} cannot be pickled ({error}): define it at the top level of "
                    f"a module, or sample in the training process with data.num_workers=0"
                ) from None
            self.worker_start = multiprocessing.get_context(SAMPLING_WORKER_START)
            self.worker_start.set_forkserver_preload(SAMPLING_WORKER_PRELOAD)
        self.batch_size = batch_size
        self.seed = seed
        self.num_context = num_context
        self.num_workers = num_workers

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
        stream = TaskStream(
            self.sample, num_batches, self.batch_size, (self.seed, epoch, rank), self.num_context
        )
        return DataLoader(
            stream,
            batch_size=None,
            collate_fn=_identity,
            num_workers=self.num_workers,
            prefetch_factor=4 if self.num_workers else None,
            worker_init_fn=_compute_dask_in_this_thread,
            multiprocessing_context=self.worker_start,
        )

    def val_dataloader(self) -> DataLoader:
        """The fixed validation batches, in order."""
        return DataLoader(self.validation, batch_size=None, collate_fn=_identity)


def _identity(batch: Batch) -> Batch:
    return batch


def _compute_dask_in_this_thread(worker_id: int) -> None:
    """Makes a sampling worker read lazy fields (dask arrays) in its own thread.

    The worker is one process sampling ahead of the training step: a dask thread pool in it
    would compete with the step for cores. It has neither the training process's thread pool
    nor its ``dask.distributed`` client (see :data:`SAMPLING_WORKER_START`).
    """
    dask.config.set(scheduler="synchronous")
