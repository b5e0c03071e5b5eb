"""Approximate equivariance: learned fixed inputs fed to an equivariant backbone.

An equivariant model ``E`` becomes approximately equivariant when it is also given a few
learned functions of absolute position, ``Φ(D) ≈ E(D, t_1, …, t_B)`` (Ashman et al., 2024).
The fixed inputs do not move with the data, so they break the symmetry exactly as much as
training asks them to; with ``t ≡ 0`` the model is strictly equivariant again.

This module is the whole mechanism:

* :class:`FixedInputs` — ``t: R^dx → R^B`` (an MLP of position, zero outside its domain),
  a bias-free projection to the backbone's width initialised at zero (so an approximate model
  starts equal to its strict one), one keep/drop flag per task drawn once per forward pass
  during training, and an on/off switch;
* :class:`InjectionPoint` — the base class of a backbone that accepts fixed inputs;
* :func:`approximate` — attaches fixed inputs to a backbone's single injection point;
* :func:`strictly_equivariant` — a context manager that zeroes every fixed input of a model
  and restores the previous state on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from aenp.errors import InputError
from aenp.nn.mlp import MLP

DEFAULT_HIDDEN = (64, 64)


class FixedInputs(nn.Module):
    """Learned fixed inputs ``t(x)`` projected to a backbone's feature width.

    Args:
        dim_x: Input dimension ``dx``.
        width: Feature width at the backbone's injection point.
        num_fixed_inputs: Number ``B`` of fixed inputs.
        p_drop: Probability that all fixed inputs of a task are dropped (zeroed) in a
            training forward pass.
        domain: Box ``[(low, high)] * dx`` on which the fixed inputs live; they are zero
            outside it, so the model is strictly equivariant there. ``None``: everywhere. A
            dimension given as ``(None, None)`` is ignored: the fixed inputs do not vary along
            it (e.g. time, where the test period lies outside the training one).
        hidden: Hidden widths of the MLP that computes ``t``.
    """

    def __init__(
        self,
        dim_x: int,
        width: int,
        num_fixed_inputs: int = 4,
        p_drop: float = 0.5,
        domain: Sequence[Sequence[float | None]] | None = None,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
    ):
        super().__init__()
        if num_fixed_inputs < 1:
            raise InputError(f"num_fixed_inputs must be at least 1, got {num_fixed_inputs}")
        if not 0.0 <= p_drop <= 1.0:
            raise InputError(f"p_drop must lie in [0, 1], got {p_drop}")
        self.dim_x = dim_x
        self.num_fixed_inputs = num_fixed_inputs
        self.p_drop = p_drop
        self.hidden = tuple(hidden)
        self.enabled = True
        if domain is None:
            self.bounds = None
            self.active_dims = list(range(dim_x))
            self.register_buffer("domain", None)
        else:
            pairs = [tuple(pair) for pair in domain]
            if len(pairs) != dim_x or any(len(pair) != 2 for pair in pairs):
                raise InputError(f"domain must be {dim_x} (low, high) pair(s), got {domain}")
            self.active_dims = [d for d, pair in enumerate(pairs) if pair != (None, None)]
            active = [pairs[d] for d in self.active_dims]
            if not active or not all(None not in pair and pair[0] < pair[1] for pair in active):
                raise InputError(
                    f"domain must be {dim_x} (low, high) pair(s) with low < high (or "
                    f"(None, None) for an ignored dimension, not all), got {domain}"
                )
            self.register_buffer("domain", torch.tensor(active, dtype=torch.get_default_dtype()))
            # The domain as given, exactly (the buffer rounds it to the default dtype).
            self.bounds = [[None if b is None else float(b) for b in pair] for pair in pairs]
        self.basis = MLP(len(self.active_dims), num_fixed_inputs, hidden)
        _spread_hinges(self.basis)
        self.projection = nn.Linear(num_fixed_inputs, width, bias=False)
        nn.init.zeros_(self.projection.weight)

    def values(self, x: Float[Tensor, "*shape dx"]) -> Float[Tensor, "*shape num_fixed_inputs"]:
        """The fixed inputs ``t(x)`` themselves, zero outside the domain."""
        if len(self.active_dims) < self.dim_x:
            x = x[..., self.active_dims]
        if self.domain is None:
            return self.basis(x)
        low, high = self.domain[:, 0], self.domain[:, 1]
        # Rescale the domain to [-1, 1] so the MLP sees well-conditioned inputs.
        t = self.basis((2 * x - (low + high)) / (high - low))
        inside = ((x >= low) & (x <= high)).all(dim=-1, keepdim=True)
        return t * inside

    def forward(
        self, x: Float[Tensor, "#batch *shape dx"], num_tasks: int | None = None
    ) -> Float[Tensor, "batch *shape width"]:
        """Projected fixed inputs at ``x``, zero for dropped tasks or when disabled.

        Args:
            x: Positions; the leading dimension is the task, or 1 for positions shared by
                every task (a grid).
            num_tasks: Number of tasks when ``x`` is shared; defaults to ``x.shape[0]``.
        """
        num_tasks = x.shape[0] if num_tasks is None else num_tasks
        if not self.enabled:
            return x.new_zeros(num_tasks, *x.shape[1:-1], self.projection.out_features)
        features = self.projection(self.values(x))
        if self.training and self.p_drop > 0:
            keep = torch.rand(num_tasks, device=x.device) >= self.p_drop
            return features * keep.to(features.dtype).view(-1, *[1] * (features.ndim - 1))
        return features.expand(num_tasks, *features.shape[1:])


def _spread_hinges(mlp: MLP) -> None:
    """Initialises ``t`` to vary by O(1) across the (normalised) domain ``[-1, 1]^dx``.

    PyTorch's default initialisation makes an MLP of position nearly constant (its outputs
    vary by a few hundredths over the domain), so fixed inputs would carry almost no
    positional information at first and learn slowly. Instead every first-layer ReLU hinge
    passes through a uniformly random point of the domain, and deeper layers use He
    initialisation, so that ``t`` starts as a rich piecewise-linear function of position.
    """
    first, *rest = [m for m in mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        nn.init.normal_(first.weight)
        anchor = torch.rand(first.out_features, first.in_features) * 2 - 1
        first.bias.copy_(-(first.weight * anchor).sum(dim=1))
        for layer in rest:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)


class InjectionPoint(nn.Module):
    """The one place where an equivariant backbone takes fixed inputs.

    A backbone subclasses this and, when :attr:`fixed_inputs` is set (by :func:`approximate`),
    adds ``fixed_inputs(x)`` to its features in exactly one place.

    Args:
        position_dims: Number of leading input dimensions the fixed inputs are functions of
            (all of a TE-TNP's; the gridded ones of a ConvCNP, whose other inputs are data
            channels).
        width: Width of the features the fixed inputs are added to.
        input_dims: Number of input dimensions the backbone takes: the ``position_dims``, then
            data channels. None: ``position_dims`` (no data channels).
    """

    def __init__(self, position_dims: int, width: int, input_dims: int | None = None):
        super().__init__()
        self.position_dims = position_dims
        self.input_dims = position_dims if input_dims is None else input_dims
        self.fixed_input_width = width
        self.fixed_inputs: FixedInputs | None = None


def injection_sites(model: nn.Module) -> list[InjectionPoint]:
    """Submodules of ``model`` that accept fixed inputs (one per equivariant backbone)."""
    return [m for m in model.modules() if isinstance(m, InjectionPoint)]


def approximate(
    model: nn.Module,
    num_fixed_inputs: int = 4,
    p_drop: float = 0.5,
    domain: Sequence[Sequence[float | None]] | None = None,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
) -> nn.Module:
    """Makes an equivariant model approximately equivariant, in place.

    Args:
        model: A model whose backbone has one injection point for fixed inputs.
        num_fixed_inputs: Number ``B`` of learned fixed inputs.
        p_drop: Per-task probability of dropping the fixed inputs during training.
        domain: Box ``[(low, high)] * dx`` outside which the fixed inputs are zero
            (typically the region the training data cover). ``None``: no cut-off. Inputs a
            backbone takes as data channels (``channel_inputs``) must be ``(None, None)``.
        hidden: Hidden widths of the MLP that computes the fixed inputs.

    Returns:
        The same model, now with fixed inputs (initially contributing exactly zero).

    Raises:
        ValueError: If the model has no injection point (it is not equivariant), already
            has fixed inputs, or ``domain`` has not one pair per input dimension.
    """
    sites = injection_sites(model)
    if len(sites) != 1:
        raise InputError(
            f"{type(model).__name__} has {len(sites)} injection points for fixed inputs; "
            "approximate() needs exactly one (an equivariant backbone such as tetnp or convcnp, "
            "whose injection point subclasses aenp.nn.fixed_inputs.InjectionPoint)"
        )
    (site,) = sites
    if site.fixed_inputs is not None:
        raise InputError(f"{type(model).__name__} is already approximately equivariant")
    if domain is not None and len(domain) != site.input_dims:
        raise InputError(
            f"domain must have one (low, high) pair per input dimension (dim_x={site.input_dims}), "
            f"got {len(domain)}: {domain}"
        )
    site_domain = domain
    if domain is not None and len(domain) > site.position_dims:
        # Inputs a backbone does not grid (data channels) cannot carry fixed inputs.
        if any(tuple(pair) != (None, None) for pair in domain[site.position_dims :]):
            raise InputError(
                f"the fixed inputs of {type(model).__name__} vary over its first "
                f"{site.position_dims} input(s), the others being data channels; give "
                f"(None, None) for the rest of domain, got {domain}"
            )
        site_domain = domain[: site.position_dims]
    reference = next(model.parameters())
    site.fixed_inputs = FixedInputs(
        site.position_dims, site.fixed_input_width, num_fixed_inputs, p_drop, site_domain, hidden
    ).to(device=reference.device, dtype=reference.dtype)
    return model


@contextmanager
def strictly_equivariant(model: nn.Module) -> Iterator[nn.Module]:
    """Zeroes every fixed input of ``model`` inside the block; restores the state on exit.

    A strictly equivariant model passes through unchanged. A model without an injection point
    (not equivariant at all) is refused, since zeroing nothing cannot make it equivariant.
    """
    if not injection_sites(model):
        raise InputError(
            f"{type(model).__name__} has no injection point for fixed inputs: it is not an "
            "equivariant model, so it cannot be made strictly equivariant"
        )
    modules = [m for m in model.modules() if isinstance(m, FixedInputs)]
    previous = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m, enabled in zip(modules, previous, strict=True):
            m.enabled = enabled
