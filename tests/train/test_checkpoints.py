import csv
import errno
import io
import pathlib
import re

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import aenp.train.run
from aenp.errors import InputError, MissingFileError
from aenp.train.run import load_checkpoint, train
from tests.train.test_training import ONE_STEP, tiny_config


class RunsCode:
    """Unpickled, it creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def started_run(tmp_path, checkpoint: bytes):
    """The config of a run that started and left ``checkpoint`` as its ``last.ckpt``."""
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "convcnp_approx"
    (run_dir / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
    return cfg


def checkpoint_bytes(content) -> bytes:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/runs/last.ckpt",
        "http://example.com/last.ckpt",
        "s3://bucket/last.ckpt",
        "file:///tmp/last.ckpt",
        "simplecache::https://example.com/last.ckpt",
    ],
)
def test_resume_from_a_url_is_refused_before_anything_is_written(tmp_path, url):
    with pytest.raises(InputError, match="resume must be a local checkpoint file, got the URL"):
        train(tiny_config(tmp_path, extra=[f"resume='{url}'"]))
    assert not (tmp_path / "convcnp_approx").exists()


def test_resume_from_a_missing_file_is_refused(tmp_path):
    with pytest.raises(MissingFileError, match=r"resume checkpoint .*nowhere\.ckpt does not exist"):
        train(tiny_config(tmp_path, extra=[f"resume={tmp_path / 'nowhere.ckpt'}"]))


def test_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(checkpoint_bytes({"state_dict": {}, "epoch": 0, "hook": RunsCode(marker)}))
    with pytest.raises(InputError, match=r"evil\.ckpt holds objects that are not tensors"):
        train(tiny_config(tmp_path, extra=[f"resume={evil}"]))
    assert not marker.exists()
    # The file really runs code when unpickled without the weights-only guard.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_truncated_last_checkpoint_is_named_with_what_to_do(tmp_path, cut):
    whole = checkpoint_bytes({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0})
    cfg = started_run(tmp_path, whole[: int(cut * len(whole))])
    with pytest.raises(InputError) as error:
        train(cfg)
    message = str(error.value)
    assert re.search(r"checkpoints/last\.ckpt cannot be read \(\w", message)  # with the reason
    assert "delete it" in message and "best.ckpt" in message


def test_load_checkpoint_refuses_a_file_that_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(checkpoint_bytes({"w": torch.zeros(3)}))
    with pytest.raises(InputError, match=r"weights\.ckpt is not a training checkpoint"):
        load_checkpoint(path)


def test_failed_checkpoint_save_keeps_the_previous_one_and_the_moved_run_resumes_from_it(
    tmp_path, monkeypatch
):
    real_save = torch.save

    def fails_at_the_second_last_checkpoint(checkpoint, path, *args, **kwargs):
        if "last.ckpt" in str(path) and checkpoint["epoch"] == 1:
            # Half of the file reaches the disk, then the disk is full.
            pathlib.Path(path).write_bytes(checkpoint_bytes(checkpoint)[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(checkpoint, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fails_at_the_second_last_checkpoint)
    cfg = tiny_config(tmp_path, epochs=2, extra=ONE_STEP)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    run_dir = tmp_path / "convcnp_approx"
    checkpoints = run_dir / "checkpoints"
    previous = load_checkpoint(checkpoints / "last.ckpt")
    assert previous["epoch"] == 0 and previous["global_step"] == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (run_dir / "training.json").exists()

    # The run moves to a disk with space; its checkpoints still name the old folder.
    monkeypatch.setattr(torch, "save", real_save)
    run_dir = run_dir.rename(tmp_path / "moved")
    checkpoints = run_dir / "checkpoints"
    cfg.run_dir = str(run_dir)
    train(cfg)
    last = load_checkpoint(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 2)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    # The second start trained epoch 1 only: it resumed rather than started over.
    with open(run_dir / "logs" / "version_1" / "metrics.csv") as f:
        assert {row["epoch"] for row in csv.DictReader(f)} == {"1"}
    assert (run_dir / "training.json").is_file()


class Interrupted(Exception):
    """Raised in place of a kill."""


class InterruptAtEpoch(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Interrupted


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("convcnp_approx", []),
        ("tetnp_approx", []),
        ("convcnp_approx", ["data.num_workers=1"]),
        ("convcnp_approx", ["trainer.precision=64-true"]),
        ("tetnp_approx", ["trainer.precision=bf16-mixed"]),
        ("convcnp_approx", ["trainer.compile=true"]),
    ],
    ids=["convcnp", "tetnp", "worker", "float64", "bf16-mixed", "compiled"],
)
def test_a_run_interrupted_and_resumed_ends_exactly_where_an_uninterrupted_one_ends(
    tmp_path, monkeypatch, request, model, settings
):
    # Approximate models draw which tasks drop their fixed inputs; nothing else in training
    # is random, so these are the models a resumed run could train differently. The tasks
    # are sampled in the training process, or in a sampling worker; the model trains in
    # float32, in float64, or in bf16-mixed with clipping (a GPU's default; AdamW not fused),
    # eagerly or compiled (a GPU's default, whose steps draw the dropout from their seed).
    if "trainer.compile=true" in settings:
        request.getfixturevalue("quick_compile")
    sampling = ["data.num_workers=0", *settings]
    whole = tiny_config(tmp_path, model, epochs=2, extra=sampling, run_dir=tmp_path / "whole")
    uninterrupted = train(whole)
    make_trainer = aenp.train.run._trainer

    def interrupted_in_epoch_1(cfg, run, experiment):
        trainer, best = make_trainer(cfg, run, experiment)
        trainer.callbacks.append(InterruptAtEpoch(1))
        return trainer, best

    monkeypatch.setattr(aenp.train.run, "_trainer", interrupted_in_epoch_1)
    cfg = tiny_config(tmp_path, model, epochs=2, extra=sampling, run_dir=tmp_path / "resumed")
    with pytest.raises(Interrupted):
        train(cfg)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["epoch"] == 0
    monkeypatch.setattr(aenp.train.run, "_trainer", make_trainer)
    resumed = train(cfg)
    expected = load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt")
    actual = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert actual["global_step"] == expected["global_step"] == 16
    for key, weight in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], weight), key
    (adam,) = expected["optimizer_states"]
    for index, state in adam["state"].items():
        for name, value in state.items():
            assert torch.equal(actual["optimizer_states"][0]["state"][index][name], value)


def test_resume_from_a_checkpoint_of_another_model_is_named(tmp_path):
    last = train(tiny_config(tmp_path / "first", extra=ONE_STEP)) / "checkpoints" / "last.ckpt"
    other = tiny_config(tmp_path / "second", model="tnp", extra=[*ONE_STEP, f"resume={last}"])
    with pytest.raises(
        InputError, match=r"resume holds another model than the config builds: missing model\."
    ):
        train(other)


@pytest.mark.parametrize("garbage", [b"another run's checkpoint", bytes(range(256)) * 4])
def test_a_garbled_checkpoint_is_named(tmp_path, garbage):
    path = tmp_path / "garbled.ckpt"
    path.write_bytes(garbage)
    with pytest.raises(
        InputError, match=r"garbled\.ckpt (cannot be read|holds objects that are not)"
    ):
        load_checkpoint(path)


def test_training_stopped_before_its_first_checkpoint_is_named(tmp_path):
    cfg = tiny_config(tmp_path, extra=["+trainer.max_time=00:00:00:00"])
    with pytest.raises(
        InputError,
        match=r"training stopped before its first checkpoint, so .* holds no model: give it "
        r"time for at least one epoch \(trainer\.max_time, trainer\.max_steps\)",
    ):
        train(cfg)
    assert not (tmp_path / "convcnp_approx" / "model").exists()
