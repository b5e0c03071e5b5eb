import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

from aenp.batch import Batch
from aenp.data import gp
from aenp.data.gp import (
    GibbsSwitchKernel,
    GPMixture,
    GPTasks,
    export_tasks,
    gp1d_generator,
    gp1d_split,
    load_exported_tasks,
    switching_kernels,
)
from aenp.errors import InputError, MissingFileError

NOISE_STD = 0.1
# The six gp1d kernels of the design, (changepoint, lengthscale left, lengthscale right), in the
# order switching_kernels returns them.
DESIGN_KERNELS = [
    (c, left, right) for c in (-1.0, 0.0, 1.0) for left, right in ((0.1, 4.0), (4.0, 0.1))
]


def gibbs_loop(x1, x2, changepoint, left, right):
    """Gibbs switching kernel, one entry at a time."""

    def ell(x):
        return left if x < changepoint else right

    out = np.empty((len(x1), len(x2)))
    for i, a in enumerate(x1):
        for j, b in enumerate(x2):
            la, lb = ell(a), ell(b)
            out[i, j] = math.sqrt(2 * la * lb / (la**2 + lb**2)) * math.exp(
                -((a - b) ** 2) / (la**2 + lb**2)
            )
    return out


def gibbs_numpy(x1, x2, changepoint, left, right):
    """Gibbs switching kernel, vectorised with numpy broadcasting."""
    l1 = np.where(np.asarray(x1) < changepoint, left, right)[:, None]
    l2 = np.where(np.asarray(x2) < changepoint, left, right)[None, :]
    sum_sq = l1**2 + l2**2
    return np.sqrt(2 * l1 * l2 / sum_sq) * np.exp(-(np.subtract.outer(x1, x2) ** 2) / sum_sq)


def reference_ground_truth(xc, yc, xt, yt, true_kernel, kernels=DESIGN_KERNELS, noise=NOISE_STD):
    """Mixture and oracle log-likelihood of one task, dense solves, kernel by kernel."""
    nc = len(xc)
    log_marginals, means, stds = [], [], []
    for params in kernels:
        k_cc = gibbs_numpy(xc, xc, *params) + noise**2 * np.eye(nc)
        k_ct = gibbs_numpy(xc, xt, *params)
        k_tt = np.array([gibbs_loop([x], [x], *params)[0, 0] for x in xt])
        if nc:
            log_marginals.append(stats.multivariate_normal.logpdf(yc, np.zeros(nc), k_cc))
            solved = np.linalg.solve(k_cc, k_ct)
            means.append(solved.T @ yc)
            stds.append(np.sqrt(k_tt - np.einsum("ct,ct->t", k_ct, solved) + noise**2))
        else:
            log_marginals.append(0.0)
            means.append(np.zeros(len(xt)))
            stds.append(np.sqrt(k_tt + noise**2))
    log_marginals = np.array(log_marginals)
    weights = np.exp(log_marginals - log_marginals.max())
    weights = weights / weights.sum()
    density = sum(
        w * stats.norm.pdf(yt, m, s) for w, m, s in zip(weights, means, stds, strict=True)
    )
    oracle = stats.norm.pdf(yt, means[true_kernel], stds[true_kernel])
    return np.log(density).mean(), np.log(oracle).mean(), weights


def numpy_task(tasks, i):
    b = tasks.batch.to(torch.float64)
    return (
        b.xc[i, :, 0].numpy(),
        b.yc[i, :, 0].numpy(),
        b.xt[i, :, 0].numpy(),
        b.yt[i, :, 0].numpy(),
        int(tasks.kernel_index[i]),
    )


@pytest.fixture(scope="module")
def val_items():
    return gp1d_split("val", num_tasks=32, batch_size=16)


# Kernel.


def test_switching_kernels_are_the_six_design_kernels():
    kernels = switching_kernels(shift=2.5)
    got = [(k.changepoint, k.lengthscale_left, k.lengthscale_right) for k in kernels]
    assert got == [(c + 2.5, left, right) for c, left, right in DESIGN_KERNELS]
    assert "changepoint=1.5, lengthscale_left=0.1" in repr(kernels[0])


