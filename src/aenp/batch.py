"""Batches of neural-process tasks, validated once at construction.

:class:`Batch` holds off-grid context and target sets; :class:`GridBatch` holds tasks whose
data lie on one regular grid (images, gridded fields), with masks for context and targets;
:class:`EvaluationBatch` adds the exact log-likelihoods an evaluation split may know.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.distributions import Normal

from aenp.errors import InputError, InputTypeError
from aenp.grid import Grid, is_evenly_spaced

_VALUE_FIELDS = ("xc", "yc", "xt", "yt")
"""The floating-point fields of a :class:`Batch`."""
AnyBatch = TypeVar("AnyBatch", "Batch", "GridBatch")


@dataclass(frozen=True)
class Batch:
    """Context and target sets of a batch of tasks, batch first.

    Every task in a batch has the same number of context and target points. An empty
    context set (``nc = 0``) is valid; an empty target set is not. Tasks with fewer context
    points are padded to a common ``nc`` and marked by ``context_mask`` (see
    :meth:`pad_context`): models give masked points exactly no influence, so a task whose mask
    is all false has an empty context set.

    Attributes:
        xc: Context inputs, ``[batch, nc, dx]``.
        yc: Context outputs, ``[batch, nc, dy]``.
        xt: Target inputs, ``[batch, nt, dx]``.
        yt: Target outputs, ``[batch, nt, dy]``, or ``None`` when only predicting.
        context_mask: Which context points are real, ``[batch, nc]`` (bool), or ``None`` when
            all are. Masked points must still hold finite values.
    """

    xc: Float[Tensor, "batch nc dx"]
    yc: Float[Tensor, "batch nc dy"]
    xt: Float[Tensor, "batch nt dx"]
    yt: Float[Tensor, "batch nt dy"] | None = None
    context_mask: Bool[Tensor, "batch nc"] | None = None

    def __post_init__(self) -> None:
        for name in ("xc", "yc", "xt"):
            if getattr(self, name) is None:
                raise InputTypeError(
                    f"{name} is required (an empty context set has shape [batch, 0, d])"
                )
        for name in _VALUE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise InputTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.ndim != 3:
                raise InputError(
                    f"{name} must have shape [batch, n, d] (3 dimensions), "
                    f"got shape {tuple(value.shape)}"
                )
            if not value.is_floating_point():
                raise InputTypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
            if value.numel() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise InputError(f"{name} contains {bad} NaN or infinite value(s)")
        for name in ("yc", "xt", "yt"):
            value = getattr(self, name)
            if value is not None and (value.dtype, value.device) != (self.xc.dtype, self.xc.device):
                raise InputTypeError(
                    f"{name} is {value.dtype} on {value.device} but xc is {self.xc.dtype} on "
                    f"{self.xc.device}; every tensor of a batch must match"
                )
        batch_size = self.xc.shape[0]
        for name in ("yc", "xt", "yt"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != batch_size:
                raise InputError(
                    f"batch size of {name} ({value.shape[0]}) does not match xc ({batch_size})"
                )
        if self.yc.shape[1] != self.xc.shape[1]:
            raise InputError(
                f"xc has {self.xc.shape[1]} context points but yc has {self.yc.shape[1]}"
            )
        if self.xt.shape[-1] != self.xc.shape[-1]:
            raise InputError(
                f"xt has input dimension {self.xt.shape[-1]} but xc has {self.xc.shape[-1]}"
            )
        if self.xt.shape[1] == 0:
            raise InputError("xt is empty: a task needs at least one target point (nt >= 1)")
        if self.yt is not None:
            if self.yt.shape[1] != self.xt.shape[1]:
                raise InputError(
                    f"xt has {self.xt.shape[1]} target points but yt has {self.yt.shape[1]}"
                )
            if self.yt.shape[-1] != self.yc.shape[-1]:
                raise InputError(
                    f"yt has output dimension {self.yt.shape[-1]} but yc has {self.yc.shape[-1]}"
                )
        self._check_context_mask()

    def _check_context_mask(self) -> None:
        """Names a context mask of the wrong type, shape or device."""
        mask = self.context_mask
        if mask is None:
            return
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            given = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise InputTypeError(f"context_mask must be a boolean torch.Tensor, got {given}")
        expected = tuple(self.xc.shape[:2])
        if tuple(mask.shape) != expected:
            raise InputError(
                f"context_mask must have shape [batch, nc] = {list(expected)} to match xc, "
                f"got {list(mask.shape)}"
            )
        if mask.device != self.xc.device:
            raise InputTypeError(
                f"context_mask is on {mask.device} but xc is on {self.xc.device}; every tensor "
                "of a batch must match"
            )

    @property
    def dim_x(self) -> int:
        """Input dimension ``dx``."""
        return self.xc.shape[-1]

    @property
    def dim_y(self) -> int:
        """Output dimension ``dy``."""
        return self.yc.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of every tensor."""
        return self.xc.dtype

    @property
    def device(self) -> torch.device:
        """Device of every tensor."""
        return self.xc.device

    def __len__(self) -> int:
        return self.xc.shape[0]

    def to(self, *args, **kwargs) -> Batch:
        """Moves or casts every tensor, as :meth:`torch.Tensor.to` (the mask stays boolean).

        A move that keeps the dtype is not validated again, since it changes no value (on a GPU
        each check would wait for the device); a cast, which can overflow, is.
        """
        values = {
            name: None if getattr(self, name) is None else getattr(self, name).to(*args, **kwargs)
            for name in _VALUE_FIELDS
        }
        mask = self.context_mask
        mask = None if mask is None else mask.to(values["xc"].device)
        if values["xc"].dtype == self.xc.dtype:
            return _unchecked(Batch, **values, context_mask=mask)
        return Batch(**values, context_mask=mask)

    def shift(self, offset: Float[Tensor, " dx"] | float) -> Batch:
        """Translates every input (context and target) by ``offset``."""
        return replace(self, xc=self.xc + offset, xt=self.xt + offset)

    def pad_context(self, num_context: int) -> Batch:
        """The same tasks with their context sets padded to ``num_context`` points and masked.

        Padding sits at each task's first target input (so it stays finite and near the data)
        with output zero; an existing mask is kept for the points already there. Padding every
        batch to one size gives a compiled training step static shapes.

        Raises:
            InputTypeError: If ``num_context`` is not an integer.
            InputError: If ``num_context`` is smaller than the current ``nc``.
        """
        nc = self.xc.shape[1]
        if isinstance(num_context, bool) or not isinstance(num_context, int):
            raise InputTypeError(
                f"num_context must be an integer, got {num_context!r} "
                f"({type(num_context).__name__})"
            )
        if num_context < nc:
            raise InputError(
                f"num_context ({num_context}) must be at least the batch's number of context "
                f"points nc = {nc}: padding cannot remove points"
            )
        batch_size, pad = len(self), num_context - nc
        mask = self.context_mask
        if mask is None:
            mask = self.xc.new_ones(batch_size, nc, dtype=torch.bool)
        return replace(
            self,
            xc=torch.cat([self.xc, self.xt[:, :1].expand(-1, pad, -1)], dim=1),
            yc=torch.cat([self.yc, self.yc.new_zeros(batch_size, pad, self.dim_y)], dim=1),
            context_mask=torch.cat([mask, mask.new_zeros(batch_size, pad)], dim=1),
            # A compiled step is specialised to strides too: targets sliced from a joint draw
            # with the context would have strides that change with the context size.
            xt=self.xt.contiguous(),
            yt=None if self.yt is None else self.yt.contiguous(),
        )

    @classmethod
    def concat(cls, batches: Sequence[Batch], num_context: int | None = None) -> Batch:
        """Tasks of several batches in one, their context sets padded to a common size.

        Args:
            batches: Batches with the same number of targets and the same dimensions.
            num_context: Context size to pad to; defaults to the largest of ``batches``.

        Raises:
            InputError: If ``batches`` is empty or its batches do not match.
        """
        if not batches:
            raise InputError("concat needs at least one batch, got none")
        shapes = {(b.xt.shape[1], b.dim_x, b.dim_y, b.yt is not None) for b in batches}
        if len(shapes) > 1:
            raise InputError(
                "concat needs batches with the same number of targets, dimensions and presence "
                f"of yt; got (nt, dx, dy, has yt) = {sorted(shapes)}"
            )
        if num_context is None:
            num_context = max(b.xc.shape[1] for b in batches)
        padded = [b.pad_context(num_context) for b in batches]
        return cls(
            **{
                f.name: None
                if getattr(padded[0], f.name) is None
                else torch.cat([getattr(b, f.name) for b in padded])
                for f in fields(cls)
            }
        )

    @property
    def targets(self) -> Float[Tensor, "batch nt dy"]:
        """The target outputs ``yt``, shaped like a prediction."""
        if self.yt is None:
            raise InputError("this batch has no target outputs (yt is None)")
        return self.yt

    def target_average(self, values: Float[Tensor, "batch nt"]) -> Float[Tensor, " batch"]:
        """Averages a per-target quantity over each task's targets."""
        return values.mean(dim=-1)

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


