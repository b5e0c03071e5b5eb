"""Shared parts of the model benchmarks: timing a model, fresh processes, the table."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

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
