import logging
import math
import shutil
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from omegaconf import OmegaConf

import aenp
from aenp.batch import target_loglik
from aenp.data.experiments import EXPERIMENTS, get_experiment
from aenp.errors import InputError, InputTypeError
from aenp.run_directory import RunDirectory
from aenp.testing import random_batch, random_grid_batch, randomise_fixed_inputs
from aenp.train.data import TaskDataModule, TaskStream, mixed_seed
from aenp.train.module import STEP_STREAM, NeuralProcessModule, mean_loglik, negative_mean_loglik
from aenp.train.run import (
    Float64Precision,
    _precision,
    _trainer,
    build_from_config,
    compose_config,
    config_changes,
    experiment_from_config,
    train,
    training_log,
    training_record,
)

from ..models.test_contract import SMALL_BY_KEY

TINY = {
    "tetnp_approx": [
        "model.hparams.embed_dim=16",
        "model.hparams.num_heads=2",
        "model.hparams.num_layers=1",
        "model.hparams.ff_dim=16",
    ],
    "convcnp_approx": [
        "model.hparams.channels=8",
        "model.hparams.num_layers=2",
        "model.hparams.points_per_unit=16",
    ],
    "tnp": [
        "model.hparams.embed_dim=16",
        "model.hparams.num_heads=2",
        "model.hparams.num_layers=1",
        "model.hparams.ff_dim=16",
    ],
}


def tiny_overrides(tmp_path, model="convcnp_approx", epochs=1, extra=(), run_dir=None):
    """A run of 8 steps an epoch (64 tasks in batches of 8) at a learning rate of 1e-2."""
    return [
        f"model={model}",
        f"run_dir={run_dir or tmp_path / model}",
        "data.batch_size=8",
        "data.num_train_tasks=64",
        "data.num_val_tasks=32",
        "data.num_test_tasks=32",
        "optimizer.lr=1e-2",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        *TINY[model],
        *extra,
    ]


def tiny_config(*args, **kwargs):
    """The config of :func:`tiny_overrides`."""
    return compose_config(tiny_overrides(*args, **kwargs))


ONE_STEP = ["data.num_train_tasks=8", "data.num_val_tasks=8"]
"""Overrides for :func:`tiny_config`: one training step and one validation batch an epoch."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run of a tiny ConvCNP (T̃); tests must leave it as it is."""
    return train(tiny_config(tmp_path_factory.mktemp("finished")))


@pytest.mark.parametrize("key", aenp.model_keys())
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(key):
    from aenp.models.registry import strict_counterpart

    torch.manual_seed(0)
    base = strict_counterpart(key) if key.endswith("_approx") else key
    dim_x = 2 if base == "equivcnp" else 1
    hparams = dict(SMALL_BY_KEY[base])
    if strict_counterpart(key) is not None:
        hparams["domain"] = [[-4.0, 4.0]] * dim_x
    model = aenp.build_model(key, dim_x, 1, **hparams)
    if dim_x == 1:
        batch = get_experiment("gp1d").sample_train(16, torch.Generator().manual_seed(1))
    else:
        batch = random_batch(batch_size=4, dim_x=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.eval()  # no fixed-input dropout: the same function before and after the step
    before = -mean_loglik(model, batch)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = -mean_loglik(model, batch)
    assert after < before


def test_training_stream_is_reproducible_and_differs_by_epoch_and_rank():
    sample = get_experiment("gp1d").sample_train
    first = list(TaskStream(sample, 3, 4, (0, 0, 0)))
    again = list(TaskStream(sample, 3, 4, (0, 0, 0)))
    assert all(torch.equal(a.yc, b.yc) for a, b in zip(first, again, strict=True))
    for entropy in [(0, 1, 0), (0, 0, 1), (1, 0, 0)]:
        other = next(iter(TaskStream(sample, 1, 4, entropy)))
        assert not torch.equal(other.xt, first[0].xt)


def test_validation_reads_the_validation_split():
    experiment = get_experiment("gp1d")
    val = experiment.split("val", 32, 16)
    data = TaskDataModule(experiment.sample_train, [i.batch for i in val], 64, 16)
    served = list(data.val_dataloader())
    assert len(served) == 2
    for batch, item in zip(served, val, strict=True):
        assert torch.equal(batch.yt, item.batch.yt)
    test = experiment.split("test", 16, 16)[0].batch
    assert not torch.equal(served[0].xt, test.xt)


def test_validation_step_logs_the_validation_loglik(monkeypatch):
    model = aenp.build_model("convcnp", 1, 1, channels=8, num_layers=2)
    module = NeuralProcessModule(model)
    batch = get_experiment("gp1d").split("val", 16, 16)[0].batch
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.update({name: value}))
    module.validation_step(batch, 0)
    torch.testing.assert_close(logged["val/loglik"], mean_loglik(model, batch))


