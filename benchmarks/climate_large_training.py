"""One epoch of the climate ConvCNP (T̃) on a field larger than memory: time and peak RSS.

Trains ``aenp train experiment=climate model=convcnp_approx`` (the quick plan's model size) for
one epoch of ``--tasks`` tasks on the synthetic Europe field of ``benchmarks/climate_tasks.py``
(``--size-gb`` GB of float32, written once to ``--store-dir`` and reused), with that script's
regions and years, in a fresh process. The field is far larger than ``max_in_memory_bytes``,
so every split stays lazy: the normalisation is one streaming pass over the training split,
valid patches come from a coarse map of observed cells, and each batch reads one block of
chunks. Prints the seconds to build the experiment and train, and the training process's peak
RSS (the issue's target: under 3 GB for a 30 GB field).

    python benchmarks/climate_large_training.py --store-dir /tmp/aenp-bench [--size-gb 30]
        [--tasks 4096] [--run-dir /tmp/aenp-bench/train]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from climate_tasks import options, stores

QUICK_CONVCNP = ["model.hparams.channels=16", "model.hparams.num_layers=3"]


def overrides(store: Path, tasks: int, run_dir: Path) -> list[str]:
    """The ``aenp train`` overrides of one epoch on ``store``."""
    experiment = options("synthetic", store)
    data = [f"experiment.options.{name}={_hydra(value)}" for name, value in experiment.items()]
    return [
        "experiment=climate",
        "model=convcnp_approx",
        *QUICK_CONVCNP,
        *data,
        f"data.num_train_tasks={tasks}",
        "data.num_val_tasks=256",
        "trainer.max_epochs=1",
        "optimizer.lr=2e-3",
        f"run_dir={run_dir}",
    ]


def _hydra(value) -> str:
    """A value as a Hydra override writes it: quoted strings, lists in brackets."""
    if isinstance(value, tuple | list):
        return f"[{','.join(map(_hydra, value))}]"
    return json.dumps(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store-dir", type=Path, required=True, help="where the stores live")
    parser.add_argument("--size-gb", type=float, default=30.0, help="the synthetic field's size")
    parser.add_argument("--tasks", type=int, default=4096, help="training tasks in the epoch")
    parser.add_argument("--run-dir", type=Path, help="default: <store-dir>/train (replaced)")
    args = parser.parse_args()
    args.store_dir.mkdir(parents=True, exist_ok=True)
    store = stores(args.store_dir, args.size_gb)["synthetic"]
    run_dir = args.run_dir or args.store_dir / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "aenp.train", *overrides(store, args.tasks, run_dir)]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\nOne epoch of {args.tasks} tasks on a {args.size_gb:g} GB field ({store}): "
        f"{seconds:.0f} s in all (building the experiment included), peak RSS {peak_mb:,.0f} MB"
    )


if __name__ == "__main__":
    main()
