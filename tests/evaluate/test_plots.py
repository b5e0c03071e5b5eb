"""Figures: what is drawn equals what the models predict, read back from the Figure objects."""

import numpy as np
import pytest
import torch
from matplotlib.font_manager import FontProperties

import aenp
from aenp.batch import Batch, EvaluationBatch
from aenp.data.experiments import Climate, get_experiment
from aenp.evaluate import plots
from aenp.evaluate.plots import (
    CURVE_MARKER_SIZE,
    FIGURE_MARGIN,
    LINE_FIGURE_DPI,
    NUM_PLOT_POINTS,
    PANEL_TITLE_FONTSIZE,
    PLOT_MARGIN,
    departure_map,
    experiment_figures,
    plot_departure_1d,
    plot_departure_2d,
    plot_fixed_inputs_1d,
    plot_maps_2d,
    plot_predictions_1d,
    plot_region_maps,
    plot_training_curves,
)
from aenp.nn.fixed_inputs import FixedInputs, strictly_equivariant
from aenp.run_directory import LOG_DIR
from aenp.testing import random_grid_batch
from tests.climate_fields import annual_field

SMALL = {"channels": 4, "num_layers": 2}


def approx(domain, dim_x=2):
    torch.manual_seed(0)
    return aenp.build_model("convcnp_approx", dim_x, 1, domain=domain, **SMALL).double()


def randomise(model):
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)
    return model.eval()


def items():
    return [EvaluationBatch(random_grid_batch(dtype=torch.float64))]


def image(ax):
    """The values an axes shows as an image, in the orientation they were given."""
    (drawn,) = ax.images
    return np.ma.filled(drawn.get_array().astype(float), np.nan)


def panel_titles_are_small(axes):
    """Whether every titled panel's title has the map figures' panel title size."""
    size = FontProperties(size=PANEL_TITLE_FONTSIZE).get_size_in_points()
    titled = [ax for ax in axes if ax.get_title()]
    return bool(titled) and all(ax.title.get_fontsize() == size for ax in titled)


def band(collection, n):
    """Lower and upper edges of a band drawn by ``fill_between`` over ``n`` points."""
    vertices = collection.get_paths()[0].vertices[:, 1]
    return vertices[1 : n + 1], vertices[n + 2 : 2 * n + 2][::-1]


def test_departure_map_is_zero_for_a_model_equal_to_its_strict_self():
    assert departure_map(approx([[-1.0, 1.0], [-1.0, 1.0]]), items()).abs().max() == 0


def test_departure_map_shows_where_fixed_inputs_act():
    model = randomise(approx([[-1.0, 1.0], [-1.0, 1.0]]))
    departure = departure_map(model, items())
    assert departure.shape == (8, 8) and bool((departure > 0).all())


def test_departure_map_vanishes_when_the_grid_lies_outside_the_domain():
    model = randomise(approx([[5.0, 6.0], [5.0, 6.0]]))
    assert departure_map(model, items()).abs().max() == 0


