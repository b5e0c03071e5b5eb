"""Registry of neural processes by key; ``<key>_approx`` is ``<key>`` made approximate."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from aenp.errors import InputError
from aenp.models.convcnp import ConvCNPBackbone, RelaxedConvCNPBackbone, gridded_inputs
from aenp.models.likelihood import HeteroscedasticNormal
from aenp.models.neural_process import NeuralProcess
from aenp.models.pttnp import PTTNPBackbone, TEPTTNPBackbone
from aenp.models.tnp import TETNPBackbone, TNPBackbone
from aenp.nn.cnn import ConvNet, UNet
from aenp.nn.fixed_inputs import approximate
from aenp.nn.group_conv import GroupConvNet, GroupUNet
from aenp.nn.relaxed_conv import RelaxedConvNet

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
    min_std: float = 1e-3,
) -> NeuralProcess:
    """Translation-equivariant transformer neural process (TE-TNP)."""
    backbone = TETNPBackbone(
        dim_x, dim_y, embed_dim, num_heads, num_layers, ff_dim, tuple(kernel_hidden)
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
) -> NeuralProcess:
    """Convolutional conditional neural process on a lattice-anchored grid.

    ``cnn`` is ``"unet"`` (``num_layers`` stride-2 levels) or ``"conv"`` (``num_layers``
    residual blocks at full resolution). The last ``channel_inputs`` inputs (e.g. elevation)
    enter as data channels instead of grid dimensions.
    """
    if cnn not in CNNS:
        raise InputError(f"unknown cnn {cnn!r}; choose one of {sorted(CNNS)}")
    network = CNNS[cnn](gridded_inputs(dim_x, channel_inputs), channels, num_layers, kernel_size)
    backbone = ConvCNPBackbone(
        dim_x, dim_y, network, channels, points_per_unit, margin, channel_inputs
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
) -> NeuralProcess:
    """ConvCNP whose CNN is equivariant to the rotations and reflections of the grid (D4).

    ``channels`` counts regular fields, each of 8 feature maps. Exactly equivariant to the
    8 dihedral transformations of gridded inputs (:class:`aenp.GridBatch`).
    """
    if dim_x != 2:
        raise InputError(
            "equivcnp acts on 2-D inputs (the dihedral group of the square grid), "
            f"got dim_x={dim_x}"
        )
    if cnn not in GROUP_CNNS:
        raise InputError(f"unknown cnn {cnn!r}; choose one of {sorted(GROUP_CNNS)}")
    network = GROUP_CNNS[cnn](dim_x, channels, num_layers, kernel_size)
    backbone = ConvCNPBackbone(dim_x, dim_y, network, channels, points_per_unit, margin)
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
) -> NeuralProcess:
    """ConvCNP with relaxed convolutions: ``num_banks`` filter banks per layer.

    Built without fixed inputs it is an ordinary ConvCNP (uniform bank weights); the registry
    key ``relaxed_convcnp`` always attaches fixed inputs, which set the weights. The last
    ``channel_inputs`` inputs enter as data channels, as in :func:`build_convcnp`.
    """
    network = RelaxedConvNet(
        gridded_inputs(dim_x, channel_inputs), channels, num_layers, kernel_size, num_banks
    )
    backbone = RelaxedConvCNPBackbone(
        dim_x, dim_y, network, channels, points_per_unit, margin, channel_inputs
    )
    return NeuralProcess(backbone, HeteroscedasticNormal(min_std), dim_x, dim_y)


BUILDERS: dict[str, Callable[..., NeuralProcess]] = {
    "tnp": build_tnp,
    "tetnp": build_tetnp,
    "pttnp": build_pttnp,
    "tepttnp": build_tepttnp,
    "convcnp": build_convcnp,
    "equivcnp": build_equivcnp,
    "relaxed_convcnp": build_relaxed_convcnp,
}
EQUIVARIANT = ("tetnp", "tepttnp", "convcnp", "equivcnp")
"""Strictly equivariant models; ``<key>_approx`` is each made approximate."""
APPROXIMATE_ONLY = ("relaxed_convcnp",)
"""Models whose registry key always comes with fixed inputs."""


def strict_counterpart(key: str) -> str | None:
    """The strictly equivariant model an approximate one relaxes (``None`` if not approximate)."""
    if key in APPROXIMATE_ONLY:
        return {"relaxed_convcnp": "convcnp"}[key]
    return key.removesuffix(APPROX_SUFFIX) if key.endswith(APPROX_SUFFIX) else None


APPROXIMATE_HPARAMS = tuple(
    name for name in inspect.signature(approximate).parameters if name != "model"
)


def model_keys() -> list[str]:
    """Every registry key, approximate variants included."""
    return [*BUILDERS, *(key + APPROX_SUFFIX for key in EQUIVARIANT)]


def _approximates(key: str) -> bool:
    return key.endswith(APPROX_SUFFIX) or key in APPROXIMATE_ONLY


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
    """
    base = key.removesuffix(APPROX_SUFFIX)
    if key not in model_keys():
        raise InputError(f"unknown model key {key!r}; available: {', '.join(model_keys())}")
    for name, value in (("dim_x", dim_x), ("dim_y", dim_y)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    builder = BUILDERS[base]
    is_approx = _approximates(key)
    approx_args = {k: hparams.pop(k) for k in APPROXIMATE_HPARAMS if is_approx and k in hparams}
    accepted = set(inspect.signature(builder).parameters) - {"dim_x", "dim_y"}
    unknown = set(hparams) - accepted
    if unknown:
        valid = sorted(accepted | (set(APPROXIMATE_HPARAMS) if is_approx else set()))
        raise InputError(
            f"unknown hyper-parameter(s) {sorted(unknown)} for model {key!r}; valid: {valid}"
        )
    model = builder(dim_x, dim_y, **hparams)
    model.config = {"key": base, "dim_x": dim_x, "dim_y": dim_y, "hparams": _plain(hparams)}
    if is_approx:
        approximate(model, **approx_args)
    return model


def model_name(model: NeuralProcess) -> str:
    """Registry key that rebuilds ``model`` (``*_approx`` once it has fixed inputs)."""
    return registry_key(model.config)


def registry_key(config: dict[str, Any]) -> str:
    """The registry key of the model a build config describes."""
    key = config["key"]
    if "approximate" in config and key not in APPROXIMATE_ONLY:
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
