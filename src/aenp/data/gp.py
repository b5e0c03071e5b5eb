"""Gaussian-process tasks for the gp1d experiment, with their exact Bayesian ground truth.

Functions are drawn from a uniform mixture of GP priors (by default six Gibbs kernels whose
lengthscale switches at a changepoint) and observed with Gaussian noise. Because the prior is
known, the best achievable predictive, the Bayesian posterior predictive under the mixture, is
computed exactly in float64 and serves as the benchmark's ground truth. Export of tasks for
other libraries: :mod:`aenp.data.gp_export`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import gpytorch
import torch
from jaxtyping import Float, Int
from torch import Tensor

from aenp.batch import Batch
from aenp.errors import InputError, InputTypeError

SHORT_LENGTHSCALE = 0.1
"""Lengthscale on the rough side of a switching kernel's changepoint."""
LONG_LENGTHSCALE = 4.0
"""Lengthscale on the smooth side of a switching kernel's changepoint."""
CHANGEPOINTS = (-1.0, 0.0, 1.0)
"""Changepoints of the gp1d switching kernels (before any shift)."""

NOISE_STD = 0.1
"""Standard deviation of the observation noise in gp1d."""
NUM_CONTEXT = (1, 64)
"""Inclusive range of the number of context points in gp1d."""
NUM_TARGET = 128
"""Number of target points per gp1d task."""
CONTEXT_RANGE = (-2.0, 2.0)
"""Interval of the gp1d context inputs."""
TARGET_RANGE = (-4.0, 4.0)
"""Interval of the gp1d target inputs."""

GP1D_OOD_SHIFT = 8.0
"""Offset added to every input (and changepoint) of the out-of-distribution gp1d split."""
GP1D_NUM_TASKS = 4096
"""Number of tasks in each fixed gp1d evaluation split."""
GP1D_BATCH_SIZE = 16
"""Number of tasks per batch in gp1d."""
GP1D_SPLITS = {"val": 2_024_001, "test": 2_024_002, "ood": 2_024_003}
"""Seed of each fixed gp1d evaluation split."""

_EXACT_DTYPE = torch.float64
_CHOLESKY_JITTER = 1e-9
_LOG_2PI = math.log(2 * math.pi)