def test_validation_logs_the_mean_over_every_task_to_the_progress_bar(recwarn):
    model = aenp.build_model("convcnp", 2, 1, channels=4, num_layers=1, points_per_unit=4)
    # Batches of unequal size: the epoch's value weights each batch by its number of tasks.
    validation = [random_grid_batch(batch_size=3, seed=0), random_grid_batch(batch_size=1, seed=1)]
    data = TaskDataModule(sample=None, validation=validation, num_train_tasks=1, batch_size=1)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    [logged] = trainer.validate(NeuralProcessModule(model), datamodule=data, verbose=False)
    with torch.no_grad():
        per_task = torch.cat([target_loglik(batch, model(batch)) for batch in validation])
    assert logged["val/loglik"] == pytest.approx(float(per_task.mean()), rel=1e-5)
    assert "val/loglik" in trainer.progress_bar_metrics
    # Grid tasks are not batch-first in every field; Lightning must not guess their number.
    guesses = [str(w.message) for w in recwarn if "infer the `batch_size`" in str(w.message)]
    assert not guesses


def test_training_step_returns_the_negative_mean_loglik_of_the_batch(monkeypatch):
    model = aenp.build_model("convcnp", 1, 1, channels=8, num_layers=2)
    module = NeuralProcessModule(model)
    batch = get_experiment("gp1d").sample_train(4, torch.Generator().manual_seed(1))
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.update({name: value}))
    loss = module.training_step(batch, 0)
    # The Gaussian density written out, averaged over each task's targets, then over tasks.
    pred = model(batch)
    mean, std = pred.mean.detach(), pred.stddev.detach()
    density = -0.5 * math.log(2 * math.pi) - std.log() - 0.5 * ((batch.yt - mean) / std) ** 2
    expected = -density.sum(-1).mean(-1).mean()
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(logged["train/loss"].detach(), expected)
    assert loss.requires_grad


def test_a_training_step_draws_from_its_seed_epoch_and_batch_and_leaves_the_generators_alone():
    model = aenp.build_model("convcnp_approx", 1, 1, channels=8, num_layers=2)
    randomise_fixed_inputs(model)  # zero-initialised, they would hide which tasks drop them
    batch = get_experiment("gp1d").sample_train(8, torch.Generator().manual_seed(1))

    def loss(seed: int, batch_idx: int, global_seed: int) -> torch.Tensor:
        module = NeuralProcessModule(model, seed=seed)
        module.log = lambda *args, **kwargs: None
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        value = module.training_step(batch, batch_idx).detach()
        assert torch.equal(torch.get_rng_state(), before)  # the step drew from its own seed
        return value

    reference = loss(seed=0, batch_idx=0, global_seed=0)
    assert torch.equal(loss(seed=0, batch_idx=0, global_seed=123), reference)
    assert not torch.equal(loss(seed=0, batch_idx=1, global_seed=0), reference)
    assert not torch.equal(loss(seed=1, batch_idx=0, global_seed=0), reference)
    # Nor does the first step reuse the seed of its epoch's tasks (trailing zeros would).
    assert mixed_seed(0, 0, 0, STEP_STREAM, 0) != mixed_seed(0, 0, 0)


