"""Sampling workers for the tests: drawing from one with a deadline, and a sampler that takes
a lock of the process that starts the worker."""

import threading

import torch

from aenp.batch import Batch
from aenp.data.experiments import get_experiment
from aenp.train.data import TaskDataModule

WORKER_TIMEOUT_S = 60
"""A sampling worker starts and draws a few batches within seconds; one that hangs fails."""
SAMPLER_LOCK = threading.Lock()
"""Taken by :func:`sample_gp1d_under_the_lock`."""


def draw_in_a_worker(data: TaskDataModule) -> list[Batch]:
    """The batches of ``data``'s training stream, drawn by its sampling worker.

    Raises:
        AssertionError: If the worker has not finished within :data:`WORKER_TIMEOUT_S`.
    """
    batches = []
    reader = threading.Thread(target=lambda: batches.extend(data.train_dataloader()), daemon=True)
    reader.start()
    reader.join(WORKER_TIMEOUT_S)
    assert not reader.is_alive(), "the sampling worker hangs"
    return batches


def sample_gp1d_under_the_lock(batch_size: int, generator: torch.Generator) -> Batch:
    """gp1d's training sampler, run while holding :data:`SAMPLER_LOCK`."""
    with SAMPLER_LOCK:
        return get_experiment("gp1d").sample_train(batch_size, generator)
