"""1-D convolutions as oneDNN's 1-D ones against aenp's layout (2-D, height one, channels last).

    python benchmarks/conv_layout.py [--repeats 30] [--threads 2]

aenp's 1-D CNNs run their layers as 2-D convolutions of ``[batch, channels, 1, n]`` with the
channels last in memory (:func:`aenp.nn.cnn.to_conv_layout`); the same parameters applied with
``F.conv1d`` and ``F.conv_transpose1d`` to ``[batch, channels, n]`` compute the same map. Timed
forward and backward (of a random projection), the two alternating within each repeat, on 16
tasks at 32 channels:

* each layer of the quick gp1d U-Net (kernel 5) on the grid sizes of its levels;
* the whole U-Net of the quick ConvCNP (6 levels, a 320-point grid) and of neuralprocesses'
  configuration (64 channels, 6 levels, a 576-point grid);
* a training step (forward, loss, backward, AdamW) of the quick ConvCNP on gp1d batches.

Prints a Markdown table of medians in milliseconds and the 1-D / aenp ratio.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aenp.batch import target_loglik
from aenp.data.experiments import get_experiment
from aenp.models.registry import build_model
from aenp.nn.cnn import PlanarConv1d, PlanarConvTranspose1d, UNet
from aenp.train.module import adamw
from harness import in_process_timing, speedup_row

TASKS, CHANNELS, KERNEL = 16, 32, 5
QUICK = {"points_per_unit": 32, "channels": 32, "num_layers": 6}


def one_d_forward(unet: UNet, h: torch.Tensor) -> torch.Tensor:
    """The U-Net's map with ``F.conv1d`` and ``F.conv_transpose1d`` on ``[batch, c, n]``."""
    skips = []
    for conv in unet.down:
        skips.append(h)
        h = F.relu(F.conv1d(h, conv.weight, conv.bias, stride=2, padding=conv.padding))
    for conv in unet.up:
        up = F.conv_transpose1d(
            h, conv.weight, conv.bias, stride=2, padding=conv.padding, output_padding=1
        )
        h = torch.cat([F.relu(up), skips.pop()], dim=1)
    return F.conv1d(h, unet.out.weight, unet.out.bias)


def layer_steps(layer: torch.nn.Module, size: int) -> dict[str, Callable]:
    """Forward and backward of one layer on ``size`` points, its input laid out either way."""
    x = torch.randn(TASKS, layer.in_channels, size, requires_grad=True)
    laid_out = x.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
    laid_out.requires_grad_()
    transposed = isinstance(layer, PlanarConvTranspose1d)
    one_d = F.conv_transpose1d if transposed else F.conv1d
    options = {"stride": layer.stride, "padding": layer.padding}
    if transposed:
        options["output_padding"] = layer.output_padding

    def in_1d() -> None:
        one_d(x, layer.weight, layer.bias, **options).sum().backward()

    def in_aenp_layout() -> None:
        layer(laid_out).sum().backward()

    return {"1-D": in_1d, "aenp": in_aenp_layout}


def unet_steps(channels: int, levels: int, size: int) -> dict[str, Callable]:
    """Forward and backward of a U-Net on the ConvCNP's channels-last grid features."""
    torch.manual_seed(0)
    unet = UNet(1, channels, levels, KERNEL)
    features = torch.randn(TASKS, size, channels, requires_grad=True)
    cotangent = torch.randn(TASKS, channels, size)

    def in_1d() -> None:
        (one_d_forward(unet, features.movedim(-1, 1)) * cotangent).sum().backward()

    def in_aenp_layout() -> None:
        (unet(features.movedim(-1, 1)) * cotangent).sum().backward()

    return {"1-D": in_1d, "aenp": in_aenp_layout}


def training_steps() -> dict[str, Callable]:
    """A training step of the quick ConvCNP, its U-Net applied in either layout."""
    torch.manual_seed(0)
    model = build_model("convcnp", 1, 1, **QUICK)
    (unet,) = (m for m in model.modules() if isinstance(m, UNet))
    optimizer = adamw(model.parameters(), 5e-4, 0.0)
    generator = torch.Generator().manual_seed(0)
    experiment = get_experiment("gp1d")
    batches = [experiment.sample_train(TASKS, generator) for _ in range(16)]
    count = 0

    def step(layout: str) -> None:
        nonlocal count
        # An instance attribute: the class's forward for aenp's layout, the 1-D one otherwise.
        unet.__dict__.pop("forward", None)
        if layout == "1-D":
            unet.forward = types.MethodType(one_d_forward, unet)
        batch = batches[count % len(batches)]
        count += 1
        loss = -target_loglik(batch, model(batch)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {layout: (lambda layout=layout: step(layout)) for layout in ("1-D", "aenp")}


def compare(name: str, steps: dict[str, Callable], repeats: int) -> None:
    """Times the 1-D layout and aenp's alternately; prints one row of medians."""
    print(speedup_row(name, {"1-D": steps["1-D"], "aenp": steps["aenp"]}, repeats), flush=True)


def main() -> None:
    args = in_process_timing(__doc__)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}\n")
    print("| forward + backward, 16 tasks | 1-D ms | aenp ms | speed-up |\n|---|---|---|---|")
    down = PlanarConv1d(CHANNELS, CHANNELS, KERNEL, stride=2, padding=KERNEL // 2)
    up = PlanarConvTranspose1d(
        2 * CHANNELS, CHANNELS, KERNEL, stride=2, padding=KERNEL // 2, output_padding=1
    )
    for size in (320, 80, 20):
        compare(
            f"stride-2 convolution, {size} → {size // 2} points",
            layer_steps(down, size),
            args.repeats,
        )
        compare(
            f"transposed convolution, {size // 2} → {size} points",
            layer_steps(up, size // 2),
            args.repeats,
        )
    compare("U-Net, quick ConvCNP", unet_steps(32, 6, 320), args.repeats)
    compare("U-Net, neuralprocesses' configuration", unet_steps(64, 6, 576), args.repeats)
    compare("quick ConvCNP training step", training_steps(), args.repeats)


if __name__ == "__main__":
    main()