def test_training_improves_the_validation_loglik(finished_run):
    cfg = tiny_config(None, run_dir=finished_run)
    L.seed_everything(cfg.seed, verbose=False)
    untrained = build_from_config(cfg).eval()  # seeded as train() seeds its model
    trained = aenp.load(finished_run / "model").eval()
    validation = experiment_from_config(cfg).split("val", 32, 16)
    with torch.no_grad():
        before, after = (
            sum(float(mean_loglik(model, item.batch)) for item in validation)
            for model in (untrained, trained)
        )
    assert after > before + 1.0


def test_train_writes_model_checkpoints_and_logs(finished_run):
    assert (finished_run / "checkpoints" / "best.ckpt").is_file()
    assert (finished_run / "checkpoints" / "last.ckpt").is_file()
    assert (finished_run / "config.yaml").is_file()
    assert aenp.model_name(aenp.load(finished_run / "model")) == "convcnp_approx"
    assert any(row.get("val/loglik") for row in training_log(finished_run))
    assert not list(finished_run.rglob("*.partial*"))


def test_run_directory_reads_back_what_train_wrote(finished_run):
    cfg = tiny_config(None, run_dir=finished_run)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run = RunDirectory(finished_run)
    assert run.is_trained()
    assert run.recorded_config() == resolved == run.training_record()["config"]
    assert OmegaConf.to_container(run.config()) == resolved
    assert run.last_checkpoint.is_file()
    trained = aenp.load(finished_run / "model").state_dict()
    for name, tensor in run.load_model().state_dict().items():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0)
    experiment = run.experiment()
    assert experiment.name == "gp1d"
    [ours] = experiment.split("test", 4, 4)
    [theirs] = experiment_from_config(cfg).split("test", 4, 4)
    torch.testing.assert_close(ours.batch.yc, theirs.batch.yc, rtol=0, atol=0)
    steps = [int(row["step"]) for row in run.training_log() if row.get("train/loss")]
    assert steps == sorted(steps) and len(steps) == 8


def run_files(run_dir):
    """Every file of a run directory but its logs, with its bytes."""
    return {
        path.relative_to(run_dir): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and "logs" not in path.parts
    }


def test_finished_run_started_again_is_left_as_it_is(finished_run, caplog):
    files = run_files(finished_run)
    assert training_record(finished_run)["seconds"] > 0
    with caplog.at_level(logging.INFO, logger="aenp.train.run"):
        train(tiny_config(None, run_dir=finished_run))
    assert f"{finished_run} is already trained with this config" in caplog.messages
    assert run_files(finished_run) == files
    assert len(list((finished_run / "logs").glob("version_*"))) == 1


def test_finished_run_ignores_presentation_settings(finished_run):
    files = run_files(finished_run)
    train(tiny_config(None, run_dir=finished_run, extra=["trainer.enable_progress_bar=true"]))
    assert run_files(finished_run) == files
    assert len(list((finished_run / "logs").glob("version_*"))) == 1


def test_finished_run_refuses_another_config_naming_what_differs(finished_run):
    files = run_files(finished_run)
    changed = tiny_config(None, run_dir=finished_run, extra=["seed=7", "optimizer.lr=0.1"])
    with pytest.raises(InputError) as error:
        train(changed)
    assert str(error.value).startswith(f"{finished_run} holds a run of another config (")
    assert "optimizer.lr: 0.01 → 0.1" in str(error.value)
    assert "seed: 0 → 7" in str(error.value)
    assert str(error.value).endswith(
        "); a run directory holds the model of one config: train into another directory, or "
        "delete this one to start over"
    )
    assert "trainer" not in str(error.value)
    assert run_files(finished_run) == files


