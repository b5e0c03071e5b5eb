"""Lightning module that trains a neural process by maximum likelihood.

The training step is the fast path: its loss (model and likelihood, and with it the backward
pass) can be compiled with :func:`torch.compile` for the static shapes the data module
produces, the optimiser is a multi-tensor (or, on a GPU, fused) AdamW, and nothing in the step
waits for the device: the loss is logged as a tensor and read only when a logger or the
progress bar asks for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from aenp.batch import Batch, GridBatch, target_loglik
from aenp.errors import InputError
from aenp.models.io import weight_mismatches
from aenp.models.neural_process import NeuralProcess
from aenp.nn.setconv import widen_windows
from aenp.train.data import mixed_seed

STEP_STREAM = 1
"""Tells the entropy of a training step's random draws, ``(seed, epoch, rank, STEP_STREAM,
batch)``, from that of the epoch's tasks, ``(seed, epoch, rank)`` (see :func:`mixed_seed`)."""
COMPILE_CHOICES = ("auto", "true", "false")
"""``trainer.compile`` settings: compile where it pays (see :func:`compiles`), always, never."""


def seed_generators(seed: int, device: torch.device) -> None:
    """Seeds torch's default random generator on the CPU, and on ``device`` if it is a GPU.

    (``torch.manual_seed`` seeds every backend, available or not: 0.17 ms on a CPU.)
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def mean_loglik(model: NeuralProcess, batch: Batch | GridBatch) -> torch.Tensor:
    """Log-likelihood of the targets averaged over each task's targets, then tasks (nats)."""
    return target_loglik(batch, model(batch)).mean()


def negative_mean_loglik(model: NeuralProcess, batch: Batch | GridBatch) -> torch.Tensor:
    """The training loss: minus :func:`mean_loglik`."""
    return -mean_loglik(model, batch)


def compiles(setting: str | bool, device: torch.device) -> bool:
    """Whether ``trainer.compile`` asks to compile the training loss on ``device``.

    ``"auto"`` compiles on a GPU, where these small models are bound by kernel launches that
    compiled graphs replayed as CUDA graphs remove. On a CPU it does not: there a step is
    dominated by oneDNN convolutions and matrix products that compiling does not speed up, and
    it measured slower than eager (``benchmarks/training_step.py``, README "Fast training").

    Raises:
        InputError: For a setting other than ``auto``, ``true`` or ``false``.
    """
    choice = str(setting).lower()
    if choice not in COMPILE_CHOICES:
        raise InputError(
            f"trainer.compile must be one of {', '.join(COMPILE_CHOICES)}, got {setting!r}"
        )
    return choice == "true" or (choice == "auto" and device.type == "cuda")


def compiled_loss(
    model: NeuralProcess, device: torch.device
) -> Callable[[NeuralProcess, Batch | GridBatch], torch.Tensor]:
    """:func:`negative_mean_loglik` compiled for static shapes on ``device``, to train ``model``.

    The windows of ``model``'s set convolutions are widened first (:func:`widen_windows`), so
    that they recompile it rarely. On a GPU the compiled graphs are replayed as CUDA graphs
    (``mode="reduce-overhead"``).
    """
    widen_windows(model)
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(negative_mean_loglik, dynamic=False, mode=mode)


def adamw(
    parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, fused: bool = True
) -> torch.optim.AdamW:
    """AdamW updating all parameters in one fused kernel (else one kernel per operation).

    On a 2-core CPU the fused step is 3.5× faster than the multi-tensor one for the quick
    ConvCNP's parameters (``benchmarks/optimizer_step.py``).
    """
    return torch.optim.AdamW(
        parameters, lr=lr, weight_decay=weight_decay, fused=fused, foreach=not fused
    )


