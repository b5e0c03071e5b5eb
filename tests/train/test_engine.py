"""The fast training path: static shapes, a sampling worker, a compiled loss, settings."""

import math
import threading
from dataclasses import replace

import pytest
import torch

from aenp.data.experiments import Climate, Smoke2D, get_experiment
from aenp.errors import InputError
from aenp.models.registry import build_model
from aenp.train.data import TaskDataModule, TaskStream
from aenp.train.module import (
    NeuralProcessModule,
    adamw,
    compiled_loss,
    compiles,
    negative_mean_loglik,
)
from aenp.train.run import padded_context_size, sampling_workers
from tests.models.test_grid import equal_count_grid_batch
from tests.workers import SAMPLER_LOCK, draw_in_a_worker, sample_gp1d_under_the_lock

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def gp1d_stream(num_context=None, num_batches=6):
    sample = get_experiment("gp1d").sample_train
    return TaskStream(sample, num_batches, 4, (3, 1, 0), num_context)


class TestSettings:
    @pytest.mark.parametrize("setting", ["true", True, "True"])
    def test_true_compiles_on_any_device(self, setting):
        assert compiles(setting, CPU) and compiles(setting, CUDA)

    @pytest.mark.parametrize("setting", ["false", False])
    def test_false_never_compiles(self, setting):
        assert not compiles(setting, CPU) and not compiles(setting, CUDA)

    def test_auto_compiles_on_a_gpu_only(self):
        assert compiles("auto", CUDA) and not compiles("auto", CPU)

    def test_unknown_compile_setting_is_refused(self):
        with pytest.raises(InputError, match=r"trainer.compile must be one of auto, true, false"):
            compiles("fast", CPU)

    def test_pad_context_auto_pads_compiled_steps_to_the_largest_context(self):
        assert padded_context_size("auto", get_experiment("gp1d"), compiled=True) == 64
        assert padded_context_size("auto", get_experiment("gp1d"), compiled=False) is None

    @pytest.mark.parametrize("experiment", [Smoke2D, Climate])
    def test_gridded_experiments_are_not_padded(self, experiment):
        assert padded_context_size("auto", experiment, compiled=True) is None

    def test_pad_context_false_or_a_size(self):
        experiment = get_experiment("gp1d")
        assert padded_context_size(False, experiment, compiled=True) is None
        assert padded_context_size(80, experiment, compiled=False) == 80

    @pytest.mark.parametrize("setting", [0, -3, "many", 2.5])
    def test_bad_pad_context_is_refused(self, setting):
        with pytest.raises(InputError, match=r"data\.pad_context must be auto, false or a"):
            padded_context_size(setting, get_experiment("gp1d"), compiled=True)

    @pytest.mark.parametrize(
        ("cores", "threads", "workers"), [(2, 2, 0), (2, 1, 1), (16, 8, 1), (None, 1, 0)]
    )
    def test_auto_workers_only_with_a_core_to_spare(self, monkeypatch, cores, threads, workers):
        monkeypatch.setattr("os.cpu_count", lambda: cores)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        assert sampling_workers("auto") == workers

    def test_several_workers_are_refused(self):
        # Each worker would draw the whole stream: every task would be seen twice.
        with pytest.raises(InputError, match=r"data\.num_workers must be 0"):
            TaskDataModule(lambda n, g: None, [], 64, 8, num_workers=2)

    def test_a_sampler_a_worker_cannot_receive_is_refused(self):
        # The worker receives the sampler pickled; a lambda would fail later, inside the loader.
        with pytest.raises(InputError, match=r"cannot be pickled .*data\.num_workers=0"):
            TaskDataModule(lambda n, g: None, [], 64, 8, num_workers=1)
        TaskDataModule(lambda n, g: None, [], 64, 8, num_workers=0)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_fused_optimiser_takes_the_textbook_adamw_steps(self, dtype):
        generator = torch.Generator().manual_seed(0)
        start = [torch.randn(shape, generator=generator, dtype=dtype) for shape in [(3, 4), (5,)]]
        fused = [torch.nn.Parameter(p.clone()) for p in start]
        plain = [torch.nn.Parameter(p.clone()) for p in start]
        optimizers = [
            adamw(fused, 1e-2, 0.1),
            torch.optim.AdamW(plain, lr=1e-2, weight_decay=0.1, foreach=False),
        ]
        assert optimizers[0].defaults["fused"] is True
        for _ in range(5):
            gradients = [torch.randn(p.shape, generator=generator, dtype=dtype) for p in start]
            for parameters, optimizer in zip([fused, plain], optimizers, strict=True):
                for p, g in zip(parameters, gradients, strict=True):
                    p.grad = g.clone()
                optimizer.step()
        for a, b, before in zip(fused, plain, start, strict=True):
            torch.testing.assert_close(a, b)
            assert not torch.equal(a.detach(), before)


