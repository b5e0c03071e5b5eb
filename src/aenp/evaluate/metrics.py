"""Per-task metrics of a model on evaluation splits, summarised as mean ± standard error."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from aenp.batch import Batch, EvaluationBatch, target_loglik
from aenp.models.neural_process import NeuralProcess
from aenp.nn.fixed_inputs import FixedInputs, strictly_equivariant


def is_approximate(model: NeuralProcess) -> bool:
    """Whether the model has fixed inputs (so it can also be evaluated strictly)."""
    return any(isinstance(m, FixedInputs) for m in model.modules())


Means = TypeVar("Means", Tensor, np.ndarray)


def predictive_mean(model: NeuralProcess, *inputs: Any) -> Tensor:
    """The mean of the model's predictive distribution given ``inputs``."""
    return model(*inputs).mean


def departure_from_equivariance(
    model: NeuralProcess,
    *inputs: Any,
    mean: Callable[..., Means] = predictive_mean,
    as_trained: Means | None = None,
) -> Means:
    """``|μ − μ_strict|``: how far the predictive mean moves when the fixed inputs are zeroed.

    Args:
        model: An approximate model.
        *inputs: What the model predicts from (a batch, or ``xc, yc, xt``).
        mean: ``mean(model, *inputs)`` is μ (a tensor or an array of any shape), by default
            the mean of ``model(*inputs)``; it is called again inside
            :func:`strictly_equivariant` for μ_strict.
        as_trained: μ, if already computed.

    Returns:
        ``|μ − μ_strict|`` per element, in the shape of μ.
    """
    if as_trained is None:
        as_trained = mean(model, *inputs)
    with strictly_equivariant(model):
        strict = mean(model, *inputs)
    return abs(as_trained - strict)


def mean_and_stderr(values: Tensor) -> dict[str, float]:
    """Mean over tasks and its standard error (NaN entries, e.g. empty contexts, skipped)."""
    values = values[~values.isnan()].double()
    n = values.numel()
    if n == 0:
        return {"mean": math.nan, "stderr": math.nan, "num_tasks": 0}
    stderr = values.std().item() / math.sqrt(n) if n > 1 else math.nan
    return {"mean": values.mean().item(), "stderr": stderr, "num_tasks": n}


FLOAT32_SETTINGS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
"""Where PyTorch lets float32 matrix products and convolutions on a GPU round to TF32."""


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Float32 work in full float32 on a GPU; no change on a CPU.

    No TF32 (a 10-bit mantissa) in matrix products or convolutions, which cuDNN's convolutions
    use by default.
    """
    before = [setting.fp32_precision for setting in FLOAT32_SETTINGS]
    for setting in FLOAT32_SETTINGS:
        setting.fp32_precision = "ieee"
    try:
        yield
    finally:
        for setting, precision in zip(FLOAT32_SETTINGS, before, strict=True):
            setting.fp32_precision = precision


@torch.no_grad()
@ieee_float32()
def per_task_metrics(
    model: NeuralProcess, items: Sequence[EvaluationBatch], strict: bool = False
) -> dict[str, Tensor]:
    """Per-task metrics ``[num_tasks]`` over a split.

    Returns a dict with ``loglik`` (mean over targets, nats), ``context_loglik`` (the model
    predicting its own context set; NaN for empty contexts and for gridded tasks),
    ``rmse``, where known ``gt_loglik``, ``oracle_loglik`` and ``gap`` (ground truth minus
    model), and for approximate models evaluated as trained ``delta_equiv`` (mean
    ``|μ − μ_strict|``). The model runs where it is, without TF32 (:func:`ieee_float32`).
    """
    model.eval()
    device = next(model.parameters()).device
    measure_equiv = is_approximate(model) and not strict
    columns: dict[str, list[Tensor]] = {}

    def add(name: str, value: Tensor) -> None:
        columns.setdefault(name, []).append(value.detach().double().cpu())

    with strictly_equivariant(model) if strict else nullcontext():
        for item in items:
            batch = item.batch.to(device)
            pred = model(batch)
            add("loglik", target_loglik(batch, pred))
            error = (pred.mean - batch.targets).square().mean(-1)
            add("rmse", batch.target_average(error).sqrt())
            context_loglik = torch.full((len(batch),), math.nan)
            # On grids the targets exclude the context cells, so predicting a context cell is
            # outside what models are trained for: the context log-likelihood is for point sets.
            if isinstance(batch, Batch) and batch.xc.shape[1] > 0:
                reconstruction = Batch(batch.xc, batch.yc, batch.xc, batch.yc)
                context_loglik = target_loglik(reconstruction, model(reconstruction))
            add("context_loglik", context_loglik)
            if item.gt_loglik is not None:
                add("gt_loglik", item.gt_loglik)
                add("oracle_loglik", item.oracle_loglik)
            if measure_equiv:
                departure = departure_from_equivariance(model, batch, as_trained=pred.mean)
                add("delta_equiv", batch.target_average(departure.mean(-1)))
    result = {name: torch.cat(values) for name, values in columns.items()}
    if "gt_loglik" in result:
        result["gap"] = result["gt_loglik"] - result["loglik"]
    return result


def summarise(per_task: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± standard error of every metric of every split."""
    return {
        split: {name: mean_and_stderr(values) for name, values in metrics.items()}
        for split, metrics in per_task.items()
    }


def evaluate_per_task(
    model: NeuralProcess, splits: dict[str, Sequence[EvaluationBatch]]
) -> dict[str, dict[str, Tensor]]:
    """:func:`per_task_metrics` of every split; approximate models also as ``<split>_strict``."""
    modes = (False, True) if is_approximate(model) else (False,)
    return {
        name + ("_strict" if strict else ""): per_task_metrics(model, items, strict=strict)
        for name, items in splits.items()
        for strict in modes
    }