def test_an_experiment_option_added_since_a_run_was_recorded_counts_only_off_its_default():
    new = OmegaConf.to_container(compose_config(["experiment=climate"]), resolve=True)
    old = OmegaConf.to_container(compose_config(["experiment=climate"]), resolve=True)
    del old["experiment"]["options"]["max_in_memory_bytes"]  # recorded before the option
    assert config_changes(old, new) == []
    changed = compose_config(["experiment=climate", "experiment.options.max_in_memory_bytes=0"])
    assert config_changes(old, OmegaConf.to_container(changed, resolve=True)) == [
        "experiment.options.max_in_memory_bytes: (absent) → 0"
    ]
    assert config_changes(new, old) == [
        "experiment.options.max_in_memory_bytes: 1073741824 → (absent)"
    ]
    del old["optimizer"]["warmup_steps"]
    assert config_changes(old, new) == []
    warm = compose_config(["experiment=climate", "optimizer.warmup_steps=100"])
    assert config_changes(old, OmegaConf.to_container(warm, resolve=True)) == [
        "optimizer.warmup_steps: (absent) → 100"
    ]


def test_run_dir_of_another_architecture_is_refused(finished_run):
    files = run_files(finished_run)
    with pytest.raises(InputError, match=r"model\.key: 'convcnp_approx' → 'tnp'"):
        train(tiny_config(None, model="tnp", run_dir=finished_run))
    assert run_files(finished_run) == files


def test_started_run_refuses_another_config(tmp_path):
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "convcnp_approx"
    (run_dir / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"epoch 0")
    files = run_files(run_dir)
    with pytest.raises(InputError, match=r"data.batch_size: 8 → 4\)"):
        train(tiny_config(tmp_path, extra=["data.batch_size=4"]))
    assert run_files(run_dir) == files


