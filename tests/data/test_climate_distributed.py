"""Climate tasks read from a lazy zarr store under a ``dask.distributed`` client."""

from contextlib import contextmanager

import pytest
import torch
from distributed import Client, LocalCluster, get_task_stream

from aenp.data.climate import write_synthetic_field
from aenp.data.experiments import Climate
from aenp.train.data import TaskDataModule
from tests.workers import draw_in_a_worker

BATCH_SIZE = 4


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> dict:
    """Lazy climate options on a zarr store of 40 annual steps of 30 × 40 chunked cells."""
    path = tmp_path_factory.mktemp("field") / "t2m.zarr"
    box = {"south": 30, "north": 45, "west": -120, "east": -100}
    write_synthetic_field(
        path, 40, 30, 40, start="1980-07-01", freq="365D", chunks=(8, 16, 16), progress=False, **box
    )
    return {
        "data": path,
        "train_region": "30,45,-120,-110",
        "ood_region": "30,45,-110,-100",
        "train_years": (1980, 2009),
        "val_years": (2010, 2014),
        "test_years": (2015, 2019),
        "patch": 8,
        "max_in_memory_bytes": 0,
        "progress": False,
    }


@contextmanager
def distributed_client():
    """A one-worker, one-thread cluster in this process, the default scheduler while open."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def tasks(experiment: Climate) -> list:
    """Values and context of three training batches and of the ``val`` and ``ood`` splits."""
    batches = [
        experiment.sample_train(BATCH_SIZE, torch.Generator().manual_seed(s)) for s in (0, 1, 2)
    ]
    for split in ("val", "ood"):
        batches += [item.batch for item in experiment.split(split, 2 * BATCH_SIZE, BATCH_SIZE)]
    return [(batch.y, batch.context_mask, batch.axes) for batch in batches]


def test_a_distributed_client_reads_the_tasks_and_normalisation_the_local_scheduler_reads(
    options,
):
    local = Climate(**options)
    expected = tasks(local)
    with distributed_client():
        with get_task_stream() as fitting:
            remote = Climate(**options)
        with get_task_stream() as sampling:
            read = tasks(remote)
    # The cluster read the field, both to fit the experiment and to sample it.
    assert fitting.data and sampling.data
    assert remote.normalisation.to_dict() == local.normalisation.to_dict()
    assert len(read) == len(expected)
    for (y, context, axes), (y_local, context_local, axes_local) in zip(
        read, expected, strict=True
    ):
        assert torch.equal(y, y_local) and torch.equal(context, context_local)
        assert all(map(torch.equal, axes, axes_local))


def test_a_sampling_worker_started_under_a_client_reads_the_lazy_field_itself(options):
    def training_stream(experiment, num_workers=0):
        return TaskDataModule(experiment.sample_train, [], 8, BATCH_SIZE, num_workers=num_workers)

    expected = list(training_stream(Climate(**options)).train_dataloader())
    with distributed_client():
        # Built under the client, which reads its normalisation and valid patches; the worker
        # reads the batches' blocks.
        drawn = draw_in_a_worker(training_stream(Climate(**options), num_workers=1))
    assert len(drawn) == len(expected) == 2
    for batch, batch_local in zip(drawn, expected, strict=True):
        assert torch.equal(batch.y, batch_local.y)
        assert torch.equal(batch.context_mask, batch_local.context_mask)
