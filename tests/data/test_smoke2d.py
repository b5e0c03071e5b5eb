"""The smoke2d experiment's tasks, read from a tiny simulated store."""

import shutil

import numpy as np
import pytest
import torch

from aenp.data.experiments import Smoke2D, get_experiment
from aenp.data.smoke import SmokeStore, SmokeStoreError


def test_training_tasks_have_equal_counts_and_disjoint_roles(smoke_store):
    experiment = Smoke2D(str(smoke_store), context_fraction=(0.1, 0.3), num_targets=20)
    batch = experiment.sample_train(4, torch.Generator().manual_seed(0))
    counts = batch.context_mask.flatten(1).sum(1)
    assert bool((counts == counts[0]).all()) and 0.1 * 256 - 1 <= counts[0] <= 0.3 * 256 + 1
    assert batch.target_mask.flatten(1).sum(1).tolist() == [20] * 4
    assert not bool((batch.context_mask & batch.target_mask).any())
    assert batch.axes[0][0].item() == pytest.approx(0.5 / 16)
    assert batch.to_points().xc.shape == (4, int(counts[0]), 2)


def test_validation_holds_out_the_last_training_simulations(smoke_store):
    experiment = Smoke2D(str(smoke_store), num_targets=20)
    (item,) = experiment.split("val", 1, 1)
    last = SmokeStore(smoke_store).density("train")[9]
    np.testing.assert_array_equal(item.batch.y[0, ..., 0].numpy(), last)
    test = experiment.split("test", 6, 4)
    assert [len(i.batch) for i in test] == [4, 2]
    again = Smoke2D(str(smoke_store), num_targets=20).split("test", 6, 4)
    assert torch.equal(test[1].batch.context_mask, again[1].batch.context_mask)
    with pytest.raises(ValueError, match="unknown smoke2d split 'ood'"):
        experiment.split("ood", 4, 4)


def test_downsampling_averages_blocks_of_cells(smoke_store):
    fine = SmokeStore(smoke_store).density("test")[0]
    experiment = Smoke2D(str(smoke_store), downsample=2, num_targets=10)
    (item,) = experiment.split("test", 1, 1)
    coarse = fine.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(item.batch.y[0, ..., 0].numpy(), coarse, rtol=1e-6)
    assert item.batch.axes[1][-1].item() == pytest.approx(15 / 16)


def test_bad_options_are_named(smoke_store, tmp_path):
    with pytest.raises(ValueError, match="downsample must divide"):
        Smoke2D(str(smoke_store), downsample=3)
    with pytest.raises(ValueError, match="do not fit a 16×16 grid"):
        Smoke2D(str(smoke_store), num_targets=250)
    with pytest.raises(ValueError, match="no smoke store at"):
        get_experiment("smoke2d", data_dir=str(tmp_path))


def test_lazy_reading_gives_the_same_tasks_as_reading_into_memory(smoke_store, monkeypatch):
    import aenp.data.smoke2d as smoke2d

    in_memory = Smoke2D(str(smoke_store), num_targets=20).split("test", 3, 3)[0].batch
    monkeypatch.setattr(smoke2d, "IN_MEMORY_BYTES", 0)
    lazy_experiment = Smoke2D(str(smoke_store), num_targets=20)
    lazy = lazy_experiment.split("test", 3, 3)[0].batch
    assert lazy_experiment._in_memory == {}
    assert torch.equal(torch.nan_to_num(lazy.y), torch.nan_to_num(in_memory.y))


def test_a_store_with_a_missing_chunk_is_refused_before_training(smoke_store, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(smoke_store, damaged)
    (damaged / "smoke.zarr" / "train" / "density" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(SmokeStoreError, match=r"train/density/c/1/0/0 of array train/density"):
        get_experiment("smoke2d", data_dir=str(damaged))
