"""The experiments' data: training-task samplers and fixed evaluation splits, by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from aenp.data.batch import Batch
from aenp.data.gp import GP1D_OOD_SHIFT, TARGET_RANGE, GPMixture, gp1d_generator, gp1d_split


@dataclass(frozen=True)
class EvaluationBatch:
    """A batch of evaluation tasks with, where known, the exact log-likelihoods ``[batch]``."""

    batch: Batch
    gt_loglik: torch.Tensor | None = None
    oracle_loglik: torch.Tensor | None = None


class Experiment(Protocol):
    """What training and evaluation need to know about an experiment's data."""

    name: str
    dim_x: int
    dim_y: int
    evaluation_splits: tuple[str, ...]
    """Splits reported in the results table, in order (in-distribution first)."""
    ood_splits: tuple[str, ...]
    """Of those, the out-of-distribution ones."""
    train_range: tuple[float, float]
    """Interval the training targets cover, marked on figures."""

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch of fresh training tasks."""
        ...

    def split(self, name: str, num_tasks: int, batch_size: int) -> list[EvaluationBatch]:
        """A fixed, seeded split (``"val"`` or one of :attr:`evaluation_splits`)."""
        ...


class GP1D:
    """Synthetic 1-D regression from a non-stationary GP mixture (DESIGN §3 gp1d)."""

    name = "gp1d"
    dim_x = 1
    dim_y = 1
    evaluation_splits = ("test", "ood")
    ood_splits = ("ood",)
    train_range = TARGET_RANGE
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


EXPERIMENTS = {"gp1d": GP1D}


def get_experiment(name: str) -> Experiment:
    """The experiment registered under ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]()