def test_aenp_train_refuses_another_config_with_a_message_and_rewrites_no_record(tmp_path):
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "convcnp_approx"
    run_dir.mkdir()
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    files = run_files(run_dir)
    overrides = [f"run_dir={run_dir}", "optimizer.lr=0.5", "model.hparams.channels=8"]
    done = subprocess.run(
        [sys.executable, "-m", "aenp.cli", "train", "model=convcnp_approx", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("aenp train: error: ")
    assert "optimizer.lr: 0.01 → 0.5" in done.stderr
    assert "Traceback" not in done.stderr
    after = run_files(run_dir)
    assert {path: after.get(path) for path in files} == files
    assert not (run_dir / ".hydra").exists()  # Hydra's copy of the config would be rewritten


TRAINING_AT_TOP_LEVEL = """
from aenp.train.run import compose_config, train

train(compose_config({overrides!r}))
"""


def test_a_script_training_at_its_top_level_is_told_to_guard_it_when_a_worker_starts(tmp_path):
    # A starting sampling worker imports the main script again: without the guard, the worker
    # would start training again.
    script = tmp_path / "train_it.py"
    overrides = tiny_overrides(tmp_path, extra=[*ONE_STEP, "data.num_workers=1"])
    script.write_text(TRAINING_AT_TOP_LEVEL.format(overrides=overrides))
    done = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "starts training at its top level: put the training under `if __name__" in done.stderr


def test_slurm_run_keeps_its_files_in_run_dir_and_ignores_checkpoints_in_the_working_dir(
    tmp_path, finished_run, monkeypatch
):
    # On SLURM, Lightning writes a preempted run's checkpoint to its root folder and resumes
    # from the one it finds there: another run's, if that folder were the shared working one.
    slurm = ("NTASKS=1", "JOB_NAME=train", "JOB_ID=1", "PROCID=0", "LOCALID=0", "NODEID=0")
    for setting in slurm:
        name, value = setting.split("=")
        monkeypatch.setenv(f"SLURM_{name}", value)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copy(finished_run / "checkpoints" / "last.ckpt", cwd / "hpc_ckpt_1.ckpt")
    monkeypatch.chdir(cwd)
    run_dir = train(tiny_config(tmp_path, extra=ONE_STEP))
    assert run_dir == tmp_path / "convcnp_approx"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 1)
    assert [p.name for p in cwd.iterdir()] == ["hpc_ckpt_1.ckpt"]


def test_auto_precision_is_bf16_mixed_on_a_gpu_and_full_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _precision("auto") == "bf16-mixed"
    assert _precision("16-mixed") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _precision("auto") == "32-true"


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
@pytest.mark.parametrize(
    "strategy", ["ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false"]
)
def test_ddp_looks_for_unused_parameters_only_where_batches_are_gridded(
    tmp_path, experiment, strategy
):
    # Given grids, a ConvCNP skips its set convolutions; on point sets every parameter gets
    # a gradient (every key's ModelContract checks it), so DDP need not walk the graph.
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", f"trainer.strategy={strategy}"]
    cfg = compose_config([f"run_dir={tmp_path}", *ddp])
    trainer, _ = _trainer(cfg, RunDirectory(tmp_path), EXPERIMENTS[experiment])
    gridded = experiment != "gp1d"
    expected = {"ddp": gridded, "ddp_find_unused_parameters_true": True}.get(strategy, False)
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters", False) is expected


def test_lightnings_short_precision_names_mean_what_they_mean_to_lightning():
    # Hydra reads trainer.precision=64 as an integer.
    assert [_precision(s) for s in (64, "64", 32, "bf16", 16)] == [
        "64-true",
        "64-true",
        "32-true",
        "bf16-mixed",
        "16-mixed",
    ]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("clip", [0.5, None])
def test_mixed_precision_trains_with_gradient_clipping_and_fuses_adamw_without(
    tmp_path, precision, clip
):
    # bf16-mixed is what a GPU trains in by default, and gradient_clip_val=0.5 the default.
    clipping = f"trainer.gradient_clip_val={clip or 'null'}"
    cfg = tiny_config(tmp_path, extra=[*ONE_STEP, f"trainer.precision={precision}", clipping])
    last = torch.load(train(cfg) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1
    (adam,) = last["optimizer_states"]
    assert adam["param_groups"][0]["fused"] is (clip is None)


def record_training_steps(monkeypatch, what):
    """The list that receives ``what(module, batch, loss)`` at every training step."""
    seen = []
    training_step = NeuralProcessModule.training_step

    def recording(self, batch, batch_idx):
        loss = training_step(self, batch, batch_idx)
        seen.append(what(self, batch, loss))
        return loss

    monkeypatch.setattr(NeuralProcessModule, "training_step", recording)
    return seen


@pytest.mark.parametrize("model", ["convcnp_approx", "tetnp_approx"])
def test_what_a_gpu_trains_with_by_default_trains_on_the_cpu(
    tmp_path, monkeypatch, quick_compile, model
):
    # On a GPU, `auto` compiles the loss (on batches padded to 64 context points), trains in
    # bf16-mixed with the default clipping, and samples in a worker.
    seen = record_training_steps(
        monkeypatch,
        lambda module, batch, loss: (
            batch.xc.shape[1],
            module.loss is not negative_mean_loglik,
            bool(loss.isfinite()),
        ),
    )
    gpu = ["trainer.compile=true", "trainer.precision=bf16-mixed", "data.num_workers=1"]
    run_dir = train(tiny_config(tmp_path, model, extra=[*ONE_STEP, *gpu]))
    assert seen == [(64, True, True)]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1


def test_float64_training_steps_in_float64_and_saves_the_model_in_float64(tmp_path, monkeypatch):
    seen = record_training_steps(
        monkeypatch, lambda module, batch, loss: (batch.dtype, next(module.parameters()).dtype)
    )
    run_dir = train(tiny_config(tmp_path, extra=[*ONE_STEP, "trainer.precision=64-true"]))
    assert seen == [(torch.float64, torch.float64)]
    model = aenp.load(run_dir / "model")
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_float64_precision_casts_both_kinds_of_batch_and_keeps_their_masks_boolean():
    points = random_batch(num_context=5).pad_context(8)
    cast = Float64Precision().convert_input(points)
    assert {cast.xc.dtype, cast.yc.dtype, cast.xt.dtype, cast.yt.dtype} == {torch.float64}
    assert torch.equal(cast.context_mask, points.context_mask)
    assert torch.equal(cast.yc, points.yc.double())
    grid = random_grid_batch()
    cast = Float64Precision().convert_input(grid)
    assert cast.y.dtype == torch.float64 and {a.dtype for a in cast.axes} == {torch.float64}
    assert torch.equal(cast.context_mask, grid.context_mask)
    assert torch.equal(cast.target_mask, grid.target_mask)
    # Anything else is cast as Lightning casts it.
    assert Float64Precision().convert_input({"x": torch.ones(2)})["x"].dtype == torch.float64


def test_default_run_dir_holds_one_seed():
    assert compose_config(["seed=1"]).run_dir != compose_config(["seed=2"]).run_dir


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (
            "data.batch_size=abc",
            InputTypeError,
            "data.batch_size must be a positive integer, got 'abc'",
        ),
        ("data.batch_size=1.5", InputTypeError, "data.batch_size must be a positive integer"),
        ("data.batch_size=0", InputError, "data.batch_size must be a positive integer, got 0"),
        ("data.num_train_tasks=-16", InputError, "data.num_train_tasks must be a positive"),
        ("data.num_val_tasks=0", InputError, "data.num_val_tasks must be a positive integer"),
        ("optimizer.lr=0", InputError, "optimizer.lr must be a finite number > 0, got 0"),
        ("optimizer.lr=-1e-3", InputError, "optimizer.lr must be a finite number > 0"),
        ("optimizer.lr=abc", InputTypeError, "optimizer.lr must be a finite number > 0"),
        ("optimizer.weight_decay=-1", InputError, "optimizer.weight_decay must be a finite"),
        ("optimizer.cosine_schedule=maybe", InputTypeError, "cosine_schedule must be true or"),
        ("optimizer.warmup_steps=-1", InputError, "optimizer.warmup_steps must be an integer >= 0"),
        ("optimizer.warmup_steps=0.5", InputTypeError, "optimizer.warmup_steps must be an integer"),
        ("trainer.max_epochs=0", InputError, "trainer.max_epochs must be a positive integer"),
        (
            "trainer.precision=bf16-true",
            InputError,
            "trainer.precision must be auto, 32-true, 64-true, bf16-mixed or 16-mixed "
            r"\(half-precision weights, as bf16-true and 16-true keep them, are not trained\), "
            "got 'bf16-true'",
        ),
        ("trainer.precision=16-true", InputError, "trainer.precision must be auto, 32-true"),
        ("trainer.precision=fp32", InputError, "trainer.precision must be auto, 32-true"),
        ("trainer.precision=true", InputTypeError, "trainer.precision must be auto, 32-true"),
        ("seed=-1", InputError, r"seed must be an integer in \[0, 2\*\*32 - 1\], got -1"),
    ],
)
def test_settings_of_the_wrong_type_or_range_are_refused_naming_the_key(
    tmp_path, override, error, message
):
    with pytest.raises(error, match=message):
        train(tiny_config(tmp_path, extra=[override]))
    assert not (tmp_path / "convcnp_approx").exists()


