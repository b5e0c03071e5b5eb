"""Equivariance checks and the contract every neural process must satisfy.

Shipped with the package so that anyone adding a backbone can test it the same way::

    from aenp.testing import ModelContract, assert_equivariant, translation

    class TestMyModel(ModelContract):
        key = "my_model"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Normal

from aenp.batch import Batch, GridBatch, target_loglik
from aenp.models.registry import build_model
from aenp.nn.fixed_inputs import FixedInputs, injection_sites, strictly_equivariant
from aenp.nn.group_conv import transform

Transform = Callable[[Batch | GridBatch], Batch | GridBatch]

DEFAULT_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3, torch.bfloat16: 1e-1}


def translation(offset: float | torch.Tensor) -> Transform:
    """The action of shifting every input (context and target) by ``offset``."""
    return lambda batch: batch.shift(offset)


def _transform_cells(x: torch.Tensor, g: tuple[int, int]) -> torch.Tensor:
    """``transform`` applied to the two spatial dimensions of ``[batch, h, w, ...]``."""
    extra = x.ndim - 3
    moved = x.movedim(tuple(range(3, 3 + extra)), tuple(range(1, 1 + extra)))
    out = transform(moved, g)
    return out.movedim(tuple(range(1, 1 + extra)), tuple(range(3, 3 + extra)))


def dihedral(g: tuple[int, int]) -> tuple[Transform, Callable[[Normal], Normal]]:
    """The action of a D4 element on a 2-D :class:`GridBatch` and on gridded predictions.

    Values and masks are rotated/mirrored as images; a quarter turn swaps the coordinate axes.
    Returns the pair ``(transform, output_transform)`` for :func:`equivariance_error`.
    """

    def on_batch(batch: GridBatch) -> GridBatch:
        axes = batch.axes[::-1] if g[0] % 2 else batch.axes
        return GridBatch(
            _transform_cells(batch.y, g),
            _transform_cells(batch.context_mask, g),
            _transform_cells(batch.target_mask, g),
            tuple(axes),
        )

    def on_prediction(pred: Normal) -> Normal:
        return Normal(_transform_cells(pred.mean, g), _transform_cells(pred.stddev, g))

    return on_batch, on_prediction


def dihedral_points(g: tuple[int, int]) -> Transform:
    """The action of a D4 element about the origin on the inputs of a 2-D point-set batch.

    ``(k, m)`` mirrors the second coordinate if ``m``, then turns ``k`` quarter turns
    ``(x0, x1) → (−x1, x0)``, as :func:`dihedral` moves the cells of a grid. Targets move
    with the data, so predictions are invariant: no output transform is needed. Compose with
    :func:`translation` for rotations about other points.
    """
    k, m = g

    def act(x: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[..., 0], -x[..., 1] if m else x[..., 1]
        for _ in range(k % 4):
            x0, x1 = -x1, x0
        return torch.stack([x0, x1], dim=-1)

    return lambda batch: replace(batch, xc=act(batch.xc), xt=act(batch.xt))


@torch.no_grad()
def equivariance_error(
    model: nn.Module,
    batch: Batch | GridBatch,
    transform: Transform,
    output_transform: Callable[[Normal], Normal] | None = None,
) -> float:
    """Largest change of the predictive mean or std when the inputs are transformed.

    Compares ``model(transform(batch))`` with ``output_transform(model(batch))`` (outputs
    are invariant, i.e. ``output_transform`` is the identity, for groups that act on the
    inputs only). The model is called in its current mode: call ``model.eval()`` first
    unless training-mode behaviour (fixed-input dropout) is what is being checked.
    """
    expected = model(batch)
    if output_transform is not None:
        expected = output_transform(expected)
    actual = model(transform(batch))
    return max(
        (actual.mean - expected.mean).abs().max().item(),
        (actual.stddev - expected.stddev).abs().max().item(),
    )


def assert_equivariant(
    model: nn.Module,
    batch: Batch | GridBatch,
    transform: Transform,
    output_transform: Callable[[Normal], Normal] | None = None,
    atol: float | None = None,
) -> None:
    """Raises ``AssertionError`` unless :func:`equivariance_error` is within ``atol``.

    The default tolerance depends on the batch's dtype (``1e-9`` in float64).
    """
    atol = DEFAULT_TOLERANCE[batch.dtype] if atol is None else atol
    error = equivariance_error(model, batch, transform, output_transform)
    if error > atol:
        raise AssertionError(f"equivariance error {error:.3e} exceeds tolerance {atol:.1e}")


def random_grid_batch(
    batch_size: int = 3,
    shape: tuple[int, ...] = (8, 8),
    dim_y: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> GridBatch:
    """Random gridded tasks on ``[-1, 1]`` along each axis.

    About a third of the cells are context, a third targets; the rest hold NaN, which a
    model must never read.
    """
    generator = torch.Generator().manual_seed(seed)
    y = torch.randn(batch_size, *shape, dim_y, generator=generator, dtype=dtype)
    role = torch.randint(0, 3, (batch_size, *shape), generator=generator)
    context, target = role == 0, role == 1
    y = torch.where((context | target)[..., None], y, torch.nan)
    axes = tuple(torch.linspace(-1, 1, n, dtype=dtype) for n in shape)
    return GridBatch(y, context, target, axes)


def random_batch(
    batch_size: int = 3,
    num_context: int = 7,
    num_target: int = 11,
    dim_x: int = 1,
    dim_y: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Batch:
    """A batch of random tasks on ``[-2, 2]^dx`` whose every task spans the same box.

    The first two targets of every task sit at the corners ``-2`` and ``2``, so models with a
    data-adaptive grid build the same grid for the whole batch as for each task alone.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int) -> torch.Tensor:
        return (4 * torch.rand(*shape, generator=generator, dtype=dtype) - 2).to(dtype)

    xt = uniform(batch_size, num_target, dim_x)
    xt[:, 0], xt[:, 1] = -2.0, 2.0
    return Batch(
        xc=uniform(batch_size, num_context, dim_x),
        yc=torch.randn(batch_size, num_context, dim_y, generator=generator, dtype=dtype),
        xt=xt,
        yt=torch.randn(batch_size, num_target, dim_y, generator=generator, dtype=dtype),
    )


