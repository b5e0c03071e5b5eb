"""The gp1d experiment: synthetic 1-D regression from a non-stationary GP mixture."""

from __future__ import annotations

import torch

from aenp.batch import Batch, EvaluationBatch
from aenp.data.gp import (
    GP1D_OOD_SHIFT,
    NUM_CONTEXT,
    TARGET_RANGE,
    GPMixture,
    gp1d_generator,
    gp1d_split,
)


class GP1D:
    """Synthetic 1-D regression from a non-stationary GP mixture (docs/architecture.md, gp1d)."""

    name = "gp1d"
    dim_x = 1
    dim_y = 1
    evaluation_splits = ("test", "ood")
    ood_splits = ("ood",)
    train_range = TARGET_RANGE
    """Interval the training targets cover, marked on figures."""
    max_num_context = NUM_CONTEXT[1]
    normalisation = None
    """Models see the synthetic values and inputs as they are."""
    units = ""
    regions = None
    ood_shift = GP1D_OOD_SHIFT

    def __init__(self) -> None:
        self.train_generator = gp1d_generator("train")

    def generator(self, split: str) -> GPMixture:
        """The task generator behind a split (for ground-truth predictives in figures)."""
        return gp1d_generator(split)

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch of fresh training tasks."""
        return self.train_generator.sample(batch_size, generator).batch

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """A fixed split with its exact ground truth."""
        return [
            EvaluationBatch(tasks.batch, truth.loglik, truth.oracle_loglik)
            for tasks, truth in gp1d_split(name, num_tasks, batch_size)
        ]
