"""Figures: 1-D predictive bands, learned fixed inputs, maps and training curves.

Every ``plot_*`` function returns its :class:`~matplotlib.figure.Figure` (so what it draws can
be inspected); :func:`experiment_figures` writes them with :func:`save_figure`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from aenp.batch import Batch, EvaluationBatch
from aenp.data.climate import select_cells
from aenp.data.experiments import GP1D, Experiment, RegionalExperiment
from aenp.evaluate.metrics import departure_from_equivariance, is_approximate
from aenp.evaluate.tables import display_name
from aenp.files import atomic_write
from aenp.models.neural_process import NeuralProcess
from aenp.nn.fixed_inputs import FixedInputs, strictly_equivariant
from aenp.prediction import ExtrapolationWarning, predict
from aenp.run_directory import RunDirectory

AS_TRAINED_COLOUR = "tab:blue"
STRICT_COLOUR = "tab:red"
TRUTH_COLOUR = "black"
LINE_FIGURE_DPI = 110
"""Resolution, in dots per inch, of the figures of curves and bands."""
CURVE_MARKER_SIZE = 3
"""Size of the markers at the logged steps of a training curve."""
PANEL_TITLE_FONTSIZE = "small"
"""Font size of the titles over the panels of a map figure, which are narrow."""
NUM_PLOT_POINTS = 400
PLOT_MARGIN = 1.0
"""Extent shown beyond the targets' range, so the edge of the training range is visible."""
FIGURE_MARGIN = 2.0
"""How far beyond the training range the 1-D figures of fixed inputs and departure reach."""
DEPARTURE_TASKS = 64
"""Test tasks averaged in the figures of where models depart from equivariance."""
FIGURE_BATCHES = 8
"""Batches (of two tasks) per split the 1-D figure chooses from: the fewest and most contexts."""


def _band(ax, x, mean, std, colour, label, **kwargs) -> None:
    ax.plot(x, mean, color=colour, label=label, **kwargs)
    ax.fill_between(x, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.15, linewidth=0)


@torch.no_grad()
def plot_predictions_1d(
    models: Mapping[str, NeuralProcess],
    experiment: GP1D,
    tasks: Mapping[str, list[EvaluationBatch]],
) -> Figure:
    """Predictive mean ± 2 std of every model beside the ground truth, one row per model.

    Approximate models are drawn as trained (blue) and with fixed inputs zeroed (red); the
    ground-truth mixture predictive is black, the training target range dotted.

    Args:
        models: Trained models by registry key.
        experiment: The gp1d experiment (for ground-truth predictives).
        tasks: Evaluation batches per split; of each split, the first task of the batch with
            the fewest and of the batch with the most context points is drawn.
    """
    columns = _fewest_and_most_contexts(tasks)
    fig = Figure(
        figsize=(4 * len(columns), 2.6 * len(models)), dpi=LINE_FIGURE_DPI, layout="constrained"
    )
    axes = fig.subplots(len(models), len(columns), squeeze=False, sharex="col")
    for col, (split, task) in enumerate(columns):
        low = task.xt.min().item() - PLOT_MARGIN
        high = task.xt.max().item() + PLOT_MARGIN
        x = torch.linspace(low, high, NUM_PLOT_POINTS)[None, :, None]
        dense = Batch(task.xc.double(), task.yc.double(), x.double())
        truth = experiment.generator(split).predictive(dense)
        for row, (key, model) in enumerate(models.items()):
            ax = axes[row, col]
            _band(
                ax,
                x[0, :, 0],
                truth.mixture_mean[0],
                truth.mixture_std[0],
                TRUTH_COLOUR,
                "ground truth",
                linestyle="--",
            )
            _model_bands(ax, model, Batch(task.xc, task.yc, x))
            _context_and_training_range(ax, task, experiment.train_range, low, high)
            if col == 0:
                ax.set_ylabel(display_name(key))
            if row == 0:
                ax.set_title(f"{split}: {task.xc.shape[1]} context points")
    _legend_below(fig, axes)
    return fig


def _fewest_and_most_contexts(
    tasks: Mapping[str, list[EvaluationBatch]],
) -> list[tuple[str, Batch]]:
    """``(split, task)``: the first task of each split's batches with fewest and most contexts."""
    columns = []
    for split, items in tasks.items():
        by_size = sorted(items, key=lambda item: item.batch.xc.shape[1])
        columns += [(split, by_size[0].batch[0]), (split, by_size[-1].batch[0])]
    return columns


