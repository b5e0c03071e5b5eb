"""A batch of neural-process tasks, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """Context and target sets of a batch of tasks, batch first.

    Every task in a batch has the same number of context and target points. An empty
    context set (``nc = 0``) is valid; an empty target set is not.

    Attributes:
        xc: Context inputs, ``[batch, nc, dx]``.
        yc: Context outputs, ``[batch, nc, dy]``.
        xt: Target inputs, ``[batch, nt, dx]``.
        yt: Target outputs, ``[batch, nt, dy]``, or ``None`` when only predicting.
    """

    xc: Float[Tensor, "batch nc dx"]
    yc: Float[Tensor, "batch nc dy"]
    xt: Float[Tensor, "batch nt dx"]
    yt: Float[Tensor, "batch nt dy"] | None = None

    def __post_init__(self) -> None:
        for name in ("xc", "yc", "xt"):
            if getattr(self, name) is None:
                raise TypeError(
                    f"{name} is required (an empty context set has shape [batch, 0, d])"
                )
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise TypeError(f"{field.name} must be a torch.Tensor, got {type(value).__name__}")
            if value.ndim != 3:
                raise ValueError(
                    f"{field.name} must have shape [batch, n, d] (3 dimensions), "
                    f"got shape {tuple(value.shape)}"
                )
            if not value.is_floating_point():
                raise TypeError(f"{field.name} must be a floating-point tensor, got {value.dtype}")
            if value.numel() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise ValueError(f"{field.name} contains {bad} NaN or infinite value(s)")
        for name in ("yc", "xt", "yt"):
            value = getattr(self, name)
            if value is not None and (value.dtype, value.device) != (self.xc.dtype, self.xc.device):
                raise TypeError(
                    f"{name} is {value.dtype} on {value.device} but xc is {self.xc.dtype} on "
                    f"{self.xc.device}; every tensor of a batch must match"
                )
        batch_size = self.xc.shape[0]
        for name in ("yc", "xt", "yt"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != batch_size:
                raise ValueError(
                    f"batch size of {name} ({value.shape[0]}) does not match xc ({batch_size})"
                )
        if self.yc.shape[1] != self.xc.shape[1]:
            raise ValueError(
                f"xc has {self.xc.shape[1]} context points but yc has {self.yc.shape[1]}"
            )
        if self.xt.shape[-1] != self.xc.shape[-1]:
            raise ValueError(
                f"xt has input dimension {self.xt.shape[-1]} but xc has {self.xc.shape[-1]}"
            )
        if self.xt.shape[1] == 0:
            raise ValueError("xt is empty: a task needs at least one target point (nt >= 1)")
        if self.yt is not None:
            if self.yt.shape[1] != self.xt.shape[1]:
                raise ValueError(
                    f"xt has {self.xt.shape[1]} target points but yt has {self.yt.shape[1]}"
                )
            if self.yt.shape[-1] != self.yc.shape[-1]:
                raise ValueError(
                    f"yt has output dimension {self.yt.shape[-1]} but yc has {self.yc.shape[-1]}"
                )

    @property
    def dim_x(self) -> int:
        """Input dimension ``dx``."""
        return self.xc.shape[-1]

    @property
    def dim_y(self) -> int:
        """Output dimension ``dy``."""
        return self.yc.shape[-1]

    def __len__(self) -> int:
        return self.xc.shape[0]

    def to(self, *args, **kwargs) -> Batch:
        """Moves or casts every tensor, as :meth:`torch.Tensor.to`."""
        return Batch(
            **{
                f.name: None
                if getattr(self, f.name) is None
                else getattr(self, f.name).to(*args, **kwargs)
                for f in fields(self)
            }
        )

    def shift(self, offset: Float[Tensor, " dx"] | float) -> Batch:
        """Translates every input (context and target) by ``offset``."""
        return replace(self, xc=self.xc + offset, xt=self.xt + offset)

    def __getitem__(self, index: slice | Tensor | int) -> Batch:
        """Selects tasks along the batch dimension (an integer keeps the dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Batch(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                for f in fields(self)
            }
        )
