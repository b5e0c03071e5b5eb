"""Figures: 1-D predictive bands, learned fixed inputs and training curves."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from aenp.data.batch import Batch
from aenp.data.experiments import GP1D, EvaluationBatch
from aenp.evaluate.metrics import is_approximate
from aenp.evaluate.tables import display_name
from aenp.models.neural_process import NeuralProcess
from aenp.nn.fixed_inputs import FixedInputs, strictly_equivariant

AS_TRAINED_COLOUR = "tab:blue"
STRICT_COLOUR = "tab:red"
TRUTH_COLOUR = "black"
NUM_PLOT_POINTS = 400
PLOT_MARGIN = 1.0
"""Extent shown beyond the targets' range, so the edge of the training range is visible."""


def _band(ax, x, mean, std, colour, label, **kwargs) -> None:
    ax.plot(x, mean, color=colour, label=label, **kwargs)
    ax.fill_between(x, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.15, linewidth=0)


@torch.no_grad()
def plot_predictions_1d(
    models: Mapping[str, NeuralProcess],
    experiment: GP1D,
    tasks: Mapping[str, list[EvaluationBatch]],
    path: Path,
) -> Path:
    """Predictive mean ± 2 std of every model beside the ground truth, one row per model.

    Approximate models are drawn as trained (blue) and with fixed inputs zeroed (red); the
    ground-truth mixture predictive is black, the training target range dotted.

    Args:
        models: Trained models by registry key.
        experiment: The gp1d experiment (for ground-truth predictives).
        tasks: Evaluation batches per split; of each split, the first task of the batch with
            the fewest and of the batch with the most context points is drawn.
        path: Where to write the PNG.
    """
    columns = []
    for split, items in tasks.items():
        by_size = sorted(items, key=lambda item: item.batch.xc.shape[1])
        columns += [(split, by_size[0].batch[0]), (split, by_size[-1].batch[0])]
    fig = Figure(figsize=(4 * len(columns), 2.6 * len(models)), layout="constrained")
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
            model.eval()
            pred = model(Batch(task.xc, task.yc, x))
            _band(
                ax, x[0, :, 0], pred.mean[0, :, 0], pred.stddev[0, :, 0], AS_TRAINED_COLOUR, "model"
            )
            if is_approximate(model):
                with strictly_equivariant(model):
                    strict = model(Batch(task.xc, task.yc, x))
                _band(
                    ax,
                    x[0, :, 0],
                    strict.mean[0, :, 0],
                    strict.stddev[0, :, 0],
                    STRICT_COLOUR,
                    "fixed inputs zeroed",
                )
            ax.scatter(
                task.xc[0, :, 0],
                task.yc[0, :, 0],
                s=10,
                color=TRUTH_COLOUR,
                zorder=3,
                label="context",
            )
            for edge in experiment.train_range:
                if low <= edge <= high:
                    ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
            ax.set_xlim(low, high)
            if col == 0:
                ax.set_ylabel(display_name(key))
            if row == 0:
                ax.set_title(f"{split}: {task.xc.shape[1]} context points")
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles)
    )
    fig.savefig(path, dpi=110)
    return path


@torch.no_grad()
def plot_fixed_inputs_1d(
    models: Mapping[str, NeuralProcess], low: float, high: float, path: Path
) -> Path:
    """The learned fixed inputs ``t_b(x)`` of each approximate model over ``[low, high]``."""
    approximate = {k: m for k, m in models.items() if is_approximate(m)}
    fig = Figure(figsize=(6, 2.6 * max(1, len(approximate))), layout="constrained")
    axes = fig.subplots(max(1, len(approximate)), 1, squeeze=False)[:, 0]
    x = torch.linspace(low, high, NUM_PLOT_POINTS)[:, None]
    for ax, (key, model) in zip(axes, approximate.items(), strict=False):
        module = next(m for m in model.modules() if isinstance(m, FixedInputs))
        values = module.values(x).numpy()
        for b in range(values.shape[1]):
            ax.plot(x[:, 0], values[:, b], label=f"t{b + 1}")
        ax.set_title(f"{display_name(key)}: learned fixed inputs (zero outside the domain)")
        ax.legend(ncols=values.shape[1], fontsize="small")
    fig.savefig(path, dpi=110)
    return path


def plot_training_curves(run_dirs: Mapping[str, Path], path: Path) -> Path:
    """Validation log-likelihood per epoch of each run (from its CSV log)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for key, run_dir in run_dirs.items():
        log = Path(run_dir) / "logs" / "metrics.csv"
        if not log.is_file():
            continue
        with log.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("val/loglik")]
        steps = np.array([float(r["step"]) for r in rows])
        values = np.array([float(r["val/loglik"]) for r in rows])
        ax.plot(steps, values, marker="o", markersize=3, label=display_name(key))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation log-likelihood")
    ax.legend()
    fig.savefig(path, dpi=110)
    return path


@torch.no_grad()
def plot_departure_1d(
    models: Mapping[str, NeuralProcess],
    items: list[EvaluationBatch],
    low: float,
    high: float,
    path: Path,
) -> Path:
    """Where each approximate model departs from equivariance: mean ``|μ − μ_strict|`` at ``x``.

    The predictive means with fixed inputs on and zeroed are compared on a dense grid of
    targets over ``[low, high]`` for every task of ``items``, and averaged over tasks.
    """
    approximate = {k: m for k, m in models.items() if is_approximate(m)}
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    x = torch.linspace(low, high, NUM_PLOT_POINTS)
    for key, model in approximate.items():
        model.eval()
        departure = []
        for item in items:
            b = item.batch
            xt = x[None, :, None].expand(len(b), -1, -1)
            mean = model(Batch(b.xc, b.yc, xt)).mean
            with strictly_equivariant(model):
                strict = model(Batch(b.xc, b.yc, xt)).mean
            departure.append((mean - strict).abs().sum(-1))
        ax.plot(x, torch.cat(departure).mean(0), label=display_name(key))
    ax.set_xlabel("x")
    ax.set_ylabel("mean |μ − μ_strict|")
    ax.set_title("Departure from equivariance over the input space")
    ax.legend()
    fig.savefig(path, dpi=110)
    return path