def _model_bands(ax, model: NeuralProcess, task: Batch) -> None:
    """A model's predictive bands on a one-task batch: as trained and with fixed inputs zeroed."""
    model.eval()
    x = task.xt[0, :, 0]
    pred = model(task)
    _band(ax, x, pred.mean[0, :, 0], pred.stddev[0, :, 0], AS_TRAINED_COLOUR, "model")
    if is_approximate(model):
        with strictly_equivariant(model):
            strict = model(task)
        _band(
            ax,
            x,
            strict.mean[0, :, 0],
            strict.stddev[0, :, 0],
            STRICT_COLOUR,
            "fixed inputs zeroed",
        )


def _context_and_training_range(
    ax, task: Batch, train_range: tuple[float, float], low: float, high: float
) -> None:
    """A task's context points, and the edges of the training range inside ``[low, high]``."""
    ax.scatter(
        task.xc[0, :, 0], task.yc[0, :, 0], s=10, color=TRUTH_COLOUR, zorder=3, label="context"
    )
    for edge in train_range:
        if low <= edge <= high:
            ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(low, high)


def _legend_below(fig: Figure, axes: np.ndarray) -> None:
    """One legend under the figure, naming each label of its panels once."""
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles)
    )


@torch.no_grad()
def plot_fixed_inputs_1d(models: Mapping[str, NeuralProcess], low: float, high: float) -> Figure:
    """The learned fixed inputs ``t_b(x)`` of each approximate model over ``[low, high]``."""
    approximate = {k: m for k, m in models.items() if is_approximate(m)}
    fig = Figure(
        figsize=(6, 2.6 * max(1, len(approximate))), dpi=LINE_FIGURE_DPI, layout="constrained"
    )
    axes = fig.subplots(max(1, len(approximate)), 1, squeeze=False)[:, 0]
    x = torch.linspace(low, high, NUM_PLOT_POINTS)[:, None]
    for ax, (key, model) in zip(axes, approximate.items(), strict=False):
        module = next(m for m in model.modules() if isinstance(m, FixedInputs))
        values = module.values(x).numpy()
        for b in range(values.shape[1]):
            ax.plot(x[:, 0], values[:, b], label=f"t{b + 1}")
        ax.set_title(f"{display_name(key)}: learned fixed inputs (zero outside the domain)")
        ax.legend(ncols=values.shape[1], fontsize="small")
    return fig


def plot_training_curves(run_dirs: Mapping[str, Path]) -> Figure:
    """Validation log-likelihood per epoch of each run (from its CSV log)."""
    fig = Figure(figsize=(6, 4), dpi=LINE_FIGURE_DPI, layout="constrained")
    ax = fig.subplots()
    for key, run_dir in run_dirs.items():
        rows = [r for r in RunDirectory(run_dir).training_log() if r.get("val/loglik")]
        if not rows:
            continue
        steps = np.array([float(r["step"]) for r in rows])
        values = np.array([float(r["val/loglik"]) for r in rows])
        ax.plot(steps, values, marker="o", markersize=CURVE_MARKER_SIZE, label=display_name(key))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation log-likelihood")
    if ax.lines:
        ax.legend()
    return fig


@torch.no_grad()
def plot_departure_1d(
    models: Mapping[str, NeuralProcess],
    items: list[EvaluationBatch],
    low: float,
    high: float,
) -> Figure:
    """Where each approximate model departs from equivariance: mean ``|μ − μ_strict|`` at ``x``.

    The predictive means with fixed inputs on and zeroed are compared on a dense grid of
    targets over ``[low, high]`` for every task of ``items``, and averaged over tasks.
    """
    approximate = {k: m for k, m in models.items() if is_approximate(m)}
    fig = Figure(figsize=(6, 3), dpi=LINE_FIGURE_DPI, layout="constrained")
    ax = fig.subplots()
    x = torch.linspace(low, high, NUM_PLOT_POINTS)
    for key, model in approximate.items():
        model.eval()
        departure = []
        for item in items:
            b = item.batch
            xt = x[None, :, None].expand(len(b), -1, -1)
            departure.append(departure_from_equivariance(model, Batch(b.xc, b.yc, xt)).mean(-1))
        ax.plot(x, torch.cat(departure).mean(0), label=display_name(key))
    ax.set_xlabel("x")
    ax.set_ylabel("mean |μ − μ_strict|")
    ax.set_title("Departure from equivariance over the input space")
    ax.legend()
    return fig


