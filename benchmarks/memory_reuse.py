r"""What keeping freed memory for the next step (:func:`aenp.train.cpu.keep_freed_memory`) is worth.

    python benchmarks/memory_reuse.py [--models convcnp@quick tetnp@quick] [--steps 60] \
        [--repeats 5] [--threads 2]

Times aenp's eager gp1d training step (as ``benchmarks/training_step.py`` does: forward, loss,
backward, fused AdamW on pre-generated batches of 16 tasks) with glibc's default ``malloc``
settings and with freed memory kept, and counts the page faults and the system CPU time (the
kernel's: mostly zeroing the faulted pages) per timed step. The system time is the steadier
figure on a shared machine. Every measurement is a fresh process, with subnormal floats
flushed; the two settings alternate within each repeat. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gp1d_models import configurations
from peers import load_batches, write_batches
from training_step import LR, POOL, time_steps

SETTINGS = ("glibc defaults", "freed memory kept")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One model's steps/s and page faults per step under one setting."""
    import torch

    from aenp import Batch, build_model
    from aenp.train.cpu import flush_subnormal_floats, keep_freed_memory
    from aenp.train.module import adamw, negative_mean_loglik

    torch.set_num_threads(spec["threads"])
    flush_subnormal_floats()
    if spec["setting"] == "freed memory kept" and not keep_freed_memory():
        raise SystemExit("this C library has no glibc mallopt")
    batches = [
        Batch(**{k: torch.from_numpy(v) for k, v in arrays.items()})
        for arrays in load_batches(spec["batches"], POOL)
    ]
    torch.manual_seed(0)
    model = build_model(spec["key"], 1, 1, **spec["hparams"])
    optimizer = adamw(model.parameters(), LR, 0.0)

    def step(batch):
        loss = negative_mean_loglik(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return time_steps(step, batches, spec["steps"], "cpu")  # with its peak RSS


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["convcnp@quick", "tetnp@quick"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    known = configurations()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    measured = {(m, s): [] for m in args.models for s in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.npz"
        write_batches(batches, POOL)
        for _ in range(args.repeats):
            for (model, setting), results in measured.items():
                key, hparams = known[model]
                spec = {"key": key, "hparams": hparams, "setting": setting, "batches": str(batches)}
                results.append(measure(spec | {"steps": args.steps, "threads": args.threads}))
                rate = results[-1]["steps_per_second"]
                print(f"{model}, {setting}: {rate:.1f} steps/s", file=sys.stderr)
    print(
        f"gp1d eager training steps, batches of 16, {args.threads} threads, {args.steps} timed "
        f"steps after a pass over {POOL} batches, {args.repeats} fresh processes each\n"
    )
    print(
        "| model | malloc | train steps/s (median, min–max) | page faults per step "
        "| system CPU ms per step | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    for (model, setting), results in measured.items():
        rates = [r["steps_per_second"] for r in results]
        faults = statistics.median(r["faults_per_step"] for r in results)
        system = statistics.median(r["system_ms_per_step"] for r in results)
        rss = statistics.median(r["peak_rss_mb"] for r in results)
        print(
            f"| {model} | {setting} | {statistics.median(rates):.1f} "
            f"({min(rates):.1f}–{max(rates):.1f}) | {faults:,.0f} | {system:.2f} | {rss:.0f} |"
        )
    print()
    for model in args.models:
        kept, default = (
            statistics.median(r["steps_per_second"] for r in measured[model, s])
            for s in reversed(SETTINGS)
        )
        print(f"{model}: {kept / default:.2f}× with freed memory kept")


if __name__ == "__main__":
    main()
