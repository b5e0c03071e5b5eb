"""aenp's ConvCNP beside the neuralprocesses ConvCNP, side by side on the same gp1d batches.

The peer runs in its own virtual environment (it is not a dependency of aenp):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 neuralprocesses==0.2.7
    python benchmarks/peers.py --peer-python /tmp/peer/bin/python [--steps 40] [--repeats 3]

Both are configured as in BENCHMARKS.md (U-Net 6 × 64 channels, strides 2, kernel 5,
64 points per unit, margin 0.1, heteroscedastic Gaussian; Adam 3e-4), use two threads, and
train on the same pre-generated batches (16 tasks, nc ~ U{1..64}, nt = 128). Each measurement
is a fresh process that starts with aenp's allocator setting
(:data:`aenp.train.cpu.MALLOC_ENVIRONMENT`), so that both libraries' steps reuse freed memory
alike; the contenders are interleaved. Prints a Markdown table (with the work of each network:
:func:`harness.layer_macs`), the ratio of the medians, that ratio per unit of work, and the
ceiling on the ratio that aenp's U-Net sets (:func:`harness.unet_milliseconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gp1d_models import PEER_CONFIGURATIONS
from harness import layer_macs, peak_memory, unet_milliseconds

NEURALPROCESSES_CONVCNP = {
    "dim_x": 1,
    "dim_yc": (1,),
    "dim_yt": 1,
    "likelihood": "het",
    "points_per_unit": 64,
    "margin": 0.1,
    "conv_arch": "unet",
    "unet_channels": (64,) * 6,
    "unet_strides": (2,) * 6,
    "unet_kernels": 5,
    "encoder_scales": None,
}
AENP_CONVCNP = PEER_CONFIGURATIONS["convcnp@neuralprocesses"][1]
WARMUP = 5


def write_batches(path: Path, count: int, batch_size: int = 16) -> None:
    """Pre-generates gp1d training batches with aenp and stores them as plain arrays."""
    import torch

    from aenp.data.experiments import get_experiment

    generator = torch.Generator().manual_seed(0)
    sample = get_experiment("gp1d").sample_train
    batches = [sample(batch_size, generator) for _ in range(count)]
    arrays = {}
    for i, b in enumerate(batches):
        for name in ("xc", "yc", "xt", "yt"):
            arrays[f"{name}{i}"] = getattr(b, name).numpy()
    np.savez(path, **arrays)


def load_batches(path: Path, count: int) -> list[dict[str, np.ndarray]]:
    with np.load(path) as arrays:
        return [{n: arrays[f"{n}{i}"] for n in ("xc", "yc", "xt", "yt")} for i in range(count)]


def time_training(step, batches: list) -> float:
    """Steps per second over the batches after a warm-up."""
    for batch in batches[:WARMUP]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[WARMUP:]:
        step(batch)
    return (len(batches) - WARMUP) / (time.perf_counter() - start)


def measurements(model, step, batches: list, rate: float) -> dict:
    """What both children report after timing, the peak RSS read before anything else.

    The layers' multiply-accumulates (:func:`harness.layer_macs`) are the mean over the batches.
    """
    return peak_memory("cpu") | {
        "steps_per_second": rate,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layer_macs": statistics.mean(layer_macs(model, lambda b=b: step(b)) for b in batches),
    }


def child_aenp(path: Path, count: int) -> dict:
    import torch

    from aenp import Batch, build_model
    from aenp.train.cpu import configure_cpu

    torch.set_num_threads(2)
    configure_cpu()  # as `aenp train` does
    torch.manual_seed(0)
    model = build_model("convcnp", 1, 1, **AENP_CONVCNP)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    batches = [
        Batch(**{k: torch.from_numpy(v) for k, v in b.items()}) for b in load_batches(path, count)
    ]

    def step(batch):
        loss = -model(batch).log_prob(batch.yt).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rate = time_training(step, batches)
    return measurements(model, step, batches, rate) | {
        "unet_ms": unet_milliseconds(model, batches[WARMUP:], model)
    }


def neuralprocesses_training(arrays: list[dict[str, np.ndarray]], device: str) -> tuple:
    """The neuralprocesses ConvCNP, its training step and the batches it takes, on ``device``.

    Returns ``(model, step, batches)``; ``step(batch)`` is one forward, loss, backward and Adam
    step (BENCHMARKS.md).
    """
    import lab
    import neuralprocesses.torch as nps
    import torch

    lab.set_global_device(device)  # as neuralprocesses' own training script does
    torch.manual_seed(0)
    model = nps.construct_convgnp(**NEURALPROCESSES_CONVCNP).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    # neuralprocesses is channels-first: [batch, dim, n].
    batches = [
        {k: torch.from_numpy(v).transpose(1, 2).contiguous().to(device) for k, v in b.items()}
        for b in arrays
    ]

    def step(b):
        loss = -torch.mean(nps.loglik(model, b["xc"], b["yc"], b["xt"], b["yt"], normalise=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step, batches


def child_neuralprocesses(path: Path, count: int) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    model, step, batches = neuralprocesses_training(load_batches(path, count), "cpu")
    rate = time_training(step, batches)
    return measurements(model, step, batches, rate)


CHILDREN = {"aenp": child_aenp, "neuralprocesses": child_neuralprocesses}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-python", required=True, help="python of the peer's venv")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = args.steps + WARMUP
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.batches, count)))
        return
    from aenp.train.cpu import MALLOC_ENVIRONMENT  # not in the peer's environment

    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.npz"
        write_batches(batches, count)
        pythons = {"aenp": sys.executable, "neuralprocesses": args.peer_python}
        runs: dict[str, list[dict]] = {name: [] for name in CHILDREN}
        for _ in range(args.repeats):
            for name, python in pythons.items():
                command = [python, __file__, "--peer-python", args.peer_python, "--child", name]
                command += ["--batches", str(batches), "--steps", str(args.steps)]
                environment = os.environ | MALLOC_ENVIRONMENT
                done = subprocess.run(
                    command, env=environment, check=True, capture_output=True, text=True
                )
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"ConvCNP, gp1d batches of 16, {args.steps} steps × {args.repeats} fresh processes\n")
    print(
        "| library | parameters | layer MACs per step, millions | train steps/s (median, min–max) "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        rates = [r["steps_per_second"] for r in results]
        rate = f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"
        rss = max(r["peak_rss_mb"] for r in results)
        macs = results[0]["layer_macs"] / 1e6
        print(f"| {name} | {results[0]['parameters']:,} | {macs:,.0f} | {rate} | {rss:.0f} |")
    medians = {name: statistics.median(r["steps_per_second"] for r in runs[name]) for name in runs}
    aenp_rate, peer_rate = medians["aenp"], medians["neuralprocesses"]
    print(f"\naenp / neuralprocesses: {aenp_rate / peer_rate:.2f}×")
    work = runs["aenp"][0]["layer_macs"] / runs["neuralprocesses"][0]["layer_macs"]
    print(
        f"aenp's layers do {work:.2f}× neuralprocesses' multiply-accumulates per step (the "
        f"networks differ), so per multiply-accumulate aenp trains "
        f"{aenp_rate / peer_rate * work:.2f}× as fast."
    )
    unet_ms = statistics.median(r["unet_ms"] for r in runs["aenp"])
    print(
        f"aenp's U-Net alone, forward and backward on the grids of the timed steps: "
        f"{unet_ms:.1f} ms, {unet_ms * aenp_rate / 10:.0f}% of aenp's {1000 / aenp_rate:.1f} ms "
        f"step: however little the rest of the step cost, aenp could train at most "
        f"{1000 / peer_rate / unet_ms:.2f}× as fast as neuralprocesses ({1000 / peer_rate:.1f} ms) "
        f"with the convolutions as they are."
    )


if __name__ == "__main__":
    main()