@dataclass(frozen=True)
class GridBatch:
    """Tasks whose data lie on one regular grid shared by the batch.

    Models predict every cell; the target mask says which cells are scored. Values outside the
    context are never read (they may be NaN, e.g. oceans in a land-only field).

    Attributes:
        y: Values at every cell, ``[batch, *grid, dy]``.
        context_mask: Observed cells, ``[batch, *grid]`` (bool).
        target_mask: Cells to predict and score, ``[batch, *grid]`` (bool); every task needs one.
        axes: Coordinates of the cells along each spatial dimension: one increasing, evenly
            spaced tensor ``[size_d]`` per dimension, of ``y``'s dtype and device (integer
            coordinates are refused rather than converted: pass ``axis.to(y)``).
        extra_inputs: Further inputs known at every cell and shared by the tasks, ``[*grid,
            de]`` (e.g. surface elevation), of ``y``'s dtype and device, or None. They follow
            the grid coordinates in the inputs: ``dx = len(axes) + de``.
    """

    y: Float[Tensor, "batch *grid dy"]
    context_mask: Bool[Tensor, " batch *grid"]
    target_mask: Bool[Tensor, " batch *grid"]
    axes: tuple[Tensor, ...]
    extra_inputs: Float[Tensor, "*grid de"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.y, Tensor) or not self.y.is_floating_point():
            given = self.y.dtype if isinstance(self.y, Tensor) else type(self.y).__name__
            raise InputTypeError(f"y must be a floating-point torch.Tensor, got {given}")
        grid = tuple(self.y.shape[1:-1])
        if len(self.axes) != len(grid) or not grid:
            raise InputError(
                f"y has shape {tuple(self.y.shape)}, i.e. {len(grid)} spatial dimension(s), "
                f"but {len(self.axes)} coordinate axes were given"
            )
        for name in ("context_mask", "target_mask"):
            mask = getattr(self, name)
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise InputTypeError(f"{name} must be a boolean torch.Tensor")
            if mask.device != self.y.device:
                raise InputTypeError(
                    f"{name} is on {mask.device} but y is on {self.y.device}; every tensor of "
                    "a batch must be on one device"
                )
            if mask.shape != self.y.shape[:-1]:
                raise InputError(
                    f"{name} has shape {tuple(mask.shape)}, expected {tuple(self.y.shape[:-1])}"
                )
        coordinates = {f"axis {d}": axis for d, axis in enumerate(self.axes)}
        if self.extra_inputs is not None:
            coordinates["extra_inputs"] = self.extra_inputs
        for name, value in coordinates.items():
            if not isinstance(value, Tensor):
                raise InputTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if (value.dtype, value.device) != (self.y.dtype, self.y.device):
                raise InputTypeError(
                    f"{name} is {value.dtype} on {value.device} but y is {self.y.dtype} on "
                    f"{self.y.device}; every tensor of a batch must match: convert it with "
                    ".to(y)"
                )
        for d, axis in enumerate(self.axes):
            if axis.ndim != 1 or len(axis) != grid[d]:
                raise InputError(
                    f"axis {d} has shape {tuple(axis.shape)}, expected ({grid[d]},) to match y"
                )
            if not is_evenly_spaced(axis):
                raise InputError(f"axis {d} must be increasing and evenly spaced")
        extra = self.extra_inputs
        if extra is not None:
            if extra.ndim != len(grid) + 1 or tuple(extra.shape[:-1]) != grid:
                raise InputError(
                    f"extra_inputs has shape {tuple(extra.shape)}, expected "
                    f"({', '.join(map(str, grid))}, de)"
                )
            if not bool(torch.isfinite(extra).all()):
                raise InputError("extra_inputs must be finite at every cell (they are inputs)")
        used = self.context_mask | self.target_mask
        bad = used & ~torch.isfinite(self.y).all(dim=-1)
        if bool(bad.any()):
            raise InputError(
                f"y contains NaN or infinite values at {int(bad.sum())} context or target "
                f"cell(s), in task(s) {bad.flatten(1).any(1).nonzero().flatten().tolist()}; "
                "only cells outside both masks may hold them"
            )
        empty = ~self.target_mask.flatten(1).any(dim=1)
        if bool(empty.any()):
            raise InputError(
                f"task(s) {empty.nonzero().flatten().tolist()} have no target cell "
                "(every task needs at least one)"
            )

    @property
    def dim_x(self) -> int:
        """Input dimension ``dx``: the grid's dimensions and the extra inputs."""
        extra = 0 if self.extra_inputs is None else self.extra_inputs.shape[-1]
        return len(self.axes) + extra

    @property
    def dim_y(self) -> int:
        """Output dimension ``dy``."""
        return self.y.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the values."""
        return self.y.dtype

    @property
    def device(self) -> torch.device:
        """Device of every tensor."""
        return self.y.device

    def __len__(self) -> int:
        return self.y.shape[0]

    def context_values(self) -> Float[Tensor, "batch *grid dy"]:
        """``y`` with every cell outside the context set to zero."""
        return torch.where(self.context_mask[..., None], self.y, 0.0)

    def to(self, *args, **kwargs) -> GridBatch:
        """Moves or casts the values and axes (masks keep their dtype), as ``Tensor.to``.

        Every other tensor goes where ``y`` goes, however the device is given (Lightning
        passes it positionally). A move that keeps the dtype is not validated again, since it
        changes no value (on a GPU each check would wait for the device); a cast, which can
        overflow, is.
        """
        y = self.y.to(*args, **kwargs)
        extra = self.extra_inputs
        tensors = {
            "y": y,
            "context_mask": self.context_mask.to(y.device),
            "target_mask": self.target_mask.to(y.device),
            "axes": tuple(a.to(y) for a in self.axes),
            "extra_inputs": None if extra is None else extra.to(y),
        }
        if y.dtype == self.y.dtype:
            return _unchecked(GridBatch, **tensors)
        return GridBatch(**tensors)

    def shift(self, offset: Float[Tensor, " dx"] | float) -> GridBatch:
        """Translates every input by ``offset``: grid coordinates (values move along) and extras."""
        offset = torch.as_tensor(offset, dtype=self.axes[0].dtype).expand(self.dim_x)
        num_axes = len(self.axes)
        axes = tuple(a + o for a, o in zip(self.axes, offset[:num_axes], strict=True))
        extra = self.extra_inputs
        return replace(
            self, axes=axes, extra_inputs=None if extra is None else extra + offset[num_axes:]
        )

    @property
    def targets(self) -> Float[Tensor, "batch *grid dy"]:
        """The values, shaped like a prediction (unused cells set to zero)."""
        return torch.where(self.target_mask[..., None], self.y, 0.0)

    def target_average(self, values: Float[Tensor, " batch *grid"]) -> Float[Tensor, " batch"]:
        """Averages a per-cell quantity over each task's target cells."""
        scored = torch.where(self.target_mask, values, 0.0).flatten(1).sum(1)
        return scored / self.target_mask.flatten(1).sum(1)

    def with_every_cell_a_target(self) -> GridBatch:
        """The same tasks with every cell a target, to map a prediction over the whole grid.

        Missing values (NaN) become zero, so the batch is for predicting, not for scoring.
        """
        every_cell = torch.ones_like(self.target_mask)
        return replace(self, y=self.y.nan_to_num(), target_mask=every_cell)

    @torch.compiler.disable
    def to_points(self) -> Batch:
        """The tasks as context and target point sets, cells in row-major order.

        Every task must have the same number of context cells and of target cells. The sets'
        sizes are read from the masks, in one transfer, so a compiled model runs this (and
        :meth:`to_grid`) eagerly rather than break its graph here with warnings. The point sets
        hold cells of this batch's masks, so they are valid and not validated again.
        """
        points = Grid(self.axes).points().flatten(end_dim=-2)
        if self.extra_inputs is not None:
            points = torch.cat([points, self.extra_inputs.flatten(end_dim=-2)], dim=-1)
        masks = (self.context_mask, self.target_mask)
        context_counts, target_counts = torch.stack([m.flatten(1).sum(1) for m in masks]).tolist()
        sets = []
        for mask, counts in zip(masks, (context_counts, target_counts), strict=True):
            if len(set(counts)) > 1:
                raise InputError(
                    f"to_points needs the same number of cells per task in each mask, got {counts}"
                )
            cells = _cells_of(mask, counts[0])
            x = points[cells]
            y = self.y.flatten(1, -2).gather(1, cells[..., None].expand(*cells.shape, self.dim_y))
            sets.append((x, y))
        (xc, yc), (xt, yt) = sets
        return _unchecked(Batch, xc=xc, yc=yc, xt=xt, yt=yt)

    @torch.compiler.disable
    def to_grid(self, pred: Normal) -> Normal:
        """Places a prediction at the target points of :meth:`to_points` back on the grid.

        Cells outside the targets get a standard normal (they are never scored).
        """
        batch, *grid, dy = (*self.target_mask.shape, pred.mean.shape[-1])
        cells = _cells_of(self.target_mask, pred.mean.shape[1])[..., None].expand(-1, -1, dy)
        flat = (batch, math.prod(grid), dy)
        mean = pred.mean.new_zeros(flat).scatter(1, cells, pred.mean)
        std = pred.mean.new_ones(flat).scatter(1, cells, pred.stddev)
        # Valid by construction (a model's positive scales): no check to wait for.
        shape = (batch, *grid, dy)
        return Normal(mean.view(shape), std.view(shape), validate_args=False)

    def __getitem__(self, index: slice | Tensor | int) -> GridBatch:
        """Selects tasks along the batch dimension (an integer keeps the dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(
            self,
            y=self.y[index],
            context_mask=self.context_mask[index],
            target_mask=self.target_mask[index],
        )


def _unchecked(kind: type[AnyBatch], **tensors: Tensor | tuple[Tensor, ...] | None) -> AnyBatch:
    """A batch of ``kind`` holding ``tensors`` (fields not given are None), not validated.

    For tensors known to be valid (a valid batch's, moved or selected): on a GPU each check of
    their values would wait for the device.
    """
    batch = object.__new__(kind)
    for field in fields(kind):
        object.__setattr__(batch, field.name, tensors.get(field.name))
    return batch


def _cells_of(mask: Bool[Tensor, " batch *grid"], count: int) -> Int[Tensor, " batch count"]:
    """The flat indices of the ``count`` cells each task's ``mask`` selects, in row-major order.

    Without reading the mask on the host (as boolean indexing would): a stable sort puts the
    selected cells first.
    """
    return torch.argsort(~mask.flatten(1), dim=1, stable=True)[:, :count]


@dataclass(frozen=True)
class EvaluationBatch:
    """A batch of evaluation tasks with, where known, the exact log-likelihoods ``[batch]``."""

    batch: Batch | GridBatch
    gt_loglik: torch.Tensor | None = None
    oracle_loglik: torch.Tensor | None = None


def target_loglik(batch: Batch | GridBatch, pred: Normal) -> Float[Tensor, " batch"]:
    """Log-likelihood of the targets under ``pred``, averaged over each task's targets (nats)."""
    return batch.target_average(pred.log_prob(batch.targets).sum(-1))