def _image(ax, values: torch.Tensor, extent, title: str, **kwargs) -> AxesImage:
    """A 2-D field ``[x, y]`` drawn with x to the right and y upwards."""
    image = ax.imshow(values.T.numpy(), origin="lower", extent=extent, **kwargs)
    ax.set_title(title, fontsize=PANEL_TITLE_FONTSIZE)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


@torch.no_grad()
def plot_maps_2d(
    models: Mapping[str, NeuralProcess], item: EvaluationBatch, task: int = 0
) -> Figure:
    """Predictive mean and |error| of every model on one gridded task, beside the truth.

    The first row shows the true field and the context; each model has a row with its mean,
    its absolute error over the whole grid and, for approximate models, where it departs from
    equivariance (``|μ − μ_strict|``). Point-set models predict every cell for this figure.
    """
    batch = item.batch[task]
    # Ask every model for every cell, so maps are complete.
    everywhere = batch.with_every_cell_a_target()
    axes_x, axes_y = batch.axes
    extent = (axes_x[0].item(), axes_x[-1].item(), axes_y[0].item(), axes_y[-1].item())
    truth = batch.y[0, ..., 0]
    vmin, vmax = truth.min().item(), truth.max().item()
    fig = Figure(figsize=(9, 3 * (len(models) + 1)), dpi=90, layout="constrained")
    grid = fig.subplots(len(models) + 1, 3, squeeze=False)
    _image(grid[0, 0], truth, extent, "truth", vmin=vmin, vmax=vmax)
    context = torch.where(batch.context_mask[0], truth, torch.nan)
    _image(
        grid[0, 1],
        context,
        extent,
        f"context ({int(batch.context_mask.sum())} cells)",
        vmin=vmin,
        vmax=vmax,
    )
    grid[0, 2].axis("off")
    for row, (key, model) in enumerate(models.items(), start=1):
        model.eval()
        mean = _dense_mean(model, everywhere)
        _image(grid[row, 0], mean, extent, f"{display_name(key)}: mean", vmin=vmin, vmax=vmax)
        _image(grid[row, 1], (mean - truth).abs(), extent, "|error|", vmin=0, vmax=vmax - vmin)
        if is_approximate(model):
            departure = departure_from_equivariance(
                model, everywhere, mean=_dense_mean, as_trained=mean
            )
            image = _image(grid[row, 2], departure, extent, "|μ − μ_strict|", cmap="magma")
            fig.colorbar(image, ax=grid[row, 2], shrink=0.8)
        else:
            grid[row, 2].axis("off")
    return fig


def _dense_mean(model: NeuralProcess, batch) -> torch.Tensor:
    """Predictive mean at every cell of a one-task grid, ``[x, y]``."""
    return model(batch).mean[0, ..., 0]


@torch.no_grad()
def departure_map(model: NeuralProcess, items: list[EvaluationBatch]) -> torch.Tensor:
    """Mean ``|μ − μ_strict|`` at every cell of a gridded split, ``[*grid]``.

    Every cell is predicted (not only the targets), with fixed inputs on and zeroed.
    """
    model.eval()
    total, count = 0.0, 0
    for item in items:
        everywhere = item.batch.with_every_cell_a_target()
        total = total + departure_from_equivariance(model, everywhere).mean(-1).sum(0)
        count += len(everywhere)
    return total / count


def plot_departure_2d(models: Mapping[str, NeuralProcess], items: list[EvaluationBatch]) -> Figure:
    """Where each approximate model departs from equivariance: :func:`departure_map`."""
    approximate = {k: m for k, m in models.items() if is_approximate(m)}
    fig = Figure(figsize=(3.4 * max(1, len(approximate)), 3.2), dpi=90, layout="constrained")
    axes = fig.subplots(1, max(1, len(approximate)), squeeze=False)[0]
    axes_x, axes_y = items[0].batch.axes
    extent = (axes_x[0].item(), axes_x[-1].item(), axes_y[0].item(), axes_y[-1].item())
    for ax, (key, model) in zip(axes, approximate.items(), strict=False):
        image = _image(ax, departure_map(model, items), extent, display_name(key), cmap="magma")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("Mean |μ − μ_strict| over test tasks")
    return fig