@torch.no_grad()
def test_maps_show_truth_context_means_errors_and_departure():
    torch.manual_seed(0)
    models = {
        "convcnp_approx": randomise(approx([[-1.0, 1.0], [-1.0, 1.0]])),
        "pttnp": aenp.build_model(
            "pttnp", 2, 1, embed_dim=8, num_heads=2, num_layers=1, ff_dim=8, num_pseudo_tokens=2
        )
        .double()
        .eval(),
    }
    item = items()[0]
    fig = plot_maps_2d(models, item)
    grid = np.array(fig.axes[:9]).reshape(3, 3)
    task = item.batch[0]
    truth = task.y[0, ..., 0]
    everywhere = task.with_every_cell_a_target()
    # Images are [y, x] (transposed), drawn over the grid's own extent.
    np.testing.assert_array_equal(image(grid[0, 0]), truth.T.numpy())
    context = torch.where(task.context_mask[0], truth, torch.nan)
    np.testing.assert_array_equal(image(grid[0, 1]), context.T.numpy())
    assert grid[0, 0].images[0].get_extent() == [-1.0, 1.0, -1.0, 1.0]
    for row, model in enumerate(models.values(), start=1):
        mean = model(everywhere).mean[0, ..., 0]
        np.testing.assert_allclose(image(grid[row, 0]), mean.T.numpy(), rtol=1e-12)
        np.testing.assert_allclose(image(grid[row, 1]), (mean - truth).abs().T, rtol=1e-12)
    with strictly_equivariant(models["convcnp_approx"]):
        strict = models["convcnp_approx"](everywhere).mean[0, ..., 0]
    mean = models["convcnp_approx"](everywhere).mean[0, ..., 0]
    departure = image(grid[1, 2])
    np.testing.assert_allclose(departure, (mean - strict).abs().T, rtol=1e-12)
    assert departure.min() > 0
    assert not grid[2, 2].images and not grid[2, 2].axison  # a strict model has no departure
    assert panel_titles_are_small(grid.flat)


def test_departure_figure_shows_the_departure_map_of_each_approximate_model():
    model = randomise(approx([[-1.0, 1.0], [-1.0, 1.0]]))
    strict = aenp.build_model("convcnp", 2, 1, **SMALL).double()
    fig = plot_departure_2d({"convcnp": strict, "convcnp_approx": model}, items())
    (ax, _colorbar) = fig.axes
    np.testing.assert_allclose(image(ax), departure_map(model, items()).T.numpy(), rtol=1e-12)
    assert ax.get_title() == "ConvCNP (T̃)"
    assert fig.get_suptitle() == "Mean |μ − μ_strict| over test tasks"


@pytest.fixture(scope="module")
def gp1d():
    experiment = get_experiment("gp1d")
    return experiment, {"test": experiment.split("test", 4, 2)}


def approx_1d():
    torch.manual_seed(0)
    model = aenp.build_model(
        "convcnp_approx", 1, 1, domain=[[-2.0, 2.0]], points_per_unit=16, **SMALL
    )
    return randomise(model)