class TestStaticShapes:
    def test_padded_stream_holds_the_same_tasks(self):
        for plain, padded in zip(gp1d_stream(), gp1d_stream(num_context=64), strict=True):
            nc = plain.xc.shape[1]
            assert padded.xc.shape == (4, 64, 1)
            assert padded.context_mask.sum(1).tolist() == [nc] * 4
            torch.testing.assert_close(padded.xc[:, :nc], plain.xc, rtol=0, atol=0)
            torch.testing.assert_close(padded.yc[:, :nc], plain.yc, rtol=0, atol=0)
            torch.testing.assert_close(padded.yt, plain.yt, rtol=0, atol=0)

    def test_padded_batches_have_one_layout_whatever_their_context_size(self):
        # A compiled step is specialised to shapes and strides: one layout, one compilation.
        stream = list(gp1d_stream(num_context=64))
        assert len({int(batch.context_mask[0].sum()) for batch in stream}) > 1  # sizes differ
        fields = ("xc", "yc", "xt", "yt", "context_mask")
        layouts = {
            tuple((getattr(b, f).shape, getattr(b, f).stride()) for f in fields) for b in stream
        }
        assert len(layouts) == 1

    def test_worker_process_samples_the_same_tasks(self):
        def batches(num_workers):
            module = TaskDataModule(
                get_experiment("gp1d").sample_train, [], 24, 4, seed=5, num_workers=num_workers
            )
            module.num_context = 64
            return list(module.train_dataloader())

        in_process, in_worker = batches(0), batches(1)
        assert len(in_process) == len(in_worker) == 6
        for a, b in zip(in_process, in_worker, strict=True):
            for name in ("xc", "yc", "xt", "yt", "context_mask"):
                assert torch.equal(getattr(a, name), getattr(b, name))

    def test_a_sampling_worker_starts_free_of_the_locks_the_training_process_holds(self):
        # Another thread of the training process holds a lock the sampler takes while the worker
        # starts: a fork of the training process would start with it held, and wait for ever.
        held, release = threading.Event(), threading.Event()

        def hold():
            with SAMPLER_LOCK:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        try:
            drawn = draw_in_a_worker(
                TaskDataModule(sample_gp1d_under_the_lock, [], 8, 4, seed=5, num_workers=1)
            )
        finally:
            release.set()
            holder.join()
        expected = TaskDataModule(get_experiment("gp1d").sample_train, [], 8, 4, seed=5)
        expected = list(expected.train_dataloader())
        assert len(drawn) == len(expected) == 2
        for a, b in zip(drawn, expected, strict=True):
            assert torch.equal(a.yt, b.yt) and torch.equal(a.xc, b.xc)


TINY = {
    "convcnp_approx": {"channels": 8, "num_layers": 2, "points_per_unit": 16},
    "tetnp": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 16},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("key", list(TINY))
def test_compiled_loss_and_gradients_match_eager(quick_compile, key, dtype):
    torch.manual_seed(0)
    model = build_model(key, 1, 1, **TINY[key]).eval().to(dtype)  # no fixed-input dropout
    loss = compiled_loss(model, torch.device("cpu"))
    for batch in gp1d_stream(num_context=64, num_batches=2):  # two context sizes, one shape
        batch = batch.to(dtype=dtype)
        expected = negative_mean_loglik(model, batch)
        expected_grads = torch.autograd.grad(expected, list(model.parameters()))
        got = loss(model, batch)
        got_grads = torch.autograd.grad(got, list(model.parameters()))
        torch.testing.assert_close(got, expected)
        for g, e in zip(got_grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e)


def test_a_compiled_point_set_model_on_gridded_tasks_matches_eager(quick_compile):
    # It gathers the cells into point sets and scatters its prediction back eagerly: their
    # number is read from the masks (smoke2d's transformers train so, compiled, on a GPU).
    torch.manual_seed(0)
    model = build_model("tetnp_approx", 2, 1, **TINY["tetnp"]).eval()
    batch = equal_count_grid_batch(torch.float32)
    expected = negative_mean_loglik(model, batch)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    got = compiled_loss(model, torch.device("cpu"))(model, batch)
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_compiled_convcnp_is_not_recompiled_for_new_positions_or_context_sizes(quick_compile):
    """The grid's anchor and offset are inputs of the compiled graphs, not constants."""
    model = build_model("convcnp", 1, 1, **TINY["convcnp_approx"])
    loss = compiled_loss(model, torch.device("cpu"))
    batch = next(iter(gp1d_stream(num_context=64)))
    loss(model, batch).backward()
    fewer = batch.context_mask & (torch.arange(64) < 5)
    others = [batch.shift(7 / 16), batch.shift(-3.5 / 16), replace(batch, context_mask=fewer)]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for other in others:
            loss(model, other).backward()


def test_training_compiles_a_convcnp_once_while_its_windows_stay_wide_enough(quick_compile):
    """Compiled for training, the set convolutions' windows are widened (to 48 points from 2
    cells down to 1.7), so that a lengthscale falling from 2 to 1.75 cells recompiles nothing;
    with the eager windows (40 points, then 36) it would."""
    model = build_model("convcnp", 1, 1, **TINY["convcnp_approx"])
    module = NeuralProcessModule(model, compile=True)
    module.on_train_start()
    batch = next(iter(gp1d_stream(num_context=64)))

    def step_with_lengthscale(cells):
        for conv in (model.backbone.encoder, model.backbone.decoder):
            conv.log_lengthscale.data.fill_(math.log(cells / model.backbone.points_per_unit))
        module.loss(model, batch).backward()

    step_with_lengthscale(2.0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for cells in (1.9, 1.8, 1.75):
            step_with_lengthscale(cells)