@torch.no_grad()
def plot_region_maps(
    models: Mapping[str, NeuralProcess], experiment: RegionalExperiment, fraction: float = 0.3
) -> Figure:
    """Maps over the training and OOD regions for one test year, in the data's units.

    The first row shows the true field, the context (a random ``fraction`` of the cells) and,
    for 4-D inputs, the surface elevation; every model has a row with its predictive mean,
    |error|, predictive std and, for approximate models, ``|μ − μ_strict|``: where, and by
    how much, the fixed inputs make it depart from equivariance. A dashed line marks the edge
    of the training region.
    """
    truth = experiment.figure_field()
    rng = np.random.default_rng(0)
    context = truth.where(rng.random(truth.shape) < fraction)
    norm = experiment.normalisation
    lat, lon = truth["lat"].values, truth["lon"].values
    extent = (lon[0], lon[-1], lat[0], lat[-1])
    values = truth.values[0]
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    fig = Figure(figsize=(13, 2.6 * (len(models) + 1)), dpi=100, layout="constrained")
    grid = fig.subplots(len(models) + 1, 4, squeeze=False)

    def show(ax, field, title, edge=True, **kwargs):
        image = ax.imshow(field, origin="lower", extent=extent, aspect="auto", **kwargs)
        if edge:
            ax.axvline(experiment.train_edge, color="white", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=PANEL_TITLE_FONTSIZE)
        fig.colorbar(image, ax=ax, shrink=0.8)

    show(grid[0, 0], values, f"truth ({truth['time'].dt.year.item()})", vmin=vmin, vmax=vmax)
    show(grid[0, 1], context.values[0], "context", vmin=vmin, vmax=vmax)
    elevation = experiment.elevation
    if elevation is not None:
        show(
            grid[0, 2],
            select_cells(elevation, truth),
            "elevation (m)",
            cmap="terrain",
        )
    for ax in grid[0, 2 + (elevation is not None) :]:
        ax.axis("off")

    def predicted(model: NeuralProcess) -> tuple[np.ndarray, np.ndarray]:
        """The model's predictive mean and std over the maps, ``[lat, lon]`` each."""
        with warnings.catch_warnings():
            # The maps show the OOD region and the test years on purpose.
            warnings.simplefilter("ignore", ExtrapolationWarning)
            pred = predict(model, context, truth, norm, progress=False, elevation=elevation)
        return tuple(pred[name].values.reshape(values.shape) for name in ("mean", "std"))

    for row, (key, model) in enumerate(models.items(), start=1):
        mean, std = predicted(model)
        show(grid[row, 0], mean, f"{display_name(key)}: mean", vmin=vmin, vmax=vmax)
        show(grid[row, 1], np.abs(mean - values), "|error|", cmap="magma")
        show(grid[row, 2], std, "std", cmap="viridis")
        if is_approximate(model):
            departure = departure_from_equivariance(
                model, mean=lambda model: predicted(model)[0], as_trained=mean
            )
            show(grid[row, 3], departure, "|μ − μ_strict|", cmap="magma")
        else:
            grid[row, 3].axis("off")
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Writes a figure (format from the suffix, resolution the figure's own) atomically."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp)
    return path


def experiment_figures(
    experiment: Experiment,
    models: Mapping[str, NeuralProcess],
    run_dirs: Mapping[str, Path],
    out: Path,
) -> list[Path]:
    """Every figure of an experiment's results, written to ``out``.

    1-D experiments: predictive bands, learned fixed inputs, departure from equivariance.
    2-D experiments: prediction and error maps, mean departure maps; experiments on the Earth
    (with ``regions``, such as climate): maps over both regions (see :func:`plot_region_maps`).
    All: training curves.
    """
    test = experiment.evaluation_splits[0]
    if experiment.dim_x == 1:
        tasks = {
            s: experiment.split(s, 2 * FIGURE_BATCHES, 2) for s in experiment.evaluation_splits
        }
        low = experiment.train_range[0] - FIGURE_MARGIN
        high = experiment.train_range[1] + FIGURE_MARGIN
        departure_items = experiment.split(test, DEPARTURE_TASKS, 16)
        figures = {
            "predictions.png": plot_predictions_1d(models, experiment, tasks),
            "fixed_inputs.png": plot_fixed_inputs_1d(models, low, high),
            "departure.png": plot_departure_1d(models, departure_items, low, high),
        }
    elif experiment.regions is not None:
        figures = {"maps.png": plot_region_maps(models, experiment)}
    else:
        items = experiment.split(test, DEPARTURE_TASKS, 16)
        figures = {
            "maps.png": plot_maps_2d(models, items[0]),
            "departure.png": plot_departure_2d(models, items),
        }
    figures["training_curves.png"] = plot_training_curves(run_dirs)
    return [save_figure(fig, out / name) for name, fig in figures.items()]
