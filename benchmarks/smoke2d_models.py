"""Training and inference speed of the 2-D models on gridded smoke2d-like tasks.

Batches of 16 tasks on an R × R grid (R = 64 and 128 by default), a quarter of the cells as
context and 256 target cells, synthetic values (the content does not change the cost), two
threads, each measurement in a fresh process. Models at their default (paper) sizes and at the
sizes of `aenp reproduce smoke2d --scale quick`. Prints a Markdown table per resolution.

    python benchmarks/smoke2d_models.py [--resolutions 64 128] [--steps 3] [--models ...]
"""

from __future__ import annotations

import argparse
import json

import torch

from harness import WARMUP_STEPS, measure_model, print_table, run_interleaved

QUICK_PT = {"embed_dim": 32, "num_heads": 4, "num_layers": 2, "ff_dim": 32, "num_pseudo_tokens": 16}
QUICK_CONV = {"channels": 16, "num_layers": 3}
QUICK_EQUIV = {"channels": 4, "num_layers": 3, "kernel_size": 3}
DOMAIN = {"domain": [[0.0, 1.0], [0.0, 1.0]]}
CONFIGURATIONS = {
    "pttnp": ("pttnp", {}),
    "tepttnp": ("tepttnp", {}),
    "tepttnp_approx": ("tepttnp_approx", DOMAIN),
    "convcnp": ("convcnp", {}),
    "convcnp_approx": ("convcnp_approx", DOMAIN),
    "relaxed_convcnp": ("relaxed_convcnp", DOMAIN),
    "equivcnp": ("equivcnp", {}),
    "equivcnp_approx": ("equivcnp_approx", DOMAIN),
    "pttnp@quick": ("pttnp", QUICK_PT),
    "tepttnp@quick": ("tepttnp", QUICK_PT),
    "convcnp@quick": ("convcnp", QUICK_CONV),
    "relaxed_convcnp@quick": ("relaxed_convcnp", {**DOMAIN, "channels": 16, "num_layers": 4}),
    "equivcnp@quick": ("equivcnp", QUICK_EQUIV),
}
BATCH_SIZE = 16
CONTEXT_FRACTION = 0.25
NUM_TARGETS = 256


def grid_tasks(resolution: int, generator: torch.Generator):
    """A batch of gridded tasks with equal context and target counts."""
    from aenp.batch import GridBatch

    cells = resolution**2
    num_context = round(CONTEXT_FRACTION * cells)
    order = torch.argsort(torch.rand(BATCH_SIZE, cells, generator=generator), dim=1)
    context = torch.zeros(BATCH_SIZE, cells, dtype=torch.bool)
    target = torch.zeros_like(context)
    context.scatter_(1, order[:, :num_context], True)
    target.scatter_(1, order[:, num_context : num_context + NUM_TARGETS], True)
    shape = (BATCH_SIZE, resolution, resolution)
    y = torch.rand(*shape, 1, generator=generator)
    centres = (torch.arange(resolution) + 0.5) / resolution
    return GridBatch(y, context.view(shape), target.view(shape), (centres, centres))


def measure(name: str, steps: int, resolution: int, device: str) -> dict:
    """Runs in a child process: one model's figures at one resolution."""
    from aenp import build_model
    from aenp.train.cpu import configure_cpu

    torch.set_num_threads(2)
    configure_cpu()
    key, hparams = CONFIGURATIONS[name]
    generator = torch.Generator().manual_seed(0)
    batches = [grid_tasks(resolution, generator).to(device) for _ in range(steps + WARMUP_STEPS)]
    torch.manual_seed(0)
    model = build_model(key, 2, 1, **hparams).to(device)
    return measure_model(model, batches, batches[0], device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.resolution, args.device)))
        return
    for resolution in args.resolutions:
        child_args = ["--steps", str(args.steps), "--resolution", str(resolution)]
        runs = run_interleaved(
            __file__, args.models, args.repeats, [*child_args, "--device", args.device]
        )
        print(
            f"\nsmoke2d-like workload, {resolution}×{resolution} grid: batch {BATCH_SIZE}, "
            f"{CONTEXT_FRACTION:.0%} context, {NUM_TARGETS} targets, {args.steps} steps × "
            f"{args.repeats} processes, device {args.device}\n"
        )
        print_table(runs, "forward ms")


if __name__ == "__main__":
    main()