def randomise_fixed_inputs(model: nn.Module) -> nn.Module:
    """Gives the zero-initialised fixed-input projections random weights, as training would."""
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)
    return model


def pad_with_junk(batch: Batch, num_context: int, seed: int = 0) -> Batch:
    """``batch.pad_context(num_context)`` with random finite values at the padded points.

    Padded inputs are drawn from ``[-4, 4]``, beyond the span of :func:`random_batch`, so a
    model that let padding place its grid or carry data would predict differently.
    """
    padded = batch.pad_context(num_context)
    generator = torch.Generator().manual_seed(seed)
    keep = padded.context_mask[..., None]
    junk_x = 8 * torch.rand(padded.xc.shape, generator=generator, dtype=batch.dtype) - 4
    junk_y = 3 * torch.randn(padded.yc.shape, generator=generator, dtype=batch.dtype)
    return replace(
        padded, xc=torch.where(keep, padded.xc, junk_x), yc=torch.where(keep, padded.yc, junk_y)
    )


def _assert_same_prediction(actual: Normal, expected: Normal) -> None:
    """Means and standard deviations agree to float64 tolerance."""
    tol = DEFAULT_TOLERANCE[torch.float64]
    torch.testing.assert_close(actual.mean, expected.mean, rtol=tol, atol=tol)
    torch.testing.assert_close(actual.stddev, expected.stddev, rtol=tol, atol=tol)


