"""What changes on an accelerator: evaluation, gridded batches, compiled steps, training.

These run on the device that ``AENP_TEST_DEVICE`` names, by default the GPU where there is one
and else the CPU, where compiling uses AOTAutograd's eager backend, as the other tests do, and
the comparisons with the CPU are skipped. ``benchmarks/gpu_check.sh`` runs them first on a GPU
machine.
"""

import os

import pytest
import torch

import aenp
from aenp.data.experiments import get_experiment
from aenp.evaluate.metrics import ieee_float32, per_task_metrics
from aenp.models.neural_process import NeuralProcess
from aenp.testing import random_batch, random_grid_batch, randomise_fixed_inputs
from aenp.train.module import (
    NeuralProcessModule,
    compiled_loss,
    negative_mean_loglik,
    seed_generators,
)
from aenp.train.run import compose_config, experiment_from_config, train

from .models.test_contract import SMALL_APPROX, SMALL_BY_KEY, SMALL_CONVCNP, SMALL_PT
from .train.test_ddp_climate import overrides as climate_overrides
from .train.test_training import tiny_config

DEVICE = os.environ.get("AENP_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
against_the_cpu = pytest.mark.skipif(DEVICE == "cpu", reason="compares another device with the CPU")
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
"""Float32 on two devices: the same sums in another order."""


@pytest.fixture
def device_compile(request):
    """Compiles as the device trains, without the shape checks torch.compile cannot trace.

    Inductor (and CUDA graphs) on a GPU; on the CPU AOTAutograd's eager backend, for speed.
    """
    request.getfixturevalue("quick_compile" if DEVICE == "cpu" else "unchecked_shapes")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def small_model(key: str) -> NeuralProcess:
    """A small 1-D model of ``key``, its fixed inputs (if any) as training leaves them."""
    hparams = SMALL_BY_KEY[key.removesuffix("_approx")]
    if key.endswith("_approx"):
        hparams = {**hparams, **SMALL_APPROX}
    torch.manual_seed(0)
    return randomise_fixed_inputs(aenp.build_model(key, 1, 1, **hparams))


@against_the_cpu
@pytest.mark.parametrize("key", ["convcnp_approx", "tetnp_approx"])
def test_evaluation_on_the_device_matches_the_cpu(key):
    # In full float32 on both: TF32 convolutions (cuDNN's default) would move these by ~1e-3.
    model = small_model(key)
    split = get_experiment("gp1d").split("test", 32, 16)
    on_cpu = per_task_metrics(model, split)
    on_device = per_task_metrics(model.to(DEVICE), split)
    assert set(on_device) == {
        "loglik",
        "rmse",
        "context_loglik",
        "gt_loglik",
        "oracle_loglik",
        "gap",
        "delta_equiv",
    }
    assert all(values.device.type == "cpu" for values in on_device.values())
    for name, values in on_cpu.items():
        torch.testing.assert_close(on_device[name], values, **TOLERANCE, msg=name)


@against_the_cpu
@pytest.mark.parametrize(
    ("key", "hparams"),
    [
        ("convcnp_approx", {**SMALL_CONVCNP, **SMALL_APPROX, "domain": [[-1, 1], [-1, 1]]}),
        ("pttnp", SMALL_PT),
    ],
)
@ieee_float32()  # as evaluation runs: TF32 convolutions would differ by ~1e-3
def test_gridded_tasks_on_the_device_predict_what_they_predict_on_the_cpu(key, hparams):
    torch.manual_seed(0)
    model = randomise_fixed_inputs(aenp.build_model(key, 2, 1, **hparams)).eval()
    batch = random_grid_batch(batch_size=1, shape=(16, 16))  # point sets: one count per task
    with torch.no_grad():
        on_cpu = model(batch)
        moved = batch.to(DEVICE)
        on_device = model.to(DEVICE)(moved)
    assert moved.device.type == torch.device(DEVICE).type
    assert on_device.mean.device == moved.y.device
    for got, expected in [(on_device.mean, on_cpu.mean), (on_device.stddev, on_cpu.stddev)]:
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCE)


@pytest.mark.parametrize("key", ["convcnp", "tetnp"])
@ieee_float32()
def test_a_compiled_loss_on_the_device_matches_eager_step_after_step(key, device_compile):
    # Each step brings another batch: a replayed CUDA graph must read the new one. In full
    # float32, so that TF32 convolutions do not differ between the two.
    device = torch.device(DEVICE)
    model = small_model(key).to(device)
    loss_of = compiled_loss(model, device)
    for seed in range(3):
        batch = random_batch(batch_size=4, num_context=5, num_target=9, seed=seed)
        batch = batch.pad_context(8).to(device)
        results = []
        for loss_function in (loss_of, negative_mean_loglik):
            model.zero_grad(set_to_none=True)
            loss = loss_function(model, batch)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters()]
            results.append((loss.detach().clone(), grads))
        (compiled, compiled_grads), (eager, eager_grads) = results
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        for got, expected in zip(compiled_grads, eager_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)


def test_compiled_steps_on_the_device_draw_their_dropout_from_the_step_seed(device_compile):
    # An approximate model drops each task's fixed inputs at random; seeded alike, a compiled
    # (on a GPU, replayed) step draws alike, and seeded otherwise it draws otherwise.
    device = torch.device(DEVICE)
    model = small_model("convcnp_approx").to(device)
    loss_of = compiled_loss(model, device)
    batch = random_batch(batch_size=16, num_context=5, num_target=9).pad_context(8).to(device)

    def loss_with_seed(seed):
        seed_generators(seed, device)
        return loss_of(model, batch).item()

    first, again, other = loss_with_seed(1), loss_with_seed(1), loss_with_seed(2)
    # Alike up to a GPU's choice of kernels; the masks, when they differ, move the loss far more.
    assert again == pytest.approx(first, rel=1e-6)
    assert other != pytest.approx(first, rel=1e-3)


@pytest.mark.parametrize("experiment", ["gp1d", "climate"])
def test_training_on_the_device_uses_its_defaults_and_saves_a_model(
    tmp_path, monkeypatch, experiment, request, device_compile
):
    # auto on a GPU: the loss compiled (CUDA graphs), bf16-mixed with clipping, a sampling
    # worker, and for point sets padded batches; on the CPU float32, and compiled too here
    # (auto would not) so that the compiled path runs wherever this does. Gridded tasks
    # (climate) take the grid path of the model and of the batch.
    device = torch.device(DEVICE)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    seen = []
    step = NeuralProcessModule.training_step

    def recording_step(module, batch, batch_idx):
        autocast = torch.is_autocast_enabled(device.type)
        seen.append((batch.device.type, module.loss is not negative_mean_loglik, autocast))
        return step(module, batch, batch_idx)

    monkeypatch.setattr(NeuralProcessModule, "training_step", recording_step)
    on_device = [f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.compile=true"]
    if experiment == "gp1d":
        cfg = tiny_config(tmp_path, extra=on_device)
    else:
        field = request.getfixturevalue("climate_field")
        cfg = compose_config([*climate_overrides(field, tmp_path / "run"), *on_device])
    run_dir = train(cfg)
    on_gpu = device.type == "cuda"
    assert seen and set(seen) == {(device.type, True, on_gpu)}
    model = aenp.load(run_dir / "model")
    batch = experiment_from_config(cfg).split("test", 2, 2)[0].batch
    with torch.no_grad():
        prediction = model(batch)
    assert bool(torch.isfinite(prediction.mean).all() & torch.isfinite(prediction.stddev).all())