def test_last_checkpoint_is_the_latest_epoch_even_without_improvement(tmp_path, monkeypatch):
    def worse_every_epoch(self, batch, batch_idx):
        self.log("val/loglik", -float(self.current_epoch), batch_size=len(batch))

    monkeypatch.setattr(NeuralProcessModule, "validation_step", worse_every_epoch)
    run_dir = train(tiny_config(tmp_path, epochs=2, extra=ONE_STEP))
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    best = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (0, 1)


def test_training_stream_changes_with_the_epoch_and_repeats_for_the_same_seed_epoch_and_rank():
    def first_batch(seed, epoch, rank=0):
        data = TaskDataModule(
            lambda n, generator: torch.rand(n, generator=generator), [], 64, 4, seed=seed
        )
        data.trainer = SimpleNamespace(current_epoch=epoch, global_rank=rank, world_size=2)
        return next(iter(data.train_dataloader()))

    assert torch.equal(first_batch(seed=3, epoch=5), first_batch(seed=3, epoch=5))
    assert not torch.equal(first_batch(seed=3, epoch=0), first_batch(seed=3, epoch=1))
    assert not torch.equal(first_batch(seed=3, epoch=0), first_batch(seed=4, epoch=0))
    assert not torch.equal(first_batch(seed=3, epoch=0), first_batch(seed=3, epoch=0, rank=1))


