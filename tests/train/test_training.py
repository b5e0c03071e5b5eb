import pytest
import torch

import aenp
from aenp.data.experiments import get_experiment
from aenp.testing import random_batch
from aenp.train.data import TaskDataModule, TaskStream
from aenp.train.module import NeuralProcessModule, mean_loglik
from aenp.train.run import compose_config, train, training_log, training_record

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


def tiny_config(tmp_path, model="convcnp_approx", epochs=1, extra=()):
    return compose_config(
        [
            f"model={model}",
            f"run_dir={tmp_path / model}",
            "data.num_train_tasks=64",
            "data.num_val_tasks=32",
            "data.num_test_tasks=32",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            *TINY[model],
            *extra,
        ]
    )


SMALL_TRANSFORMER = {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 16}
SMALL_MODELS = {
    "tnp": SMALL_TRANSFORMER,
    "tetnp": SMALL_TRANSFORMER,
    "pttnp": {**SMALL_TRANSFORMER, "num_pseudo_tokens": 4},
    "tepttnp": {**SMALL_TRANSFORMER, "num_pseudo_tokens": 4},
    "convcnp": {"channels": 8, "num_layers": 2},
    "relaxed_convcnp": {"channels": 8, "num_layers": 2},
    "equivcnp": {"channels": 2, "num_layers": 2, "kernel_size": 3, "points_per_unit": 8},
}


@pytest.mark.parametrize("key", aenp.model_keys())
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(key):
    from aenp.models.registry import strict_counterpart

    torch.manual_seed(0)
    base = strict_counterpart(key) if key.endswith("_approx") else key
    dim_x = 2 if base == "equivcnp" else 1
    hparams = dict(SMALL_MODELS[base])
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


def test_train_writes_model_checkpoints_and_logs(tmp_path):
    run_dir = train(tiny_config(tmp_path))
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    model = aenp.load(run_dir / "model")
    assert aenp.model_name(model) == "convcnp_approx"
    assert any(row.get("val/loglik") for row in training_log(run_dir))


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    first = torch.load(tmp_path / "convcnp_approx/checkpoints/last.ckpt", weights_only=True)
    # Starting the same run again with a longer budget continues where it stopped.
    train(tiny_config(tmp_path, epochs=2))
    second = torch.load(tmp_path / "convcnp_approx/checkpoints/last.ckpt", weights_only=True)
    assert first["epoch"] == 0 and second["epoch"] == 1
    assert second["global_step"] == 2 * first["global_step"]
    # The logs of both starts are kept, one validation per epoch.
    assert [r["epoch"] for r in training_log(tmp_path / "convcnp_approx") if r["val/loglik"]] == [
        "0",
        "1",
    ]


def test_finished_run_started_again_is_left_as_it_is(tmp_path):
    run_dir = train(tiny_config(tmp_path, epochs=1))
    record = training_record(run_dir)
    weights = (run_dir / "model" / "model.safetensors").read_bytes()
    assert record["seconds"] > 0
    train(tiny_config(tmp_path, epochs=1))
    assert training_record(run_dir) == record
    assert (run_dir / "model" / "model.safetensors").read_bytes() == weights
    assert len(list((run_dir / "logs").glob("version_*"))) == 1


def test_last_checkpoint_is_the_latest_epoch_even_without_improvement(tmp_path):
    # With a zero learning rate the validation score never improves after the first epoch.
    run_dir = train(tiny_config(tmp_path, epochs=2, extra=["optimizer.lr=0"]))
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    best = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (0, 1)


def test_finished_run_ignores_presentation_settings(tmp_path):
    run_dir = train(tiny_config(tmp_path, epochs=1))
    record = training_record(run_dir)
    train(tiny_config(tmp_path, epochs=1, extra=["trainer.enable_progress_bar=true"]))
    assert training_record(run_dir) == record
    assert len(list((run_dir / "logs").glob("version_*"))) == 1


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
def test_trains_and_evaluates_on_smoke2d(tmp_path, model):
    from aenp.data.smoke import SmokeSettings, generate
    from aenp.evaluate.run import evaluate_run

    store = generate(tmp_path / "smoke", 8, 2, SmokeSettings(16, 3), 4, progress=False)
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
            f"experiment.options.data_dir={store}",
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