@torch.no_grad()
def test_1d_bands_are_the_predictions_with_the_truth_and_the_training_range(gp1d):
    experiment, tasks = gp1d
    model = approx_1d()
    fig = plot_predictions_1d({"convcnp_approx": model}, experiment, tasks)
    by_size = sorted(tasks["test"], key=lambda item: item.batch.xc.shape[1])
    for ax, item in zip(fig.axes, (by_size[0], by_size[-1]), strict=True):
        task = item.batch[0]
        low, high = task.xt.min().item() - PLOT_MARGIN, task.xt.max().item() + PLOT_MARGIN
        x = torch.linspace(low, high, NUM_PLOT_POINTS)[None, :, None]
        truth = experiment.generator("test").predictive(
            Batch(task.xc.double(), task.yc.double(), x.double())
        )
        pred = model(Batch(task.xc, task.yc, x))
        with strictly_equivariant(model):
            strict = model(Batch(task.xc, task.yc, x))
        expected = {
            "ground truth": (truth.mixture_mean[0], truth.mixture_std[0]),
            "model": (pred.mean[0, :, 0], pred.stddev[0, :, 0]),
            "fixed inputs zeroed": (strict.mean[0, :, 0], strict.stddev[0, :, 0]),
        }
        lines = {line.get_label(): line for line in ax.lines}
        bands = [c for c in ax.collections if hasattr(c, "get_paths") and c.get_paths()]
        for (label, (mean, std)), collection in zip(expected.items(), bands, strict=False):
            np.testing.assert_allclose(lines[label].get_xdata(), x[0, :, 0])
            np.testing.assert_allclose(lines[label].get_ydata(), mean, rtol=1e-6)
            lower, upper = band(collection, NUM_PLOT_POINTS)
            np.testing.assert_allclose(lower, mean - 2 * std, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(upper, mean + 2 * std, rtol=1e-5, atol=1e-6)
        assert not np.allclose(lines["model"].get_ydata(), lines["fixed inputs zeroed"].get_ydata())
        # The training target range, dotted, wherever it falls inside the view.
        edges = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
        assert edges == [e for e in experiment.train_range if low <= e <= high] and edges
        context = ax.collections[-1].get_offsets()
        np.testing.assert_allclose(context, torch.cat([task.xc[0], task.yc[0]], -1))


@torch.no_grad()
def test_1d_fixed_inputs_and_departure_curves(gp1d):
    _, tasks = gp1d
    model = approx_1d()
    strict = aenp.build_model("convcnp", 1, 1, points_per_unit=16, **SMALL)
    models = {"convcnp": strict, "convcnp_approx": model}
    (ax,) = plot_fixed_inputs_1d(models, -4.0, 4.0).axes
    x = torch.linspace(-4.0, 4.0, NUM_PLOT_POINTS)
    values = model.backbone.fixed_inputs.values(x[:, None])
    assert len(ax.lines) == values.shape[1] > 1
    for b, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_ydata(), values[:, b], rtol=1e-6)
    items = tasks["test"]
    (ax,) = plot_departure_1d(models, items, -4.0, 4.0).axes
    departure = []
    for item in items:
        b = item.batch
        xt = x[None, :, None].expand(len(b), -1, -1)
        mean = model(Batch(b.xc, b.yc, xt)).mean[..., 0]
        with strictly_equivariant(model):
            strict = model(Batch(b.xc, b.yc, xt)).mean[..., 0]
        departure.append((mean - strict).abs())
    expected = torch.cat(departure).mean(0)
    (line,) = ax.lines  # the strict model has no curve
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-5)
    # Zero well beyond the fixed inputs' domain [-2, 2] (past the CNN's reach).
    far = (x.abs() > 3.5).numpy()
    assert line.get_ydata()[far].max() == 0 < line.get_ydata().max()


class OneDimensionalExperiment:
    """The least a 1-D experiment offers the figures: gp1d tasks, a training range of its own."""

    dim_x = 1
    evaluation_splits = ("test",)
    train_range = (-1.0, 1.0)

    def __init__(self, gp1d):
        self.experiment, self.tasks = gp1d

    def split(self, name, num_tasks, batch_size):
        return self.tasks[name]

    def generator(self, split):
        return self.experiment.generator(split)


@torch.no_grad()
def test_1d_figures_reach_the_margin_beyond_both_ends_of_the_training_range(
    gp1d, tmp_path, monkeypatch
):
    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    experiment = OneDimensionalExperiment(gp1d)
    paths = experiment_figures(experiment, {"convcnp_approx": approx_1d()}, {}, tmp_path)
    names = ["predictions.png", "fixed_inputs.png", "departure.png", "training_curves.png"]
    assert paths == [tmp_path / name for name in names]
    low, high = experiment.train_range
    for name in ("fixed_inputs.png", "departure.png"):
        (ax,) = figures[name].axes
        assert ax.lines
        for line in ax.lines:
            x = line.get_xdata()
            assert (x[0], x[-1]) == (low - FIGURE_MARGIN, high + FIGURE_MARGIN), name


def test_training_curves_are_the_logged_validation_logliks(tmp_path):
    logs = tmp_path / "run" / LOG_DIR
    for version, text in (
        (0, "epoch,step,train/loss,val/loglik\n0,9,1.5,\n0,10,,-1.25\n"),
        (1, "epoch,step,train/loss,val/loglik\n1,20,,-0.75\n"),
    ):
        (logs / f"version_{version}").mkdir(parents=True)
        (logs / f"version_{version}" / "metrics.csv").write_text(text)
    fig = plot_training_curves({"convcnp": tmp_path / "run"})
    assert fig.dpi == LINE_FIGURE_DPI
    (ax,) = fig.axes
    (line,) = ax.lines
    assert line.get_marker() == "o" and line.get_markersize() == CURVE_MARKER_SIZE
    np.testing.assert_array_equal(line.get_xydata(), [[10, -1.25], [20, -0.75]])
    assert line.get_label() == "ConvCNP (T)"