def test_each_rank_draws_its_own_share_of_the_epoch():
    from types import SimpleNamespace

    experiment = get_experiment("gp1d")
    data = TaskDataModule(experiment.sample_train, [], num_train_tasks=64, batch_size=4)
    first = {}
    for rank in (0, 1):
        data.trainer = SimpleNamespace(current_epoch=3, global_rank=rank, world_size=2)
        loader = data.train_dataloader()
        assert len(loader) == 8  # 64 tasks / (4 per batch × 2 ranks)
        first[rank] = next(iter(loader))
    assert not torch.equal(first[0].xt, first[1].xt)


@pytest.mark.parametrize("model", ["tepttnp_approx", "equivcnp_approx"])
def test_trains_and_evaluates_on_smoke2d(tmp_path, model, smoke_store):
    from aenp.evaluate.run import evaluate_run

    sizes = {
        "tepttnp_approx": [
            "model.hparams.embed_dim=8",
            "model.hparams.num_heads=2",
            "model.hparams.num_layers=1",
            "model.hparams.ff_dim=8",
            "model.hparams.num_pseudo_tokens=4",
        ],
        "equivcnp_approx": [
            "model.hparams.channels=2",
            "model.hparams.num_layers=2",
            "model.hparams.kernel_size=3",
        ],
    }
    cfg = compose_config(
        [
            "experiment=smoke2d",
            f"model={model}",
            f"run_dir={tmp_path / model}",
            f"experiment.options.data_dir={smoke_store}",
            "experiment.options.num_targets=16",
            "data.num_train_tasks=16",
            "data.num_val_tasks=4",
            "data.num_test_tasks=4",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            *sizes[model],
        ]
    )
    results = evaluate_run(train(cfg))
    test = results["splits"]["test"]
    assert test["loglik"]["num_tasks"] == 4 and test["delta_equiv"]["num_tasks"] == 4
    assert set(results["splits"]) == {"test", "test_strict"}


@pytest.mark.parametrize("warmup, cosine", [(4, True), (4, False), (0, True)])
def test_the_learning_rate_warms_up_linearly_then_follows_the_cosine(warmup, cosine):
    model = aenp.build_model("convcnp", 1, 1, channels=4, num_layers=1)
    module = NeuralProcessModule(model, lr=0.1, cosine_schedule=cosine, warmup_steps=warmup)
    module._trainer = SimpleNamespace(
        estimated_stepping_batches=20, precision_plugin=Precision(), gradient_clip_val=0.5
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1 * (k + 1) / warmup for k in range(warmup)] + [
        0.1 * (0.5 * (1 + math.cos(math.pi * k / (20 - warmup))) if cosine else 1.0)
        for k in range(20 - warmup)
    ]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
