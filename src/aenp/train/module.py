"""Lightning module that trains a neural process by maximum likelihood."""

from __future__ import annotations

import lightning as L
import torch

from aenp.data.batch import Batch, GridBatch, target_loglik
from aenp.errors import InputError
from aenp.models.io import weight_mismatches
from aenp.models.neural_process import NeuralProcess


def mean_loglik(model: NeuralProcess, batch: Batch | GridBatch) -> torch.Tensor:
    """Log-likelihood of the targets averaged over each task's targets, then tasks (nats)."""
    return target_loglik(batch, model(batch)).mean()


class NeuralProcessModule(L.LightningModule):
    """Maximises the mean predictive log-likelihood of target points.

    Args:
        model: The neural process to train.
        lr: Learning rate of AdamW.
        weight_decay: Weight decay of AdamW.
        cosine_schedule: Anneal the learning rate to zero over training with a cosine.
    """

    def __init__(
        self,
        model: NeuralProcess,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        cosine_schedule: bool = True,
    ):
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.cosine_schedule = cosine_schedule

    def training_step(self, batch: Batch | GridBatch, batch_idx: int) -> torch.Tensor:
        """Negative mean log-likelihood of the targets."""
        loss = -mean_loglik(self.model, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: Batch | GridBatch, batch_idx: int) -> None:
        """Logs the validation log-likelihood (higher is better)."""
        loglik = mean_loglik(self.model, batch)
        self.log("val/loglik", loglik, prog_bar=True, sync_dist=True, batch_size=len(batch))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuses a checkpoint of another model, before Lightning loads any of it."""
        problems = weight_mismatches(self.state_dict(), checkpoint["state_dict"])
        if problems:
            raise InputError(
                f"the checkpoint to resume holds another model than the config builds: "
                f"{problems}; resume only from a checkpoint of the same model"
            )

    def configure_optimizers(self):
        """AdamW, optionally with a per-step cosine schedule."""
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        if not self.cosine_schedule:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