@pytest.mark.parametrize("params", [*DESIGN_KERNELS, (0.3, 0.7, 1.9)])
def test_kernel_matches_gibbs_formula(params):
    rng = np.random.default_rng(0)
    x1, x2 = rng.uniform(-3, 3, (2, 7)), rng.uniform(-3, 3, (2, 9))
    kernel = GibbsSwitchKernel(*params)
    got = kernel(torch.from_numpy(x1)[..., None], torch.from_numpy(x2)[..., None]).to_dense()
    assert got.shape == (2, 7, 9)
    for b in range(2):
        expected = gibbs_loop(x1[b], x2[b], *params)
        np.testing.assert_allclose(got[b].numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(gibbs_numpy(x1[b], x2[b], *params), expected, rtol=1e-12)
    diag = kernel(torch.from_numpy(x1)[..., None], torch.from_numpy(x1)[..., None], diag=True)
    np.testing.assert_allclose(diag.numpy(), 1.0, rtol=1e-14)


def test_kernel_with_equal_lengthscales_is_rbf():
    x1 = torch.linspace(-3, 3, 11, dtype=torch.float64)[:, None]
    x2 = torch.linspace(-2, 4, 13, dtype=torch.float64)[:, None]
    got = GibbsSwitchKernel(0.0, 0.7, 0.7)(x1, x2).to_dense()
    expected = np.exp(-((x1.numpy() - x2.numpy().T) ** 2) / (2 * 0.7**2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("kernel", switching_kernels(), ids=repr)
def test_kernel_is_positive_semidefinite(kernel):
    x = torch.rand(100, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matrix = kernel(4 * x - 2, 4 * x - 2).to_dense()
    assert torch.allclose(matrix, matrix.T)
    assert torch.linalg.eigvalsh(matrix).min() > -1e-10


def test_kernel_rejects_multidimensional_inputs():
    with pytest.raises(ValueError, match="x1 of shape"):
        GibbsSwitchKernel(0.0, 0.1, 4.0).forward(torch.zeros(3, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="lengthscale_right must be positive"):
        GibbsSwitchKernel(0.0, 0.1, 0.0)


# Sampling.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_shapes_and_dtypes(dtype):
    tasks = GPMixture(switching_kernels()).sample(5, torch.Generator().manual_seed(0), dtype)
    b = tasks.batch
    nc = b.xc.shape[1]
    assert (b.xc.shape, b.yc.shape) == ((5, nc, 1), (5, nc, 1))
    assert (b.xt.shape, b.yt.shape) == ((5, 128, 1), (5, 128, 1))
    assert {t.dtype for t in (b.xc, b.yc, b.xt, b.yt)} == {dtype}
    assert tasks.kernel_index.shape == (5,) and tasks.kernel_index.dtype == torch.long


def test_context_size_and_kernel_are_drawn_over_their_whole_range():
    mixture = GPMixture(switching_kernels(), num_target=8)
    generator = torch.Generator().manual_seed(0)
    samples = [mixture.sample(16, generator) for _ in range(60)]
    sizes = {s.batch.xc.shape[1] for s in samples}
    assert min(sizes) >= 1 and max(sizes) <= 64 and len(sizes) > 20
    kernels = torch.cat([s.kernel_index for s in samples])
    assert set(kernels.tolist()) == set(range(6))
    for s in samples:
        assert s.batch.xc.min() >= -2 and s.batch.xc.max() <= 2
        assert s.batch.xt.min() >= -4 and s.batch.xt.max() <= 4


def test_inputs_are_uniform_over_their_shifted_intervals():
    mixture = GPMixture(
        switching_kernels(shift=8.0),
        num_context=(50, 50),
        num_target=50,
        context_range=(0.5, 1.5),
        target_range=(-1.0, 3.0),
        shift=8.0,
    )
    batch = mixture.sample(20, torch.Generator().manual_seed(0), torch.float64).batch
    for x, (low, high) in ((batch.xc, (8.5, 9.5)), (batch.xt, (7.0, 11.0))):
        test = stats.kstest(x.flatten().numpy(), stats.uniform(low, high - low).cdf)
        assert test.pvalue > 0.01, (low, high)


def test_float64_tasks_have_the_float32_inputs_at_full_precision():
    mixture = GPMixture(switching_kernels(), num_target=8)
    narrow, wide = (
        mixture.sample(4, torch.Generator().manual_seed(0), dtype).batch
        for dtype in (torch.float32, torch.float64)
    )
    for name in ("xc", "xt"):
        x32, x64 = getattr(narrow, name), getattr(wide, name)
        # The same draws, rounded once to the batch dtype: not float32 values widened.
        assert torch.equal(x32, x64.float())
        assert not torch.equal(x64, x64.float().double())


def test_samples_follow_their_kernel():
    # Under the task's own kernel, y^T C^{-1} y / n is a chi-squared over n: mean 1.
    tasks = GPMixture(switching_kernels()).sample(
        64, torch.Generator().manual_seed(3), torch.float64
    )
    statistics = []
    for i in range(len(tasks)):
        xc, yc, xt, yt, k = numpy_task(tasks, i)
        x, y = np.concatenate([xc, xt]), np.concatenate([yc, yt])
        cov = gibbs_numpy(x, x, *DESIGN_KERNELS[k]) + NOISE_STD**2 * np.eye(len(x))
        statistics.append(y @ np.linalg.solve(cov, y) / len(x))
    assert abs(np.mean(statistics) - 1) < 0.1


def test_batch_size_is_checked():
    mixture = GPMixture(switching_kernels(), num_target=8)
    assert len(mixture.sample(1, torch.Generator().manual_seed(0))) == 1
    with pytest.raises(InputError, match="batch_size must be at least 1, got 0"):
        mixture.sample(0, torch.Generator().manual_seed(0))


def test_sample_draws_on_the_generator_device_whatever_the_default_device():
    # The meta device stands in for a default device other than the generator's (e.g. a GPU).
    mixture = GPMixture(switching_kernels(), num_target=8)
    expected = mixture.sample(3, torch.Generator().manual_seed(0))
    with torch.device("meta"):
        got = mixture.sample(3, torch.Generator().manual_seed(0))
    assert got.kernel_index.device.type == "cpu" and got.batch.yt.device.type == "cpu"
    assert torch.equal(got.kernel_index, expected.kernel_index)
    assert torch.equal(got.batch.yt, expected.batch.yt)


def test_same_seed_gives_same_tasks():
    mixture = GPMixture(switching_kernels())
    a = mixture.sample(4, torch.Generator().manual_seed(7))
    b = mixture.sample(4, torch.Generator().manual_seed(7))
    c = mixture.sample(4, torch.Generator().manual_seed(8))
    assert torch.equal(a.batch.yt, b.batch.yt) and torch.equal(a.kernel_index, b.kernel_index)
    assert not torch.equal(a.batch.xt, c.batch.xt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernels": []}, "kernels is empty: a GP mixture needs at least one kernel"),
        ({"noise_std": 0.0}, "noise_std must be positive, got 0.0"),
        (
            {"num_context": (5, 2)},
            "num_context must be an inclusive range (min, max) with 0 <= min <= max, got (5, 2)",
        ),
        ({"num_target": 0}, "num_target must be at least 1, got 0"),
        (
            {"context_range": (2.0, 2.0)},
            "context_range must be an interval (low, high) with low < high, got (2.0, 2.0)",
        ),
        (
            {"target_range": (1.0, -1.0)},
            "target_range must be an interval (low, high) with low < high, got (1.0, -1.0)",
        ),
    ],
)
def test_mixture_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(InputError) as error:
        GPMixture(**{"kernels": switching_kernels(), **kwargs})
    assert str(error.value) == message


# Ground truth.


def test_ground_truth_matches_dense_reference():
    mixture = GPMixture(switching_kernels(), num_context=(1, 40), num_target=20)
    generator = torch.Generator().manual_seed(11)
    for _ in range(3):
        tasks = mixture.sample(4, generator)
        truth = mixture.ground_truth(tasks)
        weights = mixture.predictive(tasks.batch).weights
        assert truth.loglik.dtype == torch.float64 and truth.loglik.shape == (4,)
        for i in range(4):
            loglik, oracle, w = reference_ground_truth(*numpy_task(tasks, i))
            assert float(truth.loglik[i]) == pytest.approx(loglik, abs=1e-8)
            assert float(truth.oracle_loglik[i]) == pytest.approx(oracle, abs=1e-8)
            np.testing.assert_allclose(weights[i].numpy(), w, atol=1e-10)


def test_empty_context_gives_prior_predictive():
    mixture = GPMixture(switching_kernels(), num_context=(0, 0))
    tasks = mixture.sample(4, torch.Generator().manual_seed(0))
    assert tasks.batch.xc.shape == (4, 0, 1)
    predictive = mixture.predictive(tasks.batch)
    torch.testing.assert_close(predictive.weights, torch.full((4, 6), 1 / 6, dtype=torch.float64))
    # Every Gibbs kernel has unit variance, so every component is N(0, 1 + noise²).
    expected = stats.norm.logpdf(
        tasks.batch.yt[..., 0].double().numpy(), 0, math.sqrt(1 + NOISE_STD**2)
    ).mean(-1)
    truth = mixture.ground_truth(tasks)
    np.testing.assert_allclose(truth.loglik.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(truth.oracle_loglik.numpy(), expected, rtol=1e-12)
    loglik, _, _ = reference_ground_truth(*numpy_task(tasks, 0))
    assert float(truth.loglik[0]) == pytest.approx(loglik, abs=1e-10)


def test_oracle_beats_mixture_on_average():
    # Small context sets leave the kernel uncertain, so knowing it helps measurably.
    mixture = GPMixture(switching_kernels(), num_context=(1, 8), num_target=32)
    generator = torch.Generator().manual_seed(2)
    gaps = []
    for _ in range(16):
        truth = mixture.ground_truth(mixture.sample(16, generator))
        gaps.append(truth.oracle_loglik - truth.loglik)
    gap = torch.cat(gaps)
    standard_error = gap.std() / math.sqrt(len(gap))
    assert gap.mean() > 3 * standard_error
    assert gap.mean() < 0.5


def test_mixture_moments_match_weighted_components():
    mixture = GPMixture(switching_kernels(), num_context=(3, 3), num_target=10)
    predictive = mixture.predictive(mixture.sample(2, torch.Generator().manual_seed(5)).batch)
    w, m, v = (t.numpy() for t in (predictive.weights, predictive.mean, predictive.var))
    mean = np.einsum("bk,bkt->bt", w, m)
    second = np.einsum("bk,bkt->bt", w, v + m**2)
    np.testing.assert_allclose(predictive.mixture_mean.numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(predictive.mixture_std.numpy(), np.sqrt(second - mean**2), rtol=1e-8)


def test_ground_truth_rejects_bad_kernel_index():
    mixture = GPMixture(switching_kernels())
    tasks = mixture.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="kernel_index must lie in"):
        mixture.ground_truth(GPTasks(tasks.batch, torch.tensor([0, 6])))
    with pytest.raises(ValueError, match="yt must have shape"):
        mixture.predictive(tasks.batch).loglik(tasks.batch.yt[:, :5])


def test_tasks_require_targets():
    batch = Batch(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.zeros(1, 3, 1))
    with pytest.raises(ValueError, match="yt is None"):
        GPTasks(batch, torch.tensor([0]))


# Evaluation splits.


def test_splits_are_deterministic_and_distinct(val_items):
    again = gp1d_split("val", num_tasks=32)
    for (a, ta), (b, tb) in zip(val_items, again, strict=True):
        assert torch.equal(a.batch.yc, b.batch.yc) and torch.equal(a.batch.yt, b.batch.yt)
        assert torch.equal(ta.loglik, tb.loglik)
    test = gp1d_split("test", num_tasks=16)
    assert not torch.equal(val_items[0][0].batch.xt, test[0][0].batch.xt)


def test_ood_split_is_the_shifted_test_distribution():
    ood = gp1d_split("ood", num_tasks=32)
    unshifted = gp1d_generator("test")
    for tasks, truth in ood:
        assert tasks.batch.xc.min() >= 6 and tasks.batch.xc.max() <= 10
        assert tasks.batch.xt.min() >= 4 and tasks.batch.xt.max() <= 12
        back = GPTasks(tasks.batch.shift(-gp.GP1D_OOD_SHIFT), tasks.kernel_index)
        assert back.batch.xt.min() >= -4 and back.batch.xt.max() <= 4
        expected = unshifted.ground_truth(back)
        torch.testing.assert_close(truth.loglik, expected.loglik, rtol=0, atol=1e-10)
        torch.testing.assert_close(truth.oracle_loglik, expected.oracle_loglik, rtol=0, atol=1e-10)


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="val, test, ood"):
        gp1d_split("training")
    with pytest.raises(ValueError, match="train, val, test, ood"):
        gp1d_generator("validation")
    for num_tasks, batch_size in ((20, 16), (0, 16), (-16, 16), (16, 0)):
        expected = f"got num_tasks = {num_tasks}, batch_size = {batch_size}"
        with pytest.raises(InputError, match=f"multiple of batch_size; {expected}"):
            gp1d_split("val", num_tasks=num_tasks, batch_size=batch_size)
    assert gp1d_generator("train").shift == 0 and gp1d_generator("ood").shift == 8


# Export.


@pytest.mark.parametrize("suffix", [".npz", ".nc"])
def test_export_round_trip_is_exact(tmp_path, val_items, suffix):
    path = tmp_path / f"tasks{suffix}"
    export_tasks(path, val_items, gp1d_generator("val"))
    loaded = load_exported_tasks(path)
    assert len(loaded) == len(val_items)
    for (a, ta), (b, tb) in zip(val_items, loaded, strict=True):
        for name in ("xc", "yc", "xt", "yt"):
            x, y = getattr(a.batch, name), getattr(b.batch, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
        assert torch.equal(a.kernel_index, b.kernel_index)
        assert torch.equal(ta.loglik, tb.loglik) and torch.equal(ta.oracle_loglik, tb.oracle_loglik)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_export_layout_for_other_libraries(tmp_path, val_items):
    export_tasks(tmp_path / "tasks.nc", val_items, gp1d_generator("val"))
    export_tasks(tmp_path / "tasks.npz", val_items, gp1d_generator("val"))
    sizes = [t.batch.xc.shape[1] for t, _ in val_items]
    with xr.open_dataset(tmp_path / "tasks.nc") as ds:
        assert ds["xc"].shape == (32, max(sizes), 1)
        assert ds["num_context"].values.tolist() == [n for n in sizes for _ in range(16)]
        short = int(np.argmin(ds["num_context"].values))
        assert np.isnan(ds["yc"].values[short, min(sizes) :]).all()
        assert ds.attrs["noise_std"] == 0.1 and ds.attrs["shift"] == 0.0
        assert len(json.loads(ds.attrs["kernels"])) == 6
    with np.load(tmp_path / "tasks.npz") as data:
        attributes = json.loads(data["attributes"].item())
        assert attributes["target_range"] == [-4.0, 4.0]
        np.testing.assert_array_equal(
            data["gt_loglik"], torch.cat([t.loglik for _, t in val_items])
        )


@pytest.mark.parametrize("suffix", [".npz", ".nc"])
def test_export_keeps_existing_file_when_writing_fails(tmp_path, val_items, monkeypatch, suffix):
    path = tmp_path / f"tasks{suffix}"
    export_tasks(path, val_items[:1], gp1d_generator("val"))

    def write_then_fail(file, *args, **kwargs):
        if suffix == ".npz":
            file.write(b"partial")
        else:
            Path(file).write_bytes(b"partial")
        raise OSError("disk full")

    if suffix == ".npz":
        monkeypatch.setattr(np, "savez", write_then_fail)
    else:
        monkeypatch.setattr(xr.Dataset, "to_netcdf", lambda self, *a, **k: write_then_fail(*a))
    with pytest.raises(OSError, match="disk full"):
        export_tasks(path, val_items, gp1d_generator("val"))
    monkeypatch.undo()
    assert len(load_exported_tasks(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    # The next export succeeds.
    export_tasks(path, val_items, gp1d_generator("val"))
    assert len(load_exported_tasks(path)) == len(val_items)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_export_refuses_a_folder_and_a_missing_folder(tmp_path, val_items):
    (tmp_path / "tasks.nc").mkdir()
    (tmp_path / "tasks.nc" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is an existing folder; aenp does not delete folders"):
        export_tasks(tmp_path / "tasks.nc", val_items, gp1d_generator("val"))
    assert (tmp_path / "tasks.nc" / "notes.txt").read_text() == "mine"
    with pytest.raises(MissingFileError, match=r"folder .*absent.* does not exist"):
        export_tasks(tmp_path / "absent" / "tasks.nc", val_items, gp1d_generator("val"))


def test_export_refuses_items_that_do_not_agree(tmp_path, val_items):
    (tasks, truth), other = val_items
    wider = GPTasks(tasks.batch.to(torch.float64), tasks.kernel_index)
    with pytest.raises(
        InputError,
        match=r"items must agree on the dtype and per-task shape of xc to be exported together; "
        r"got \[.*torch\.float32.*torch\.float64.*\]",
    ):
        export_tasks(tmp_path / "tasks.npz", [other, (wider, truth)], gp1d_generator("val"))
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path, val_items):
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        load_exported_tasks(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=r"\.npz, \.nc"):
        load_exported_tasks(tmp_path / "tasks.csv")
    with pytest.raises(ValueError, match=r"\.npz, \.nc"):
        export_tasks(tmp_path / "tasks.csv", val_items, gp1d_generator("val"))

    export_tasks(tmp_path / "full.npz", val_items, gp1d_generator("val"))
    with np.load(tmp_path / "full.npz") as data:
        arrays = {name: data[name] for name in data.files if name not in ("yt", "kernel_index")}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(
        InputError, match=r"partial\.npz' lacks the required array\(s\) yt, kernel_index$"
    ):
        load_exported_tasks(tmp_path / "partial.npz")

    export_tasks(tmp_path / "full.nc", val_items, gp1d_generator("val"))
    xr.load_dataset(tmp_path / "full.nc").drop_vars("oracle_loglik").to_netcdf(
        tmp_path / "partial.nc"
    )
    with pytest.raises(ValueError, match=r"partial\.nc.*oracle_loglik"):
        load_exported_tasks(tmp_path / "partial.nc")
