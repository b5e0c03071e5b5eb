"""Shared parts of the model benchmarks: timing a model, fresh processes, the table."""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch

WARMUP_STEPS = 3


def measure_model(model, batches: Sequence, forward_batch, device: str) -> dict:
    """Training steps/s over ``batches`` (after a warm-up), forward time, parameters, peak RSS."""
    from aenp.batch import target_loglik

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)

    def step(batch):
        loss = -target_loglik(batch, model(batch)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for batch in batches[:WARMUP_STEPS]:
        step(batch)
    sync()
    start = time.perf_counter()
    for batch in batches[WARMUP_STEPS:]:
        step(batch)
    sync()
    steps_per_second = (len(batches) - WARMUP_STEPS) / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(forward_batch)
        sync()
        start = time.perf_counter()
        repeats = 5
        for _ in range(repeats):
            model(forward_batch)
        sync()
    return {
        "steps_per_second": steps_per_second,
        "forward_ms": (time.perf_counter() - start) / repeats * 1000,
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def alternating_medians(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int = WARMUP_STEPS
) -> dict[str, float]:
    """Median milliseconds of each of ``steps``, run in one process taking turns.

    ``warmup`` untimed rounds of every step, then ``repeats`` timed rounds, each step once per
    round in the order given, so that drifts in machine load affect them alike.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(ms) for name, ms in times.items()}


def speedup_row(name: str, steps: dict[str, Callable[[], None]], repeats: int) -> str:
    """``| name | first ms | second ms | first / second× |`` for two contenders taking turns."""
    (first, second) = alternating_medians(steps, repeats).values()
    return f"| {name} | {first:.2f} | {second:.2f} | {first / second:.2f}× |"


def in_process_timing(description: str) -> argparse.Namespace:
    """Parses ``--repeats`` and ``--threads``, then sets torch's threads and aenp's CPU settings."""
    from aenp.train.cpu import configure_cpu

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per contender")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_cpu()
    return args


def peak_memory(device: str) -> dict[str, float]:
    """Peak RSS of this process so far and, on a GPU, peak memory allocated, in MiB."""
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        peak["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def unet_milliseconds(model, batches: Sequence, forward, repeats: int = 3) -> float | None:
    """Milliseconds per batch of ``model``'s U-Net alone, forward and backward.

    The U-Net runs on random inputs of the shapes and memory layouts ``forward(batch)`` gives
    it for each batch (its cost does not depend on the values), after one untimed pass over
    them; median of ``repeats`` passes; the gradients it accumulates are cleared. None if the
    model has no U-Net. The convolutions of a ConvCNP's U-Net are oneDNN's whichever library
    calls them, so this bounds from below the step of any ConvCNP with this U-Net in this layout.
    """
    from aenp.nn.cnn import UNet

    unets = [m for m in model.modules() if isinstance(m, UNet)]
    if len(unets) != 1:
        return None
    (unet,) = unets
    layouts = []  # (shape, strides) of the U-Net's input, per batch
    handle = unet.register_forward_hook(
        lambda module, args, out: layouts.append((args[0].shape, args[0].stride()))
    )
    with torch.no_grad():
        for batch in batches:
            forward(batch)
    handle.remove()
    device = next(unet.parameters()).device
    distinct = {layout: torch.empty_strided(*layout, device=device) for layout in layouts}
    for h in distinct.values():
        h.normal_().requires_grad_()
    inputs = [distinct[layout] for layout in layouts]

    def one_pass() -> float:
        start = time.perf_counter()
        for h in inputs:
            out = unet(h)
            out.backward(torch.ones_like(out))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_pass()
    seconds = statistics.median(one_pass() for _ in range(repeats))
    model.zero_grad()
    return seconds / len(inputs) * 1000


def layer_macs(model, run) -> int:
    """Multiply-accumulates of ``model``'s convolutions and linear layers while ``run()`` runs.

    Counted from the shapes each ``torch.nn`` layer sees in its forward pass (a convolution:
    outputs × input channels per group × kernel cells; a transposed one: inputs × output
    channels per group × kernel cells; a linear layer: outputs × input features), so it compares
    the networks of two libraries that share no code. Work outside such layers (set
    convolutions, likelihoods) is not counted.
    """
    total = 0

    def count(module, args, out):
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += out.numel() * module.in_features
            return
        cells = math.prod(module.kernel_size)
        if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
            total += args[0].numel() * module.out_channels // module.groups * cells
        else:
            total += out.numel() * module.in_channels // module.groups * cells

    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def run_interleaved(script: str, names: Sequence[str], repeats: int, args: Sequence[str]) -> dict:
    """Runs ``script --child NAME *args`` in a fresh process per name and repeat.

    The contenders are interleaved so that drifts in machine load affect all of them alike.
    """
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            command = [sys.executable, script, "--child", name, *args]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    return runs


def print_table(runs: dict[str, list[dict]], forward_label: str) -> None:
    """Markdown table: parameters, training steps/s (median, min–max), forward ms, peak RSS."""
    print(
        f"| model | parameters | train steps/s (median, min–max) | {forward_label} | peak RSS MB |"
    )
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        rates = [r["steps_per_second"] for r in results]
        forward = statistics.median(r["forward_ms"] for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        rate = f"{statistics.median(rates):.2f} ({min(rates):.2f}–{max(rates):.2f})"
        print(f"| {name} | {results[0]['parameters']:,} | {rate} | {forward:.1f} | {rss:.0f} |")
