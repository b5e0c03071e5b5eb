"""Time of one AdamW step for the quick gp1d models' parameters: fused, multi-tensor, per tensor.

    python benchmarks/optimizer_step.py [--steps 200] [--threads 2]

``aenp train`` uses the fused AdamW (:func:`aenp.train.module.adamw`) on every device. Random
gradients; the parameters of each model as the plan of ``aenp reproduce gp1d --scale quick``
builds it (``configs/reproduce/gp1d.yaml``, read by ``gp1d_models.configurations``).
Prints a Markdown table of microseconds per step (median of 5 repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aenp import build_model
from aenp.train.cpu import configure_cpu
from gp1d_models import configurations

MODELS = ("convcnp@quick", "tetnp@quick", "tnp@quick")
VARIANTS = {"fused": {"fused": True}, "multi-tensor": {"foreach": True}, "per tensor": {}}


def microseconds_per_step(parameters: list[torch.nn.Parameter], variant: dict, steps: int) -> float:
    """Median time of an AdamW ``variant``'s step over ``parameters`` (which hold gradients)."""
    options = {"foreach": False} | variant
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, **options)
    for _ in range(10):
        optimizer.step()
    repeats = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        repeats.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_cpu()
    print(
        f"AdamW step, µs (median of 5 × {args.steps}), {args.threads} threads, "
        f"torch {torch.__version__}\n"
    )
    print("| model | parameters | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 2) + "|")
    found = configurations()
    for name in MODELS:
        key, hparams = found[name]
        parameters = list(build_model(key, 1, 1, **hparams).parameters())
        for p in parameters:
            p.grad = torch.randn_like(p)
        count = sum(p.numel() for p in parameters)
        times = [microseconds_per_step(parameters, v, args.steps) for v in VARIANTS.values()]
        print(f"| {name} | {count:,} | " + " | ".join(f"{t:.0f}" for t in times) + " |")


if __name__ == "__main__":
    main()