class GibbsSwitchKernel(gpytorch.kernels.Kernel):
    """Gibbs kernel on 1-D inputs whose lengthscale switches at a changepoint.

    With ``l(x) = lengthscale_left`` for ``x < changepoint`` and ``lengthscale_right`` otherwise,
    ``k(x, x') = sqrt(2 l(x) l(x') / (l(x)² + l(x')²)) · exp(−(x − x')² / (l(x)² + l(x')²))``.
    The kernel has unit variance and no trainable parameters.

    Args:
        changepoint: Input at which the lengthscale switches.
        lengthscale_left: Lengthscale below the changepoint.
        lengthscale_right: Lengthscale at and above the changepoint.
    """

    def __init__(self, changepoint: float, lengthscale_left: float, lengthscale_right: float):
        for name, value in (
            ("lengthscale_left", lengthscale_left),
            ("lengthscale_right", lengthscale_right),
        ):
            if not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        super().__init__()
        self.changepoint = float(changepoint)
        self.lengthscale_left = float(lengthscale_left)
        self.lengthscale_right = float(lengthscale_right)

    def lengthscale_at(self, x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """Lengthscale ``l(x)`` at every input, in the dtype of ``x``."""
        return torch.full_like(x, self.lengthscale_right).masked_fill(
            x < self.changepoint, self.lengthscale_left
        )

    def forward(
        self,
        x1: Float[Tensor, "*batch n 1"],
        x2: Float[Tensor, "*batch m 1"],
        diag: bool = False,
        **params,
    ) -> Float[Tensor, "*batch n m"] | Float[Tensor, "*batch n"]:
        """Dense kernel matrix ``[*batch, n, m]``, or its diagonal ``[*batch, n]`` if ``diag``."""
        for name, x in (("x1", x1), ("x2", x2)):
            if x.shape[-1] != 1:
                raise InputError(
                    f"GibbsSwitchKernel takes 1-D inputs [..., n, 1]; got {name} of shape "
                    f"{tuple(x.shape)}"
                )
        x1, x2 = x1[..., 0], x2[..., 0]
        if not diag:
            x1, x2 = x1[..., :, None], x2[..., None, :]
        l1, l2 = self.lengthscale_at(x1), self.lengthscale_at(x2)
        # In place after the first product: the same arithmetic, without a fresh matrix per
        # operation (task sampling spends most of its time here).
        inv_sum_sq = (l1.square() + l2.square()).reciprocal_()
        prefactor = (2 * l1 * l2).mul_(inv_sum_sq).sqrt_()
        return (x1 - x2).square_().neg_().mul_(inv_sum_sq).exp_().mul_(prefactor)

    def extra_repr(self) -> str:
        """The changepoint and both lengthscales, for ``repr``."""
        return (
            f"changepoint={self.changepoint}, lengthscale_left={self.lengthscale_left}, "
            f"lengthscale_right={self.lengthscale_right}"
        )


def switching_kernels(shift: float = 0.0) -> list[GibbsSwitchKernel]:
    """The six gp1d kernels: each changepoint (moved by ``shift``) × each switching direction."""
    return [
        GibbsSwitchKernel(changepoint + shift, left, right)
        for changepoint in CHANGEPOINTS
        for left, right in (
            (SHORT_LENGTHSCALE, LONG_LENGTHSCALE),
            (LONG_LENGTHSCALE, SHORT_LENGTHSCALE),
        )
    ]


@dataclass(frozen=True)
class GPTasks:
    """Tasks drawn from a :class:`GPMixture`, with the kernel each one was drawn from.

    Attributes:
        batch: The tasks, target outputs included.
        kernel_index: Position of each task's kernel in the generator's kernel list, ``[batch]``.
    """

    batch: Batch
    kernel_index: Int[Tensor, " batch"]

    def __post_init__(self) -> None:
        if self.batch.yt is None:
            raise InputError("batch.yt is None: GP tasks must carry their target outputs")
        if self.kernel_index.dtype != torch.long:
            raise InputTypeError(
                f"kernel_index must be a torch.long tensor, got {self.kernel_index.dtype}"
            )
        if self.kernel_index.shape != (len(self.batch),):
            raise InputError(
                f"kernel_index must have shape [batch] = ({len(self.batch)},), "
                f"got {tuple(self.kernel_index.shape)}"
            )

    def __len__(self) -> int:
        return len(self.batch)


@dataclass(frozen=True)
class GroundTruth:
    """Exact log-likelihoods of a batch of tasks, averaged over each task's targets (nats).

    Attributes:
        loglik: Under the Bayesian predictive of the whole kernel mixture, ``[batch]``.
        oracle_loglik: Under the GP posterior with each task's true kernel, ``[batch]``.
    """

    loglik: Float[Tensor, " batch"]
    oracle_loglik: Float[Tensor, " batch"]


@dataclass(frozen=True)
class MixturePredictive:
    """Posterior predictive of a GP mixture: per target, a mixture of Gaussians over kernels.

    Attributes:
        log_weights: Log posterior probability of each kernel given the context set,
            ``[batch, num_kernels]``.
        mean: Predictive mean of the noisy target outputs under each kernel,
            ``[batch, num_kernels, nt]``.
        var: Predictive variance of the noisy target outputs (observation noise included) under
            each kernel, ``[batch, num_kernels, nt]``.
    """

    log_weights: Float[Tensor, "batch num_kernels"]
    mean: Float[Tensor, "batch num_kernels nt"]
    var: Float[Tensor, "batch num_kernels nt"]

    @property
    def weights(self) -> Float[Tensor, "batch num_kernels"]:
        """Posterior probability of each kernel given the context set."""
        return self.log_weights.exp()

    @property
    def mixture_mean(self) -> Float[Tensor, "batch nt"]:
        """Mean of the mixture at each target."""
        return (self.weights[..., None] * self.mean).sum(dim=-2)

    @property
    def mixture_std(self) -> Float[Tensor, "batch nt"]:
        """Standard deviation of the mixture at each target (total variance over kernels)."""
        spread = (self.mean - self.mixture_mean[:, None]).square()
        return (self.weights[..., None] * (self.var + spread)).sum(dim=-2).sqrt()

    def loglik(self, yt: Float[Tensor, "batch nt 1"]) -> Float[Tensor, "batch nt"]:
        """Log density of the mixture at each target output."""
        expected = (self.mean.shape[0], self.mean.shape[-1], 1)
        if yt.shape != expected:
            raise InputError(f"yt must have shape {expected}, got {tuple(yt.shape)}")
        components = torch.distributions.Normal(self.mean, self.var.sqrt())
        log_density = components.log_prob(yt[:, None, :, 0].to(self.mean.dtype))
        return torch.logsumexp(self.log_weights[..., None] + log_density, dim=-2)

    def given_kernel(self, kernel_index: Int[Tensor, " batch"]) -> MixturePredictive:
        """The predictive of each task's GP with the given kernel alone (all weight on it)."""
        chosen = torch.nn.functional.one_hot(kernel_index, self.log_weights.shape[-1]).bool()
        log_weights = torch.zeros_like(self.log_weights).masked_fill(~chosen, -math.inf)
        return replace(self, log_weights=log_weights)


class GPMixture:
    """Generator of 1-D regression tasks from a uniform mixture of GP priors, with ground truth.

    Each task draws one kernel uniformly, then a function from the zero-mean GP with that kernel,
    observed with Gaussian noise at uniformly drawn context and target inputs. All tasks of a
    batch share the number of context points.

    Args:
        kernels: The mixture components, gpytorch kernels on 1-D inputs.
        noise_std: Standard deviation of the observation noise on every output.
        num_context: Inclusive range ``(min, max)`` of the number of context points, drawn
            uniformly once per batch.
        num_target: Number of target points per task.
        context_range: Interval ``(low, high)`` of the context inputs, before ``shift``.
        target_range: Interval ``(low, high)`` of the target inputs, before ``shift``.
        shift: Offset added to every input. Pass kernels built with the same shift (as
            ``switching_kernels(shift)``) so that the functions move with the inputs.
    """

    def __init__(
        self,
        kernels: Sequence[gpytorch.kernels.Kernel],
        noise_std: float = NOISE_STD,
        num_context: tuple[int, int] = NUM_CONTEXT,
        num_target: int = NUM_TARGET,
        context_range: tuple[float, float] = CONTEXT_RANGE,
        target_range: tuple[float, float] = TARGET_RANGE,
        shift: float = 0.0,
    ):
        if len(kernels) == 0:
            raise InputError("kernels is empty: a GP mixture needs at least one kernel")
        if not noise_std > 0:
            raise InputError(f"noise_std must be positive, got {noise_std}")
        if not 0 <= num_context[0] <= num_context[1]:
            raise InputError(
                f"num_context must be an inclusive range (min, max) with 0 <= min <= max, "
                f"got {num_context}"
            )
        if num_target < 1:
            raise InputError(f"num_target must be at least 1, got {num_target}")
        for name, (low, high) in (("context_range", context_range), ("target_range", target_range)):
            if not low < high:
                raise InputError(
                    f"{name} must be an interval (low, high) with low < high, got {(low, high)}"
                )
        self.kernels = list(kernels)
        self.noise_std = float(noise_std)
        self.num_context = (int(num_context[0]), int(num_context[1]))
        self.num_target = int(num_target)
        self.context_range = (float(context_range[0]), float(context_range[1]))
        self.target_range = (float(target_range[0]), float(target_range[1]))
        self.shift = float(shift)

    def sample(
        self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> GPTasks:
        """Draws a batch of tasks, all randomness from ``generator`` (on its device).

        Args:
            batch_size: Number of tasks.
            generator: Source of randomness; the same state gives the same tasks.
            dtype: Floating-point dtype of the returned batch. Outputs are drawn in float64 at
                the inputs as rounded to ``dtype``, so the ground truth refers to stored inputs.

        Returns:
            The tasks (``xc, yc: [batch, nc, 1]``, ``xt, yt: [batch, nt, 1]``) and their kernels.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        device = generator.device
        num_context = int(
            torch.randint(
                self.num_context[0], self.num_context[1] + 1, (), generator=generator, device=device
            )
        )
        kernel_index = torch.randint(
            len(self.kernels), (batch_size,), generator=generator, device=device
        )
        xc = self._uniform_inputs(batch_size, num_context, self.context_range, generator).to(dtype)
        xt = self._uniform_inputs(batch_size, self.num_target, self.target_range, generator).to(
            dtype
        )

        # Draw context and target outputs jointly from each task's own kernel.
        x = torch.cat([xc, xt], dim=1).to(_EXACT_DTYPE)
        cov = x.new_empty(batch_size, x.shape[1], x.shape[1])
        for k, kernel in enumerate(self.kernels):
            tasks = (kernel_index == k).nonzero()[:, 0]
            cov[tasks] = kernel(x[tasks]).to_dense()
        cov.diagonal(dim1=-2, dim2=-1).add_(self.noise_std**2)
        eps = torch.randn(
            batch_size, x.shape[1], 1, generator=generator, dtype=_EXACT_DTYPE, device=device
        )
        y = (_cholesky(cov) @ eps).to(dtype)
        batch = Batch(xc=xc, yc=y[:, :num_context], xt=xt, yt=y[:, num_context:])
        return GPTasks(batch=batch, kernel_index=kernel_index)

    def predictive(self, batch: Batch) -> MixturePredictive:
        """Exact posterior predictive of the mixture given each task's context set, in float64.

        The posterior weight of kernel ``k`` is proportional to the full marginal likelihood
        ``p_k(yc)`` (uniform prior); with an empty context set it is the prior predictive.

        Args:
            batch: Tasks with 1-D inputs and outputs; ``yt`` is not used.

        Returns:
            Kernel weights ``[batch, num_kernels]`` and per-kernel predictive means and variances
            of the noisy target outputs ``[batch, num_kernels, nt]``.
        """
        if batch.dim_x != 1 or batch.dim_y != 1:
            raise InputError(
                f"GPMixture models 1-D inputs and outputs; got batch with dx = {batch.dim_x}, "
                f"dy = {batch.dim_y}"
            )
        xc, yc, xt = (t.to(_EXACT_DTYPE) for t in (batch.xc, batch.yc, batch.xt))
        num_context = xc.shape[1]
        noise_var = self.noise_std**2

        # Covariances of the context with context and targets, one kernel call per kernel.
        x = torch.cat([xc, xt], dim=1)
        k_cx = torch.stack([kernel(xc, x).to_dense() for kernel in self.kernels], dim=1)
        k_cc, k_ct = k_cx[..., :num_context], k_cx[..., num_context:]
        k_cc.diagonal(dim1=-2, dim2=-1).add_(noise_var)
        k_tt = torch.stack([kernel(xt, xt, diag=True) for kernel in self.kernels], dim=1)
        chol = _cholesky(k_cc)

        # Whiten the context outputs and the context-target covariances.
        yc_white = torch.linalg.solve_triangular(chol, yc[:, None], upper=False)
        k_ct_white = torch.linalg.solve_triangular(chol, k_ct, upper=False)

        mean = (k_ct_white * yc_white).sum(dim=-2)
        var = k_tt - k_ct_white.square().sum(dim=-2) + noise_var
        quadratic = yc_white.square().sum(dim=(-2, -1))
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)
        log_marginal = -0.5 * (quadratic + log_det + num_context * _LOG_2PI)
        return MixturePredictive(
            log_weights=torch.log_softmax(log_marginal, dim=-1), mean=mean, var=var
        )

    def ground_truth(self, tasks: GPTasks) -> GroundTruth:
        """Exact mixture and oracle log-likelihoods of the tasks' targets, in float64."""
        index = tasks.kernel_index
        if bool(((index < 0) | (index >= len(self.kernels))).any()):
            raise InputError(
                f"kernel_index must lie in [0, {len(self.kernels)}) for this generator's kernels, "
                f"got values from {int(index.min())} to {int(index.max())}"
            )
        predictive = self.predictive(tasks.batch)
        yt = tasks.batch.yt
        return GroundTruth(
            loglik=predictive.loglik(yt).mean(dim=-1),
            oracle_loglik=predictive.given_kernel(index).loglik(yt).mean(dim=-1),
        )

    def _uniform_inputs(
        self,
        batch_size: int,
        num_points: int,
        bounds: tuple[float, float],
        generator: torch.Generator,
    ) -> Float[Tensor, "batch n 1"]:
        low, high = bounds
        u = torch.rand(
            batch_size,
            num_points,
            1,
            generator=generator,
            dtype=_EXACT_DTYPE,
            device=generator.device,
        )
        return low + (high - low) * u + self.shift


def _cholesky(matrix: Float[Tensor, "*batch n n"]) -> Float[Tensor, "*batch n n"]:
    """Lower Cholesky factor, adding a small jitter to the diagonal only if one is needed."""
    chol, info = torch.linalg.cholesky_ex(matrix)
    if bool(info.any()):
        eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
        chol, info = torch.linalg.cholesky_ex(matrix + _CHOLESKY_JITTER * eye)
        if bool(info.any()):
            raise torch.linalg.LinAlgError(
                f"covariance matrix is not positive definite even with jitter {_CHOLESKY_JITTER}"
            )
    return chol


def gp1d_generator(split: str) -> GPMixture:
    """The gp1d task generator of a split: ``"train"``, ``"val"``, ``"test"`` or ``"ood"``.

    The ``"ood"`` generator moves every input and changepoint by :data:`GP1D_OOD_SHIFT`.
    """
    valid = ("train", *GP1D_SPLITS)
    if split not in valid:
        raise InputError(f"unknown gp1d split {split!r}; valid splits are {', '.join(valid)}")
    shift = GP1D_OOD_SHIFT if split == "ood" else 0.0
    return GPMixture(switching_kernels(shift), shift=shift)


def gp1d_split(
    split: str, num_tasks: int = GP1D_NUM_TASKS, batch_size: int = GP1D_BATCH_SIZE
) -> list[tuple[GPTasks, GroundTruth]]:
    """A fixed gp1d evaluation split, batched, with its ground truth.

    The tasks depend only on the split's seed in :data:`GP1D_SPLITS`, so they are the same on
    every call; asking for fewer tasks gives a prefix of the full split.

    Args:
        split: ``"val"``, ``"test"`` or ``"ood"``.
        num_tasks: Number of tasks, a multiple of ``batch_size`` (every batch is full).
        batch_size: Number of tasks per batch.

    Returns:
        ``num_tasks // batch_size`` batches of float32 tasks with their float64 ground truth.
    """
    if split not in GP1D_SPLITS:
        raise InputError(
            f"unknown gp1d evaluation split {split!r}; valid splits are {', '.join(GP1D_SPLITS)}"
        )
    if batch_size < 1 or num_tasks < 1 or num_tasks % batch_size:
        raise InputError(
            f"num_tasks must be a positive multiple of batch_size; got num_tasks = {num_tasks}, "
            f"batch_size = {batch_size}"
        )
    mixture = gp1d_generator(split)
    generator = torch.Generator().manual_seed(GP1D_SPLITS[split])
    items = []
    for _ in range(num_tasks // batch_size):
        tasks = mixture.sample(batch_size, generator)
        items.append((tasks, mixture.ground_truth(tasks)))
    return items


_EXPORT_NAMES = ("check_export_path", "export_tasks", "load_exported_tasks")
"""Names of :mod:`aenp.data.gp_export`, still importable from here."""


def __getattr__(name: str) -> Any:
    """Imports an export function of :mod:`aenp.data.gp_export` on first use."""
    if name not in _EXPORT_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("aenp.data.gp_export"), name)
