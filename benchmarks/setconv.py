"""Dense against banded set convolutions: forward + backward time, and a whole ConvCNP step.

    python benchmarks/setconv.py [--repeats 30] [--threads 2]

Set convolutions alone (encoder of a context set onto the grid, decoder of grid features at
the targets; forward, then backward of a random projection of both outputs) at two settings:

* the quick gp1d ConvCNP: 32 points per unit, 16 tasks, nc = 64 contexts in [-2, 2],
  nt = 128 targets in [-4, 4], a 288-point grid (multiple of 32), 32 channels;
* neuralprocesses' ConvCNP: 64 points per unit, the same tasks, a 576-point grid
  (multiple of 64), 64 channels.

Then one training step (forward, loss, backward, AdamW) of the quick ConvCNP
(``build_model("convcnp", 1, 1, points_per_unit=32, channels=32, num_layers=5)``) on gp1d
batches, with its set convolutions dense or banded. The contenders alternate within each
repeat; the table shows medians in milliseconds and the dense / banded ratio.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aenp.batch import target_loglik
from aenp.data.experiments import get_experiment
from aenp.models.registry import build_model
from aenp.nn.setconv import SetConv, SetConvDecoder, SetConvEncoder, lattice_grid
from harness import in_process_timing, speedup_row

SETTINGS = {
    "gp1d quick (ppu 32, 32 channels)": (32, 32, 32),
    "neuralprocesses (ppu 64, 64 channels)": (64, 64, 64),
}
"""Name: points per unit, channels, grid multiple."""
TASKS, NC, NT, MARGIN = 16, 64, 128, 0.1


def set_convolutions(points_per_unit: int, channels: int, multiple: int) -> Callable:
    """A step of encoder and decoder forward and backward; takes ``banded``."""
    generator = torch.Generator().manual_seed(0)
    xc = 4 * torch.rand(TASKS, NC, 1, generator=generator) - 2
    yc = torch.randn(TASKS, NC, 1, generator=generator)
    xt = 8 * torch.rand(TASKS, NT, 1, generator=generator) - 4
    grid = lattice_grid(torch.cat([xc, xt], dim=1), points_per_unit, MARGIN, multiple)
    h = torch.randn(TASKS, *grid.shape, channels, generator=generator, requires_grad=True)
    encoded_cotangent = torch.randn(TASKS, *grid.shape, 2, generator=generator)
    decoded_cotangent = torch.randn(TASKS, NT, channels, generator=generator)
    encoder = SetConvEncoder(1, 2 / points_per_unit)
    decoder = SetConvDecoder(1, 2 / points_per_unit)

    def step(banded: bool) -> None:
        encoder.banded = decoder.banded = banded
        encoded = encoder(xc, yc, grid)
        decoded = decoder(grid, h, xt)
        loss = (encoded * encoded_cotangent).sum() + (decoded * decoded_cotangent).sum()
        loss.backward()

    print(f"  grid {grid.shape[0]} points, window {encoder.window(grid)[0]} points")
    return step


def convcnp_step() -> Callable:
    """A training step of the quick ConvCNP on gp1d batches; takes ``banded``."""
    torch.manual_seed(0)
    model = build_model("convcnp", 1, 1, points_per_unit=32, channels=32, num_layers=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    experiment = get_experiment("gp1d")
    batches = [experiment.sample_train(TASKS, generator) for _ in range(16)]
    count = 0

    def step(banded: bool) -> None:
        nonlocal count
        for module in model.modules():
            if isinstance(module, SetConv):
                module.banded = banded
        batch = batches[count % len(batches)]
        count += 1
        loss = -target_loglik(batch, model(batch)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def compare(name: str, step: Callable, repeats: int) -> None:
    """Times ``step(False)`` (dense) and ``step(True)`` (banded) alternately; prints medians."""
    print(speedup_row(name, {"dense": lambda: step(False), "banded": lambda: step(True)}, repeats))


def main() -> None:
    args = in_process_timing(__doc__)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}")
    steps = {}
    for name, setting in SETTINGS.items():
        print(name)
        steps[f"set convolutions, {name}"] = set_convolutions(*setting)
    steps["quick ConvCNP training step"] = convcnp_step()
    print("\n| forward + backward | dense ms | banded ms | speed-up |\n|---|---|---|---|")
    for name, step in steps.items():
        compare(name, step, args.repeats)


if __name__ == "__main__":
    main()