@pytest.fixture(scope="module")
def pacific(tmp_path_factory):
    """A 2-D climate experiment across the antimeridian: train 172°E-172°W, OOD to 140°W."""
    lat, lon = np.arange(-9.75, 10, 0.5), np.arange(160.25, 230, 0.5)
    years = np.arange(2000, 2010)
    year, la, lo = np.meshgrid(years, lat, lon, indexing="ij")
    values = 280 + 10 * np.cos(np.radians(3 * la)) + 3 * np.sin(np.radians(4 * lo)) + 0.1 * year
    data = annual_field(values, years, lat, lon)
    path = tmp_path_factory.mktemp("pacific") / "field.nc"
    data.to_netcdf(path)
    return Climate(
        data=str(path),
        train_region="-10,10,172,-172",
        ood_region="-10,10,-170,-140",
        train_years=(2000, 2005),
        val_years=(2006, 2007),
        test_years=(2008, 2009),
        patch=16,
    )


@torch.no_grad()
def test_region_maps_show_predictions_across_the_antimeridian(pacific):
    model = randomise(approx([[-1.0, 1.0], [-1.0, 1.0]]))
    fig = plot_region_maps({"convcnp_approx": model}, pacific)
    grid = np.array(fig.axes[:8]).reshape(2, 4)
    assert panel_titles_are_small(grid.flat)
    truth = pacific.figure_field()
    lon = truth["lon"].values
    np.testing.assert_allclose(lon, np.arange(172.25, 220, 0.5), rtol=1e-12)  # no jump
    np.testing.assert_array_equal(image(grid[0, 0]), truth.values[0])
    assert grid[0, 0].images[0].get_extent() == [lon[0], lon[-1], -9.75, 9.75]
    context = truth.where(np.random.default_rng(0).random(truth.shape) < 0.3)
    norm = pacific.normalisation
    mean = aenp.predict(model, context, truth, norm, progress=False)["mean"].values
    with strictly_equivariant(model):
        strict = aenp.predict(model, context, truth, norm, progress=False)["mean"].values
    mean, strict = mean.reshape(truth.shape[1:]), strict.reshape(truth.shape[1:])
    np.testing.assert_allclose(image(grid[1, 0]), mean, rtol=1e-12)
    np.testing.assert_allclose(image(grid[1, 1]), np.abs(mean - truth.values[0]), rtol=1e-12)
    departure = image(grid[1, 3])
    np.testing.assert_allclose(departure, np.abs(mean - strict), rtol=1e-12)
    # Fixed inputs act in the training region (west of 188° = 172°W), not beyond it.
    west = lon <= 187.75
    assert departure[:, west].mean() > 0 and departure[:, lon > 200].max() == 0
    assert departure[:, (lon > 180) & (lon < 188)].min() > 0  # east of 180° as well
    edges = {line.get_xdata()[0] for ax in grid.flat for line in ax.lines}
    assert edges == {188.0}


class GriddedExperiment:
    """The least a 2-D gridded experiment offers the figures (as smoke2d does)."""

    dim_x = 2
    evaluation_splits = ("test",)
    regions = None

    def split(self, name, num_tasks, batch_size):
        return items()


def test_experiment_figures_are_written_as_pngs(tmp_path):
    model = randomise(approx([[-1.0, 1.0], [-1.0, 1.0]]))
    paths = experiment_figures(GriddedExperiment(), {"convcnp_approx": model}, {}, tmp_path)
    names = ["maps.png", "departure.png", "training_curves.png"]
    assert paths == [tmp_path / name for name in names]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporaries left
