"""Registry of neural processes by key; ``<key>_approx`` is ``<key>`` made approximate.

:data:`MODEL_SPECS` holds every fact about a key; each builder's keyword defaults are the
model's default hyper-parameters (the training configs are generated from them).
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aenp.errors import InputError, InputTypeError
from aenp.models.convcnp import ConvCNPBackbone, RelaxedConvCNPBackbone, gridded_inputs
from aenp.models.likelihood import HeteroscedasticNormal
from aenp.models.neural_process import NeuralProcess
from aenp.models.pttnp import PTTNPBackbone, TEPTTNPBackbone
from aenp.models.tnp import TETNPBackbone, TNPBackbone
from aenp.nn.cnn import ConvNet, UNet
from aenp.nn.fixed_inputs import approximate
from aenp.nn.group_conv import GroupConvNet, GroupUNet
from aenp.nn.relaxed_conv import RelaxedConvNet
from aenp.nn.setconv import DEFAULT_MAX_GRID_POINTS

APPROX_SUFFIX = "_approx"


def build_tnp(
    dim_x: int,
    dim_y: int,
    embed_dim: int = 128,
    num_heads: int = 8,
    num_layers: int = 5,
    ff_dim: int = 128,
    min_std: float = 1e-3,
) -> NeuralProcess:
    """Non-equivariant transformer neural process (TNP)."""
    backbone = TNPBackbone(dim_x, dim_y, embed_dim, num_heads, num_layers, ff_dim)
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


def build_tetnp(
    dim_x: int,
    dim_y: int,
    embed_dim: int = 128,
    num_heads: int = 8,
    num_layers: int = 5,
    ff_dim: int = 128,
    kernel_hidden: Sequence[int] = (16,),
    kernel_lengthscale: float = 1.0,
    min_std: float = 1e-3,
) -> NeuralProcess:
    """Translation-equivariant transformer neural process (TE-TNP)."""
    backbone = TETNPBackbone(
        dim_x,
        dim_y,
        embed_dim,
        num_heads,
        num_layers,
        ff_dim,
        tuple(kernel_hidden),
        kernel_lengthscale,
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


def build_pttnp(
    dim_x: int,
    dim_y: int,
    embed_dim: int = 128,
    num_heads: int = 8,
    num_layers: int = 5,
    ff_dim: int = 128,
    num_pseudo_tokens: int = 64,
    min_std: float = 1e-3,
) -> NeuralProcess:
    """Non-equivariant pseudo-token TNP (PT-TNP)."""
    backbone = PTTNPBackbone(
        dim_x, dim_y, embed_dim, num_heads, num_layers, ff_dim, num_pseudo_tokens
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


def build_tepttnp(
    dim_x: int,
    dim_y: int,
    embed_dim: int = 128,
    num_heads: int = 8,
    num_layers: int = 5,
    ff_dim: int = 128,
    num_pseudo_tokens: int = 64,
    kernel_hidden: Sequence[int] = (16,),
    offset_scale: float = 1.0,
    kernel_lengthscale: float = 1.0,
    min_std: float = 1e-3,
) -> NeuralProcess:
    """Translation-equivariant pseudo-token TNP (TE-PT-TNP)."""
    backbone = TEPTTNPBackbone(
        dim_x,
        dim_y,
        embed_dim,
        num_heads,
        num_layers,
        ff_dim,
        num_pseudo_tokens,
        tuple(kernel_hidden),
        offset_scale,
        kernel_lengthscale,
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


CNNS = {"unet": UNet, "conv": ConvNet}


def build_convcnp(
    dim_x: int,
    dim_y: int,
    points_per_unit: float = 64,
    margin: float = 0.1,
    cnn: str = "unet",
    channels: int = 64,
    num_layers: int = 6,
    kernel_size: int = 5,
    channel_inputs: int = 0,
    min_std: float = 1e-3,
    max_grid_points: int = DEFAULT_MAX_GRID_POINTS,
) -> NeuralProcess:
    """Convolutional conditional neural process on a lattice-anchored grid.

    ``cnn`` is ``"unet"`` (``num_layers`` stride-2 levels) or ``"conv"`` (``num_layers``
    residual blocks at full resolution). The last ``channel_inputs`` inputs (e.g. elevation)
    enter as data channels instead of grid dimensions. A batch of point sets whose grid would
    exceed ``max_grid_points`` points is refused.
    """
    if cnn not in CNNS:
        raise InputError(f"unknown cnn {cnn!r}; choose one of {sorted(CNNS)}")
    network = CNNS[cnn](gridded_inputs(dim_x, channel_inputs), channels, num_layers, kernel_size)
    backbone = ConvCNPBackbone(
        dim_x, dim_y, network, channels, points_per_unit, margin, channel_inputs, max_grid_points
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


GROUP_CNNS = {"unet": GroupUNet, "conv": GroupConvNet}


def build_equivcnp(
    dim_x: int,
    dim_y: int,
    points_per_unit: float = 64,
    margin: float = 0.1,
    cnn: str = "unet",
    channels: int = 8,
    num_layers: int = 4,
    kernel_size: int = 5,
    min_std: float = 1e-3,
    max_grid_points: int = DEFAULT_MAX_GRID_POINTS,
) -> NeuralProcess:
    """ConvCNP whose CNN is equivariant to the rotations and reflections of the grid (D4).

    ``channels`` counts regular fields, each of 8 feature maps. Exactly equivariant to the
    8 dihedral transformations of gridded inputs (:class:`aenp.GridBatch`), and on point sets
    to every symmetry of the lattice: lattice translations, and quarter turns and mirrors
    about lattice points and cell centres (one isotropic set-convolution lengthscale).
    """
    if dim_x != 2:
        raise InputError(
            "equivcnp acts on 2-D inputs (the dihedral group of the square grid), "
            f"got dim_x={dim_x}"
        )
    if cnn not in GROUP_CNNS:
        raise InputError(f"unknown cnn {cnn!r}; choose one of {sorted(GROUP_CNNS)}")
    network = GROUP_CNNS[cnn](dim_x, channels, num_layers, kernel_size)
    backbone = ConvCNPBackbone(
        dim_x,
        dim_y,
        network,
        channels,
        points_per_unit,
        margin,
        max_grid_points=max_grid_points,
        isotropic=True,
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


def build_relaxed_convcnp(
    dim_x: int,
    dim_y: int,
    points_per_unit: float = 64,
    margin: float = 0.1,
    channels: int = 32,
    num_layers: int = 6,
    kernel_size: int = 5,
    num_banks: int = 2,
    channel_inputs: int = 0,
    min_std: float = 1e-3,
    max_grid_points: int = DEFAULT_MAX_GRID_POINTS,
) -> NeuralProcess:
    """ConvCNP with relaxed convolutions: ``num_banks`` filter banks per layer.

    Built without fixed inputs it is an ordinary ConvCNP (uniform bank weights); the registry
    key ``relaxed_convcnp`` always attaches fixed inputs, which set the weights. The last
    ``channel_inputs`` inputs enter as data channels and ``max_grid_points`` bounds the grid,
    as in :func:`build_convcnp`.
    """
    network = RelaxedConvNet(
        gridded_inputs(dim_x, channel_inputs), channels, num_layers, kernel_size, num_banks
    )
    backbone = RelaxedConvCNPBackbone(
        dim_x, dim_y, network, channels, points_per_unit, margin, channel_inputs, max_grid_points
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


TRANSLATION = "translation"
"""Symmetry of shifts (of the lattice, for models on a grid)."""
P4M = "p4m"
"""Symmetry of lattice shifts, quarter turns and mirrors."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the registry knows about one model key.

    Attributes:
        key: The registry key; ``<key>_approx`` is ``<key>`` followed by
            :func:`aenp.approximate`.
        builder: Makes the model from ``dim_x``, ``dim_y`` and hyper-parameters, whose defaults
            are its keyword defaults.
        display_name: The paper's name, for tables and figures.
        symmetry: The group the model is equivariant to (:data:`TRANSLATION` or :data:`P4M`),
            exactly, or approximately for an approximate model; ``None`` for none.
        strict_counterpart: The strictly equivariant model an approximate one relaxes (what
            it is inside :func:`aenp.strictly_equivariant`); ``None`` for a strict model.
    """

    key: str
    builder: Callable[..., NeuralProcess]
    display_name: str
    symmetry: str | None = None
    strict_counterpart: str | None = None

    @property
    def approximate(self) -> bool:
        """Whether the key always comes with fixed inputs."""
        return self.strict_counterpart is not None

    @property
    def saved_key(self) -> str:
        """The key a saved config holds: that of the builder, before :func:`aenp.approximate`."""
        return self.key.removesuffix(APPROX_SUFFIX)

    def default_hparams(self) -> dict[str, Any]:
        """Every hyper-parameter with its default: the builder's, then ``approximate``'s."""
        functions = [self.builder, *([approximate] if self.approximate else [])]
        return {
            name: parameter.default
            for function in functions
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        # key, builder, display name, symmetry, strict counterpart
        ModelSpec("tnp", build_tnp, "TNP"),
        ModelSpec("tetnp", build_tetnp, "TE-TNP (T)", TRANSLATION),
        ModelSpec("pttnp", build_pttnp, "PT-TNP"),
        ModelSpec("tepttnp", build_tepttnp, "TE-PT-TNP (T)", TRANSLATION),
        ModelSpec("convcnp", build_convcnp, "ConvCNP (T)", TRANSLATION),
        ModelSpec("equivcnp", build_equivcnp, "EquivCNP (E)", P4M),
        ModelSpec(
            "relaxed_convcnp", build_relaxed_convcnp, "RelaxedConvCNP (T̃)", TRANSLATION, "convcnp"
        ),
        ModelSpec("tetnp_approx", build_tetnp, "TE-TNP (T̃)", TRANSLATION, "tetnp"),
        ModelSpec("tepttnp_approx", build_tepttnp, "TE-PT-TNP (T̃)", TRANSLATION, "tepttnp"),
        ModelSpec("convcnp_approx", build_convcnp, "ConvCNP (T̃)", TRANSLATION, "convcnp"),
        ModelSpec("equivcnp_approx", build_equivcnp, "EquivCNP (Ẽ)", P4M, "equivcnp"),
    )
}
"""Every model by registry key, in the order :func:`model_keys` lists them."""

_DEPRECATED = {
    "BUILDERS": lambda: {k: s.builder for k, s in MODEL_SPECS.items() if k == s.saved_key},
    "EQUIVARIANT": lambda: tuple(
        k for k, s in MODEL_SPECS.items() if s.symmetry and not s.approximate
    ),
    "APPROXIMATE_ONLY": lambda: tuple(
        k for k, s in MODEL_SPECS.items() if s.approximate and k == s.saved_key
    ),
}
"""Former views of the registry, now read from :data:`MODEL_SPECS`."""


def __getattr__(name: str) -> Any:
    """Gives a deprecated view of :data:`MODEL_SPECS`, with a warning."""
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"aenp.models.registry.{name} is deprecated; read MODEL_SPECS (one ModelSpec per key)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _DEPRECATED[name]()


def strict_counterpart(key: str) -> str | None:
    """The strictly equivariant model an approximate one relaxes (``None`` if not approximate)."""
    spec = MODEL_SPECS.get(key)
    return None if spec is None else spec.strict_counterpart


APPROXIMATE_HPARAMS = tuple(
    name for name in inspect.signature(approximate).parameters if name != "model"
)


@dataclass(frozen=True)
class Rule:
    """What one hyper-parameter accepts: values of a type, and a range within that type."""

    expected: str
    has_type: Callable[[Any], bool]
    in_range: Callable[[Any], bool]


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def integer(low: int, high: float = math.inf, odd: bool = False) -> Rule:
    """An integer from ``low`` to ``high`` (and odd if ``odd``)."""
    kind = "an odd integer" if odd else "an integer"
    return Rule(
        f"{kind} in [{low}, {high}]" if math.isfinite(high) else f"{kind} >= {low}",
        _is_integer,
        lambda value: low <= value <= high and (not odd or value % 2 == 1),
    )


def number(low: float, high: float = math.inf, include_low: bool = True) -> Rule:
    """A finite number from ``low`` (included or not) to ``high``."""
    if math.isfinite(high):
        expected = f"a number in [{low:g}, {high:g}]"
    else:
        expected = f"a finite number {'>=' if include_low else '>'} {low:g}"
    return Rule(
        expected,
        _is_number,
        lambda value: (
            math.isfinite(value)
            and (value >= low if include_low else value > low)
            and value <= high
        ),
    )


def widths(non_empty: bool) -> Rule:
    """A list of layer widths, each an integer ``>= 1``."""
    return Rule(
        f"a{' non-empty' if non_empty else ''} list of integers >= 1",
        lambda value: _is_list(value) and all(_is_integer(w) for w in value),
        lambda value: (bool(value) or not non_empty) and all(w >= 1 for w in value),
    )


def _is_bound_pair(pair: Any) -> bool:
    return _is_list(pair) and len(pair) == 2 and all(b is None or _is_number(b) for b in pair)


def _valid_bounds(pair: Sequence[float | None]) -> bool:
    if tuple(pair) == (None, None):
        return True
    low, high = pair
    return None not in pair and math.isfinite(low) and math.isfinite(high) and low < high


MAX_LAYERS = 100
"""Most layers (or U-Net levels) a model may have: more is surely a mistake."""
MAX_PARAMETERS = 10**9
"""Most parameters :func:`build_model` makes (4 GB in float32): more is surely a mistake."""

DOMAIN = Rule(
    "None or a list of (low, high) pairs, each finite with low < high, or (None, None) for an "
    "input the fixed inputs ignore (not every input)",
    lambda value: value is None or (_is_list(value) and all(map(_is_bound_pair, value))),
    lambda value: (
        value is None
        or (all(map(_valid_bounds, value)) and any(tuple(p) != (None, None) for p in value))
    ),
)

RULES: dict[str, Rule] = {
    # Transformers.
    "embed_dim": integer(1),
    "num_heads": integer(1),
    "num_layers": integer(1, MAX_LAYERS),
    "ff_dim": integer(1),
    "kernel_hidden": widths(non_empty=True),
    "kernel_lengthscale": number(0, include_low=False),
    "num_pseudo_tokens": integer(1),
    "offset_scale": number(0),
    # Convolutional models.
    "points_per_unit": number(0, include_low=False),
    "margin": number(0),
    "cnn": Rule(
        f"one of {sorted(CNNS.keys() | GROUP_CNNS.keys())}",
        lambda value: isinstance(value, str),
        lambda value: value in CNNS.keys() | GROUP_CNNS.keys(),
    ),
    "channels": integer(1),
    "kernel_size": integer(1, odd=True),
    "channel_inputs": integer(0),
    "num_banks": integer(1),
    "max_grid_points": integer(1),
    # Every model.
    "min_std": number(0, include_low=False),
    # Fixed inputs (the arguments of approximate).
    "num_fixed_inputs": integer(1),
    "p_drop": number(0, 1),
    "domain": DOMAIN,
    "hidden": widths(non_empty=False),
}
"""What each hyper-parameter accepts, by name: a name means the same thing in every builder."""

RULE_EXCEPTIONS: dict[str, dict[str, Rule]] = {
    # A CNN of no layers still makes a model: the set convolutions read the context.
    "convcnp": {"num_layers": integer(0, MAX_LAYERS)},
    "equivcnp": {"num_layers": integer(0, MAX_LAYERS)},
}
"""Builders that accept more than the common rule for a hyper-parameter."""


def check_hparams(key: str, dim_x: int, hparams: dict[str, Any]) -> None:
    """Checks hyper-parameters against :data:`RULES` and against each other.

    Args:
        key: Registry key of the model, named in every message.
        dim_x: Input dimension ``dx`` of the model.
        hparams: The given hyper-parameters, those of :func:`aenp.approximate` included.

    Raises:
        InputTypeError: If a value has the wrong type.
        InputError: If a value is out of range or inconsistent with another.
    """
    rules = {**RULES, **RULE_EXCEPTIONS.get(MODEL_SPECS[key].saved_key, {})}
    for name, value in hparams.items():
        rule = rules[name]
        if not rule.has_type(value):
            raise InputTypeError(
                f"model {key!r}: hyper-parameter {name} must be {rule.expected}, got {value!r} "
                f"({type(value).__name__})"
            )
        if not rule.in_range(value):
            raise InputError(
                f"model {key!r}: hyper-parameter {name} must be {rule.expected}, got {value!r}"
            )
    # Constraints between hyper-parameters see the builders' defaults too.
    values = {**MODEL_SPECS[key].default_hparams(), **hparams}
    if "num_heads" in values and values["embed_dim"] % values["num_heads"]:
        raise InputError(
            f"model {key!r}: hyper-parameter num_heads must divide embed_dim="
            f"{values['embed_dim']}, got {values['num_heads']}"
        )
    if values.get("channel_inputs", 0) >= dim_x:
        raise InputError(
            f"model {key!r}: hyper-parameter channel_inputs must be < dim_x={dim_x} (at least "
            f"one input lies on the grid), got {values['channel_inputs']}"
        )
    domain = values.get("domain")
    if domain is not None and len(domain) != dim_x:
        raise InputError(
            f"model {key!r}: hyper-parameter domain must have one (low, high) pair per input "
            f"dimension (dim_x={dim_x}), got {len(domain)}: {domain}"
        )


def model_keys() -> list[str]:
    """Every registry key, approximate variants included."""
    return list(MODEL_SPECS)


def build_model(key: str, dim_x: int, dim_y: int, **hparams: Any) -> NeuralProcess:
    """Builds a neural process by registry key.

    Args:
        key: One of :func:`model_keys`, e.g. ``"convcnp"`` or ``"convcnp_approx"``.
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        **hparams: Hyper-parameters of the builder; for ``*_approx`` keys also those of
            :func:`aenp.approximate` (``num_fixed_inputs``, ``p_drop``, ``domain``, ``hidden``).

    Returns:
        The model, called as ``model(xc, yc, xt)`` and returning a ``Normal`` over ``yt``.

    Raises:
        InputError: If the key or a hyper-parameter is unknown, or a value is out of range
            (see :data:`RULES`), or the model would have more than :data:`MAX_PARAMETERS`
            parameters; the message names the key, the hyper-parameter, what it accepts and
            the value given.
        InputTypeError: If a value has the wrong type.
    """
    if not isinstance(key, str) or key not in MODEL_SPECS:
        raise InputError(f"unknown model key {key!r}; available: {', '.join(model_keys())}")
    spec = MODEL_SPECS[key]
    for name, value in (("dim_x", dim_x), ("dim_y", dim_y)):
        if not _is_integer(value):
            raise InputTypeError(
                f"{name} must be a positive integer, got {value!r} ({type(value).__name__})"
            )
        if value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    accepted = spec.default_hparams()
    unknown = hparams.keys() - accepted.keys()
    if unknown:
        raise InputError(
            f"unknown hyper-parameter(s) {sorted(unknown)} for model {key!r}; "
            f"valid: {sorted(accepted)}"
        )
    approx_args = {k: hparams.pop(k) for k in APPROXIMATE_HPARAMS if k in hparams}
    check_hparams(key, dim_x, {**hparams, **approx_args})

    def assemble() -> NeuralProcess:
        model = spec.builder(dim_x, dim_y, **hparams)
        model.build_config = {
            "key": spec.saved_key,
            "dim_x": dim_x,
            "dim_y": dim_y,
            "hparams": _plain(hparams),
        }
        if spec.approximate:
            approximate(model, **approx_args)
        return model

    # Counted on the meta device (nothing allocated), so an absurd width is an error rather
    # than an exhausted memory.
    too_large = f"model {key!r} with hyper-parameters {hparams | approx_args} is too large"
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in assemble().parameters())
    except RuntimeError as error:
        if "overflow" not in str(error):  # only a tensor of over 2**63 bytes is expected here
            raise
        raise InputError(f"{too_large} ({error}): reduce its widths") from error
    if size > MAX_PARAMETERS:
        raise InputError(
            f"{too_large}: {size:.2e} parameters, more than the {MAX_PARAMETERS:.0e} aenp "
            "builds; reduce its widths"
        )
    return assemble()


def model_name(model: NeuralProcess) -> str:
    """Registry key that rebuilds ``model`` (``*_approx`` once it has fixed inputs)."""
    return registry_key(model.config)


def registry_key(config: dict[str, Any]) -> str:
    """The registry key of the model a build config describes.

    A saved key with fixed inputs (``approximate``) names its ``_approx`` variant, where the
    key has one (``relaxed_convcnp`` comes with fixed inputs under its own key).
    """
    key = config["key"]
    if "approximate" in config and f"{key}{APPROX_SUFFIX}" in MODEL_SPECS:
        return key + APPROX_SUFFIX
    return key


def rebuild_model(config: dict[str, Any]) -> NeuralProcess:
    """A freshly initialised model from a build config.

    The config holds ``key``, ``dim_x``, ``dim_y``, ``hparams`` and, for models with fixed
    inputs, ``approximate`` (the arguments of :func:`aenp.approximate`).
    """
    hparams = {**config["hparams"], **config.get("approximate", {})}
    return build_model(registry_key(config), config["dim_x"], config["dim_y"], **hparams)


def _plain(value: Any) -> Any:
    """JSON-friendly copy: tuples become lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