def warmup_then_cosine(step: int, warmup: int, total: int, cosine: bool = True) -> float:
    """The learning rate's factor at ``step`` (counted from 0).

    A linear warm-up over the first ``warmup`` steps, then (if ``cosine``) a cosine from 1 to 0
    over the remaining steps of ``total``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


class NeuralProcessModule(L.LightningModule):
    """Maximises the mean predictive log-likelihood of target points.

    Args:
        model: The neural process to train.
        lr: Learning rate of AdamW.
        weight_decay: Weight decay of AdamW.
        cosine_schedule: Anneal the learning rate to zero over training with a cosine.
        warmup_steps: Raise the learning rate linearly from ``lr / warmup_steps`` to ``lr``
            over the first steps (then anneal it over the rest with the cosine); 0: none.
        compile: Compile the training loss (see :func:`compiles`) when training starts.
        seed: Seed of the training steps' random draws (see :meth:`step_randomness`).
    """

    def __init__(
        self,
        model: NeuralProcess,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        cosine_schedule: bool = True,
        warmup_steps: int = 0,
        compile: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.cosine_schedule = cosine_schedule
        self.warmup_steps = warmup_steps
        self.compile = compile
        self.seed = seed
        self.loss: Callable[[NeuralProcess, Batch | GridBatch], torch.Tensor] = negative_mean_loglik

    def on_train_start(self) -> None:
        """Compiles the training loss for the device training runs on, if asked to."""
        if self.compile:
            self.loss = compiled_loss(self.model, self.device)

    def training_step(self, batch: Batch | GridBatch, batch_idx: int) -> torch.Tensor:
        """Negative mean log-likelihood of the targets."""
        with self.step_randomness(batch_idx):
            loss = self.loss(self.model, batch)
        # A copy: the output of a CUDA-graph replay is overwritten by the next step's, and the
        # logged value is read steps later.
        self.log("train/loss", loss.detach().clone(), prog_bar=True, batch_size=len(batch))
        return loss

    @contextmanager
    def step_randomness(self, batch_idx: int) -> Iterator[None]:
        """Seeds torch's generators for one training step; restores their state after it.

        A step's random draws (the dropping of fixed inputs) then depend only on the seed, the
        epoch, the rank and the batch, like its tasks: not on what else drew from the
        generators before (Lightning, for one, draws a seed whenever it starts a data loader,
        more often in an uninterrupted run than in a resumed one). A resumed run therefore
        trains exactly as an uninterrupted one does.
        """
        devices = [] if self.device.type == "cpu" else [self.device]
        with torch.random.fork_rng(devices, device_type=self.device.type):
            seed = mixed_seed(
                self.seed, self.current_epoch, self.global_rank, STEP_STREAM, batch_idx
            )
            seed_generators(seed, self.device)
            yield

    def validation_step(self, batch: Batch | GridBatch, batch_idx: int) -> None:
        """Logs the validation log-likelihood (higher is better)."""
        loglik = mean_loglik(self.model, batch)
        self.log("val/loglik", loglik, prog_bar=True, sync_dist=True, batch_size=len(batch))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuses a checkpoint of another model, before Lightning loads any of it.

        Casts the model to the training precision first: Lightning loads a checkpoint before
        it casts the model, which would round a float64 run's weights to float32 on resuming.
        """
        problems = weight_mismatches(self.state_dict(), checkpoint["state_dict"])
        if problems:
            raise InputError(
                f"the checkpoint to resume holds another model than the config builds: "
                f"{problems}; resume only from a checkpoint of the same model"
            )
        self.trainer.precision_plugin.convert_module(self)

    def configure_optimizers(self):
        """AdamW (see :func:`adamw`), optionally with a warm-up and a per-step cosine schedule."""
        # A fused step would unscale a scaled loss's gradients itself, after clipping: in mixed
        # precision Lightning refuses to clip for any fused optimiser, loss scaled or not.
        mixed = isinstance(self.trainer.precision_plugin, MixedPrecision)
        fused = not (mixed and self.trainer.gradient_clip_val)
        optimizer = adamw(self.model.parameters(), self.lr, self.weight_decay, fused)
        total = max(1, self.trainer.estimated_stepping_batches)
        if self.warmup_steps:
            schedule = partial(
                warmup_then_cosine,
                warmup=self.warmup_steps,
                total=total,
                cosine=self.cosine_schedule,
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        elif self.cosine_schedule:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
