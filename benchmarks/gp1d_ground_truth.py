"""Time to sample gp1d tasks and compute their exact ground truth, per batch of 16 tasks.

python benchmarks/gp1d_ground_truth.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aenp.data.gp import GPMixture, switching_kernels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| nc | sample ms (median) | ground truth ms (median, min–max) |")
    print("|---|---|---|")
    for nc in (1, 16, 64):
        mixture = GPMixture(switching_kernels(), num_context=(nc, nc))
        generator = torch.Generator().manual_seed(0)
        sample_ms, truth_ms = [], []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            tasks = mixture.sample(16, generator)
            sample_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            mixture.ground_truth(tasks)
            truth_ms.append((time.perf_counter() - start) * 1000)
        sample_ms, truth_ms = sample_ms[2:], truth_ms[2:]
        print(
            f"| {nc} | {statistics.median(sample_ms):.1f} | {statistics.median(truth_ms):.1f} "
            f"({min(truth_ms):.1f}–{max(truth_ms):.1f}) |"
        )


if __name__ == "__main__":
    main()
