"""Throughput of the PhiFlow smoke simulator (plumes per minute), as `aenp data smoke` runs it.

python benchmarks/smoke_simulation.py [--resolutions 64 128] [--batch-size 32] [--batches 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aenp.data.smoke import SmokeSettings, simulate, simulation_parameters, simulation_seed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=1)
    args = parser.parse_args()
    print("| resolution | steps | batch | seconds per batch | plumes per minute |")
    print("|---|---|---|---|---|")
    for resolution in args.resolutions:
        settings = SmokeSettings(resolution=resolution)
        seconds = []
        for b in range(args.batches):
            indices = range(b * args.batch_size, (b + 1) * args.batch_size)
            seeds = [simulation_seed(settings, "train", i) for i in indices]
            parameters = np.stack([simulation_parameters(s) for s in seeds])
            start = time.perf_counter()
            simulate(parameters, settings)
            seconds.append(time.perf_counter() - start)
        per_batch = float(np.median(seconds))
        print(
            f"| {resolution} | {settings.num_steps} | {args.batch_size} | {per_batch:.1f} "
            f"| {60 * args.batch_size / per_batch:.1f} |"
        )


if __name__ == "__main__":
    main()
