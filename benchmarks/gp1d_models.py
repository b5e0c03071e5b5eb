"""Training and inference speed of every model on the gp1d workload (BENCHMARKS.md).

Batches of 16 tasks, nc ~ U{1..64}, nt = 128, pre-generated (data generation is not timed),
two threads. Each model runs in a fresh process so peak RSS is its own. Prints a Markdown table.

    python benchmarks/gp1d_models.py [--models tnp convcnp ...] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGURATIONS = {
    # aenp's defaults (the paper's 1-D sizes).
    "tnp": ("tnp", {}),
    "tetnp": ("tetnp", {}),
    "tetnp_approx": ("tetnp_approx", {"domain": [[-4.0, 4.0]]}),
    "convcnp": ("convcnp", {}),
    "convcnp_approx": ("convcnp_approx", {"domain": [[-4.0, 4.0]]}),
    # The peers' own configurations (BENCHMARKS.md), built with aenp.
    "convcnp@neuralprocesses": (
        "convcnp",
        {
            "points_per_unit": 64,
            "margin": 0.1,
            "cnn": "unet",
            "channels": 64,
            "num_layers": 6,
            "kernel_size": 5,
        },
    ),
    "convcnp@tnp": (
        "convcnp",
        {
            "points_per_unit": 16,
            "margin": 0.1,
            "cnn": "conv",
            "channels": 32,
            "num_layers": 5,
            "kernel_size": 9,
        },
    ),
    "tnp@tnp": ("tnp", {"embed_dim": 128, "num_heads": 8, "num_layers": 5, "ff_dim": 128}),
    # The sizes `aenp reproduce gp1d --scale quick` trains.
    "tnp@quick": ("tnp", {"embed_dim": 64, "num_heads": 4, "num_layers": 3, "ff_dim": 64}),
    "tetnp@quick": ("tetnp", {"embed_dim": 64, "num_heads": 4, "num_layers": 3, "ff_dim": 64}),
    "convcnp@quick": ("convcnp", {"points_per_unit": 32, "channels": 32, "num_layers": 5}),
}


def measure(name: str, steps: int, device: str) -> dict:
    """Runs in a child process: one model's figures."""
    from aenp import build_model
    from aenp.data.experiments import get_experiment
    from aenp.data.gp import GPMixture, switching_kernels

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    key, hparams = CONFIGURATIONS[name]
    experiment = get_experiment("gp1d")
    generator = torch.Generator().manual_seed(0)
    batches = [experiment.sample_train(16, generator).to(device) for _ in range(steps + 5)]
    torch.manual_seed(0)
    model = build_model(key, 1, 1, **hparams).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)

    def step(batch):
        loss = -model(batch).log_prob(batch.yt).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for batch in batches[:5]:
        step(batch)
    sync()
    start = time.perf_counter()
    for batch in batches[5:]:
        step(batch)
    sync()
    steps_per_second = steps / (time.perf_counter() - start)
    full = GPMixture(switching_kernels(), num_context=(64, 64)).sample(16, generator).batch
    full = full.to(device)
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(full)
        sync()
        start = time.perf_counter()
        for _ in range(10):
            model(full)
        sync()
    forward_ms = (time.perf_counter() - start) / 10 * 1000
    return {
        "steps_per_second": steps_per_second,
        "forward_ms": forward_ms,
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.device)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in args.models}
    # Interleave the contenders so drifts in machine load affect all of them alike.
    for _ in range(args.repeats):
        for name in args.models:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--steps",
                    str(args.steps),
                    "--device",
                    args.device,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"gp1d workload: batch 16, nc ~ U{{1..64}}, nt = 128, {args.steps} steps × "
        f"{args.repeats} processes, device {args.device}\n"
    )
    print(
        "| model | parameters | train steps/s (median, min–max) | forward ms, nc=64 | peak RSS MB |"
    )
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        rates = [r["steps_per_second"] for r in results]
        forward = [r["forward_ms"] for r in results]
        rss = max(r["peak_rss_mb"] for r in results)
        rate = f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"
        print(
            f"| {name} | {results[0]['parameters']:,} | {rate} "
            f"| {statistics.median(forward):.1f} | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
