"""Inference with point-set models (the transformer NPs): the targets in chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from aenp.data.climate import Normalisation
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.model_inputs import model_inputs


def predict_points(
    model: NeuralProcess,
    tasks: list[pd.DataFrame],
    points: pd.DataFrame,
    normalisation: Normalisation,
    chunk_size: int,
    progress: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predictive means and standard deviations ``[n]`` at the target points, per task.

    Every task's context points condition the model; the targets go through ``chunk_size``
    at a time (a point-set model predicts each target from the context alone).
    """
    xt = model_inputs(points, normalisation, model.dim_x)
    dtype = next(model.parameters()).dtype
    means, stds = [], []
    bar = tqdm(total=len(tasks) * len(xt), disable=not progress, unit="pt", desc="predict")
    with bar, torch.no_grad():
        for task in tasks:
            xc = torch.as_tensor(model_inputs(task, normalisation, model.dim_x), dtype=dtype)
            yc = normalisation.normalise_values(task["value"].to_numpy())
            yc = torch.as_tensor(yc, dtype=dtype)[:, None]
            mean, std = [], []
            for start in range(0, len(xt), chunk_size):
                chunk = torch.as_tensor(xt[start : start + chunk_size], dtype=dtype)
                pred = model(xc[None], yc[None], chunk[None])
                mean.append(pred.mean[0, :, 0].double().numpy())
                std.append(pred.stddev[0, :, 0].double().numpy())
                bar.update(len(chunk))
            means.append(normalisation.denormalise_values(np.concatenate(mean)))
            stds.append(normalisation.denormalise_std(np.concatenate(std)))
    return means, stds