class ModelContract:
    """Behaviour every registry model must have; subclass it with ``key`` set.

    Attributes:
        key: Registry key of the model under test.
        hparams: Hyper-parameters passed to :func:`aenp.build_model` (keep the model small).
        dim_x: Input dimension of the tasks.
        stationary_prior: Whether an empty context gives the same prediction at every target
            (strictly, i.e. with fixed inputs zeroed): true of translation-equivariant
            point-set models; a grid model's prediction changes near the edges of its grid.
    """

    key: ClassVar[str]
    hparams: ClassVar[dict[str, Any]] = {}
    dim_x: ClassVar[int] = 1
    stationary_prior: ClassVar[bool] = False

    def build(self, dim_y: int = 1, dtype: torch.dtype = torch.float32):
        """The model under test, seeded and in evaluation mode."""
        torch.manual_seed(0)
        return build_model(self.key, self.dim_x, dim_y, **self.hparams).to(dtype).eval()

    def batch(self, **kwargs: Any) -> Batch:
        """A :func:`random_batch` of the model's input dimension."""
        return random_batch(dim_x=self.dim_x, **kwargs)

    def test_shapes_and_finite_loglik(self):
        """Predictions are Normals of the targets' shape with a finite log-likelihood."""
        for dim_y in (1, 2):
            batch = self.batch(dim_y=dim_y)
            pred = self.build(dim_y=dim_y)(batch)
            assert isinstance(pred, Normal)
            assert pred.mean.shape == batch.yt.shape
            assert pred.stddev.shape == batch.yt.shape
            assert bool(torch.isfinite(pred.log_prob(batch.yt)).all())
            assert bool((pred.stddev > 0).all())

    def test_called_with_tensors_or_batch(self):
        """``model(xc, yc, xt)`` and ``model(batch)`` agree."""
        model, batch = self.build(), self.batch()
        by_tensors = model(batch.xc, batch.yc, batch.xt)
        torch.testing.assert_close(by_tensors.mean, model(batch).mean, rtol=0, atol=0)

    def test_empty_context_gives_prior_like_prediction(self):
        """With an empty context (``nc = 0``) each target's prediction is a prior marginal.

        It is finite, and a function of that target's input alone: removing or reordering the
        other targets changes nothing. A stationary prior is also the same at every target.
        """
        model = self.build(dtype=torch.float64)
        batch = self.batch(num_context=0, dtype=torch.float64)
        pred = model(batch)
        assert pred.mean.shape == batch.yt.shape
        assert bool(torch.isfinite(pred.mean).all() and torch.isfinite(pred.stddev).all())
        assert bool((pred.stddev > 0).all())
        # The first two targets span the batch's box, so grid models build the same grid.
        keep = torch.tensor([0, 1, 9, 4, 7, 2])
        fewer = model(Batch(batch.xc, batch.yc, batch.xt[:, keep]))
        torch.testing.assert_close(fewer.mean, pred.mean[:, keep], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(fewer.stddev, pred.stddev[:, keep], rtol=1e-9, atol=1e-9)
        if self.stationary_prior:
            with strictly_equivariant(model):
                strict = model(batch)
            for values in (strict.mean, strict.stddev):
                torch.testing.assert_close(
                    values, values[:, :1].expand_as(values), rtol=1e-9, atol=1e-9
                )

    def test_batch_split_consistency(self):
        """Each task's prediction is the same in a batch as alone."""
        model, batch = self.build(dtype=torch.float64), self.batch(dtype=torch.float64)
        whole = model(batch)
        for i in range(len(batch)):
            alone = model(batch[i])
            torch.testing.assert_close(alone.mean, whole.mean[i : i + 1], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(alone.stddev, whole.stddev[i : i + 1], rtol=1e-9, atol=1e-9)

    def test_float32_and_float64_agree(self):
        """Both precisions give the same prediction to float32 accuracy."""
        batch = self.batch(dtype=torch.float64)
        pred64 = self.build(dtype=torch.float64)(batch)
        pred32 = self.build(dtype=torch.float32)(batch.to(torch.float32))
        assert pred64.mean.dtype == torch.float64
        torch.testing.assert_close(pred32.mean.double(), pred64.mean, rtol=1e-3, atol=1e-3)

    def test_inputs_of_another_precision_are_cast_to_the_model(self):
        """A float64 batch into a float32 model (and the reverse) predicts in the model's dtype."""
        batch64 = self.batch(dtype=torch.float64)
        model32, model64 = self.build(dtype=torch.float32), self.build(dtype=torch.float64)
        down, up = model32(batch64), model64(batch64.to(torch.float32))
        assert (down.mean.dtype, up.mean.dtype) == (torch.float32, torch.float64)
        torch.testing.assert_close(down.mean, model32(batch64.to(torch.float32)).mean)
        torch.testing.assert_close(up.mean, model64(batch64).mean, rtol=1e-4, atol=1e-4)

    def test_trains_under_bf16_autocast(self):
        """Under bf16 autocast (how a GPU trains) the prediction is float32's to bf16's tolerance.

        The loss and every parameter's gradient are finite.
        """
        model, batch = self.build(), self.batch()
        reference = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(batch)
            loss = -target_loglik(batch, pred).mean()
        loss.backward()
        tol = DEFAULT_TOLERANCE[torch.bfloat16]
        torch.testing.assert_close(pred.mean.float(), reference.mean, rtol=tol, atol=tol)
        torch.testing.assert_close(pred.stddev.float(), reference.stddev, rtol=tol, atol=tol)
        assert bool(torch.isfinite(loss))
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{name} gets no gradient"
            assert bool(torch.isfinite(parameter.grad).all()), f"{name}'s gradient is not finite"

    def test_prediction_depends_on_context(self):
        """Changing the context outputs changes the prediction."""
        model, batch = self.build(), self.batch()
        other = Batch(batch.xc, batch.yc + 1.0, batch.xt)
        assert (model(other).mean - model(batch).mean).abs().max() > 1e-6

    def test_padded_context_predicts_as_unpadded(self):
        """Padding the context sets (junk at masked points) changes no prediction.

        Checked from ``nc = 7`` and from ``nc = 0``; from 7 also with the mask passed by
        keyword, and for an approximate model inside ``strictly_equivariant``.
        """
        model = randomise_fixed_inputs(self.build(dtype=torch.float64))
        for num_context in (0, 7):
            batch = self.batch(num_context=num_context, dtype=torch.float64)
            padded = pad_with_junk(batch, num_context + 5)
            _assert_same_prediction(model(padded), model(batch))
        by_keyword = model(padded.xc, padded.yc, padded.xt, context_mask=padded.context_mask)
        _assert_same_prediction(by_keyword, model(batch))
        if injection_sites(model):
            with strictly_equivariant(model):
                _assert_same_prediction(model(padded), model(batch))

    def test_tasks_padded_together_predict_as_alone(self):
        """Tasks of 0, 3 and 7 context points padded to 10 in one batch predict as alone."""
        model = randomise_fixed_inputs(self.build(dtype=torch.float64))
        tasks = [
            self.batch(batch_size=1, num_context=nc, dtype=torch.float64, seed=seed)
            for seed, nc in enumerate((0, 3, 7))
        ]
        # Concatenation pads to 7; padding to 10 on top must respect the mask it made.
        pred = model(pad_with_junk(Batch.concat(tasks), 10))
        for i, task in enumerate(tasks):
            _assert_same_prediction(
                Normal(pred.mean[i : i + 1], pred.stddev[i : i + 1]), model(task)
            )

    def test_padding_leaves_gradients_unchanged(self):
        """The loss's gradients with respect to every parameter are the same padded or not."""
        model = randomise_fixed_inputs(self.build(dtype=torch.float64))
        batch = self.batch(dtype=torch.float64)
        gradients = []
        for version in (batch, pad_with_junk(batch, 12)):
            model.zero_grad(set_to_none=True)
            (-model(version).log_prob(batch.yt).mean()).backward()
            gradients.append({name: p.grad for name, p in model.named_parameters()})
        unpadded, padded = gradients
        assert any(g is not None for g in unpadded.values())
        for name, grad in unpadded.items():
            if grad is None:
                assert padded[name] is None, name
            else:
                torch.testing.assert_close(padded[name], grad, rtol=1e-8, atol=1e-10, msg=name)

    def test_rejects_mismatched_dimensions(self):
        """Wrong dimensions, batch sizes, NaNs, empty targets and devices are named errors."""
        import pytest

        model, batch = self.build(), self.batch()
        with pytest.raises(ValueError, match=f"dim_x={self.dim_x}"):
            model(random_batch(dim_x=self.dim_x + 1))
        with pytest.raises(ValueError, match="dim_y=1"):
            model(self.batch(dim_y=2))
        with pytest.raises(ValueError, match="batch size"):
            model(batch.xc, batch.yc, batch.xt[:2])
        with pytest.raises(ValueError, match="NaN"):
            model(batch.xc, batch.yc.masked_fill(batch.yc > 0, float("nan")), batch.xt)
        with pytest.raises(ValueError, match="nt >= 1"):
            model(batch.xc, batch.yc, batch.xt[:, :0])
        with pytest.raises(TypeError, match="yc is required"):
            model(batch.xc, None, batch.xt)
        with pytest.raises(ValueError, match="the batch is on cpu but the model on meta"):
            self.build().to("meta")(batch)
