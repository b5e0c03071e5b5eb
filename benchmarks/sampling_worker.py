"""How long a sampling worker takes to deliver its first batch, by how it starts.

    python benchmarks/sampling_worker.py [--epochs 3] [--experiment gp1d] [--batch-size 16]

``aenp train`` with ``data.num_workers=1`` starts one worker a data loader, every epoch, with
:data:`aenp.train.data.SAMPLING_WORKER_START`: forked from a server process, which imports
:data:`aenp.train.data.SAMPLING_WORKER_PRELOAD` when the first worker starts. A fork of the
training process is the other way, which can hang (README "Fast training"). Prints, for each
way and epoch, the milliseconds from starting the data loader to its first batch and to the
end of the epoch's stream.
"""

from __future__ import annotations

import argparse
import time

import aenp.train.data
from aenp.data.experiments import get_experiment
from aenp.train.data import TaskDataModule

WAYS = ("fork", "forkserver")


def epoch_milliseconds(data: TaskDataModule) -> tuple[float, float]:
    """Milliseconds to the first batch of ``data``'s training stream, and to its end."""
    start = time.perf_counter()
    batches = iter(data.train_dataloader())
    next(batches)
    first = time.perf_counter()
    for _ in batches:
        pass
    return (first - start) * 1e3, (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--experiment", default="gp1d")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="batches an epoch")
    args = parser.parse_args()
    sample = get_experiment(args.experiment).sample_train
    print("| start | epoch | first batch, ms | whole epoch, ms |")
    print("|---|---|---|---|")
    for way in WAYS:
        aenp.train.data.SAMPLING_WORKER_START = way
        tasks = args.batches * args.batch_size
        data = TaskDataModule(sample, [], tasks, args.batch_size, num_workers=1)
        for epoch in range(args.epochs):
            first, whole = epoch_milliseconds(data)
            print(f"| {way} | {epoch} | {first:.0f} | {whole:.0f} |")


if __name__ == "__main__":
    main()
