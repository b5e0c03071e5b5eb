"""Lightning DDP on the climate experiment: ``aenp train`` on two CPU processes (gloo)."""

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import aenp
from aenp.models.io import load_config
from aenp.run_directory import RunDirectory, experiment_from_config
from aenp.train.data import TaskStream
from aenp.train.module import mean_loglik
from aenp.train.run import compose_config

BATCH_SIZE = 4
NUM_TRAIN_TASKS = 32
NUM_RANKS = 2
EPOCHS = 2
BATCHES_PER_RANK = NUM_TRAIN_TASKS // (BATCH_SIZE * NUM_RANKS)
TIMEOUT_S = 300
"""A run takes 15-40 s on two busy cores, each rank starting its sampling worker's forkserver;
one that hangs fails the test."""
STACKS_S = 5
"""Time given to hung processes to print their stacks."""

RECORDER = '''
"""Imported by every Python process started with this folder on its path: each rank saves the
batch of every training step it takes, with its rank and the epoch, and prints the stacks of
its threads on SIGUSR1."""
import faulthandler
import signal
from pathlib import Path

faulthandler.register(signal.SIGUSR1, all_threads=True)

import torch

from aenp.train.module import NeuralProcessModule

_step = NeuralProcessModule.training_step


def _recorded(module, batch, batch_idx):
    rank, epoch, step = module.global_rank, module.current_epoch, module.global_step
    seen = {"rank": rank, "epoch": epoch, "y": batch.y, "context": batch.context_mask}
    torch.save(seen, Path(__file__).parent / "steps" / f"rank{rank}-step{step:04d}.pt")
    return _step(module, batch, batch_idx)


NeuralProcessModule.training_step = _recorded
'''


def run_ranks(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Runs ``command``; if it hangs, fails with the stacks of the ranks and their workers."""
    with subprocess.Popen(
        command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            _, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGUSR1)
            time.sleep(STACKS_S)
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
            pytest.fail(f"the ranks hung for {TIMEOUT_S} s; their stderr:\n{stderr}")
    return process.returncode, stderr


def overrides(data: Path, run_dir: Path, max_in_memory_bytes: int = 0) -> list[str]:
    """A tiny ConvCNP (T̃) on ``data`` (by default read lazily): four steps an epoch on each of
    two ranks."""
    return [
        "experiment=climate",
        "model=convcnp_approx",
        f"run_dir={run_dir}",
        f"experiment.options.data={data}",
        'experiment.options.train_region="30,45,-120,-110"',
        'experiment.options.ood_region="30,45,-110,-100"',
        "experiment.options.train_years=[1980,2009]",
        "experiment.options.val_years=[2010,2014]",
        "experiment.options.test_years=[2015,2019]",
        "experiment.options.patch=8",
        f"experiment.options.max_in_memory_bytes={max_in_memory_bytes}",
        f"data.batch_size={BATCH_SIZE}",
        f"data.num_train_tasks={NUM_TRAIN_TASKS}",
        # Each rank samples in a worker started from its forkserver, which reads the lazy field
        # itself, while the rank's other threads run.
        "data.num_workers=1",
        "data.num_val_tasks=8",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "model.hparams.channels=4",
        "model.hparams.num_layers=2",
    ]


def test_two_ranks_train_on_their_own_share_of_the_epoch_and_save_one_model(
    tmp_path, climate_field
):
    (tmp_path / "sitecustomize.py").write_text(RECORDER)
    (tmp_path / "steps").mkdir()
    run_dir = tmp_path / "run"
    ddp = ["trainer.accelerator=cpu", f"trainer.devices={NUM_RANKS}", "trainer.strategy=ddp"]
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    aenp_train = [str(Path(sys.executable).with_name("aenp")), "train"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    returncode, stderr = run_ranks(
        [*aenp_train, *overrides(climate_field, run_dir), *ddp], tmp_path, env
    )
    assert returncode == 0, stderr[-3000:]

    # Each rank trained on its own stream, seeded by (seed, epoch, rank), of an equal share.
    trained = defaultdict(list)
    for path in sorted((tmp_path / "steps").iterdir()):
        step = torch.load(path, weights_only=True)
        trained[step["epoch"], step["rank"]].append(step)
    assert set(trained) == set(itertools.product(range(EPOCHS), range(NUM_RANKS)))
    cfg = compose_config(overrides(climate_field, run_dir))
    experiment = experiment_from_config(cfg)
    for (epoch, rank), steps in trained.items():
        entropy = (cfg.seed, epoch, rank)
        stream = TaskStream(experiment.sample_train, BATCHES_PER_RANK, BATCH_SIZE, entropy)
        for step, batch in zip(steps, stream, strict=True):
            assert torch.equal(step["y"], batch.y)
            assert torch.equal(step["context"], batch.context_mask)
    assert not torch.equal(trained[0, 0][0]["y"], trained[0, 1][0]["y"])
    # The ranks read the field lazily: loaded into memory, it gives other tasks for a seed.
    loaded = experiment_from_config(
        compose_config(overrides(climate_field, run_dir, max_in_memory_bytes=2**30))
    )
    [batch] = TaskStream(loaded.sample_train, 1, BATCH_SIZE, (cfg.seed, 0, 0))
    assert not torch.equal(trained[0, 0][0]["y"], batch.y)

    # The steps are counted once, not once per rank.
    run = RunDirectory(run_dir)
    last = torch.load(run.last_checkpoint, weights_only=True)
    assert (last["epoch"], last["global_step"]) == (EPOCHS - 1, EPOCHS * BATCHES_PER_RANK)
    steps = [int(row["step"]) for row in run.training_log() if row.get("train/loss")]
    assert steps == list(range(EPOCHS * BATCHES_PER_RANK))

    # The saved model is the best one, scored on the whole validation split (both ranks' halves).
    model = aenp.load(run.model_path).eval()
    with torch.no_grad():
        validation = experiment.split("val", cfg.data.num_val_tasks, BATCH_SIZE)
        loglik = np.mean([float(mean_loglik(model, item.batch)) for item in validation])
    logged = [float(row["val/loglik"]) for row in run.training_log() if row.get("val/loglik")]
    assert len(logged) == EPOCHS
    assert loglik == pytest.approx(max(logged), rel=1e-5)
    config = load_config(run.model_path)
    assert config["metadata"]["normalisation"] == experiment.normalisation.to_dict()
