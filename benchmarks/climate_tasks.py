"""Climate task throughput: sampled in memory against read lazily from a chunked zarr store.

Two fields, each written once to a zarr store in ``--store-dir`` and reused:

* ``hadcm3``: the offline default data (HadCM3, 240 years of 37 × 49 cells, 1.7 MB), in
  chunks of 24 years × 37 × 49, with the experiment's default regions and years;
* ``synthetic``: :func:`aenp.data.climate.synthetic_field` of ``--size-gb`` GB over Europe at
  0.25° (148 × 280 cells, chunks of 24 steps × 128 × 128) from 1979, hourly, or every few
  hours so that it spans at least four years; trained on its west (25°W-20°E) in all but its
  last two years.

Each path runs in a fresh process, torch on one thread (a batch's tensors are small, and
threads fighting over a busy machine's cores swamp the reads); dask reads with its own pool.
``memory`` loads every split (``max_in_memory_bytes=None``), ``lazy`` keeps them lazy
(``max_in_memory_bytes=0``). The synthetic field is sampled in memory only up to
``--memory-limit-gb``. Prints a Markdown
table: seconds to build the experiment (opening, normalisation), training tasks per second
(after a warm-up), the ratio of the in-memory rate to the lazy one, and peak RSS.

``--scheduler`` chooses how dask reads (docs/scaling.md): ``threads`` (its thread pool, the
default), ``synchronous`` (one thread, as a sampling worker reads) or ``distributed`` (a local
``dask.distributed`` cluster of two one-thread worker processes, started before the clock).

    python benchmarks/climate_tasks.py --store-dir /tmp/aenp-bench [--size-gb 1] [--dims 3]
        [--fields hadcm3 synthetic] [--batches 200] [--repeats 1] [--scheduler threads]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
import time
import warnings
from pathlib import Path

import torch

from harness import run_interleaved

EUROPE = {"south": 35.0, "north": 72.0, "west": -25.0, "east": 45.0}
EUROPE_CELLS = (148, 280)
"""Cells of Europe at 0.25°: (72 − 35) / 0.25 by (45 + 25) / 0.25."""
SYNTHETIC_CHUNKS = (24, 128, 128)
HADCM3_CHUNKS = (24, 37, 49)
MIN_YEARS = 4
HOURS_PER_YEAR = 8766
WARMUP_BATCHES = 5
FIELDS = ("hadcm3", "synthetic")
SCHEDULERS = ("threads", "synchronous", "distributed")
CLUSTER_WORKERS = 2


def synthetic_sizes(size_gb: float) -> tuple[int, str]:
    """Time steps and step (hours) of a synthetic field of ``size_gb`` GB of float32."""
    num_time = max(1, round(size_gb * 1e9 / (4 * math.prod(EUROPE_CELLS))))
    hours = max(1, math.ceil(MIN_YEARS * HOURS_PER_YEAR / num_time))
    return num_time, f"{hours}h"


def stores(store_dir: Path, size_gb: float) -> dict[str, Path]:
    """The two zarr stores, written if absent."""
    import xarray as xr

    from aenp.data.climate import default_data_path, open_field, write_synthetic_field
    from aenp.files import atomic_write

    paths = {
        "hadcm3": store_dir / "hadcm3.zarr",
        "synthetic": store_dir / f"europe_{size_gb:g}gb.zarr",
    }
    if not paths["hadcm3"].exists():
        field = open_field(default_data_path()).load().drop_encoding()
        field = field.chunk(dict(zip(field.dims, HADCM3_CHUNKS, strict=True)))
        with atomic_write(paths["hadcm3"]) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            xr.Dataset({field.name: field}).to_zarr(tmp, mode="w-")
    if not paths["synthetic"].exists():
        num_time, freq = synthetic_sizes(size_gb)
        write_synthetic_field(
            paths["synthetic"],
            num_time,
            *EUROPE_CELLS,
            start="1979-01-01",
            freq=freq,
            chunks=SYNTHETIC_CHUNKS,
            **EUROPE,
        )
    return paths


def options(field: str, path: Path) -> dict:
    """The experiment's options on a field: the default splits, or the synthetic field's."""
    if field == "hadcm3":
        return {"data": str(path)}
    from aenp.data.climate import open_field

    years = open_field(path)["time"].dt.year.values
    first, last = int(years[0]), int(years[-1])
    return {
        "data": str(path),
        "train_region": "35,72,-25,20",
        "ood_region": "35,72,20,45",
        "train_years": (first, last - 2),
        "val_years": (last - 1, last - 1),
        "test_years": (last, last),
    }


@contextlib.contextmanager
def reading_with(scheduler: str):
    """Makes ``scheduler`` dask's current one."""
    import dask

    if scheduler != "distributed":
        with dask.config.set(scheduler=scheduler):
            yield
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=CLUSTER_WORKERS, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        yield


def measure(name: str, paths: dict[str, Path], dims: int, batches: int, batch_size: int) -> dict:
    """Runs in a child process: builds one experiment and draws training batches."""
    from aenp.data.climate import Climate

    torch.set_num_threads(1)
    field, path = name.split("/")
    limit = None if path == "memory" else 0
    start = time.perf_counter()
    experiment = Climate(
        **options(field, paths[field]), dims=dims, max_in_memory_bytes=limit, progress=False
    )
    build_seconds = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    for _ in range(WARMUP_BATCHES):
        experiment.sample_train(batch_size, generator)
    start = time.perf_counter()
    for _ in range(batches):
        experiment.sample_train(batch_size, generator)
    seconds = time.perf_counter() - start
    return {
        "build_seconds": build_seconds,
        "tasks_per_second": batches * batch_size / seconds,
        "train_gb": 4 * experiment.split_field("train").size / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store-dir", type=Path, required=True, help="where the stores live")
    parser.add_argument("--size-gb", type=float, default=1.0, help="the synthetic field's size")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=2.0, help="largest synthetic field in memory"
    )
    parser.add_argument("--fields", nargs="+", default=FIELDS, choices=FIELDS)
    parser.add_argument("--dims", type=int, default=3, choices=(2, 3, 4))
    parser.add_argument("--batches", type=int, default=200, help="timed batches per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per path")
    parser.add_argument("--scheduler", default="threads", choices=SCHEDULERS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.store_dir.mkdir(parents=True, exist_ok=True)
    paths = stores(args.store_dir, args.size_gb)
    if args.child:
        with reading_with(args.scheduler):
            result = measure(args.child, paths, args.dims, args.batches, args.batch_size)
        print(json.dumps(result))
        return
    names = [
        f"{field}/{path}"
        for field in args.fields
        for path in ("memory", "lazy")
        if not (field == "synthetic" and path == "memory" and args.size_gb > args.memory_limit_gb)
    ]
    child_args = [
        *("--store-dir", str(args.store_dir), "--size-gb", str(args.size_gb)),
        *("--dims", str(args.dims), "--batches", str(args.batches)),
        *("--batch-size", str(args.batch_size), "--scheduler", args.scheduler),
    ]
    runs = run_interleaved(__file__, names, args.repeats, child_args)
    print(
        f"\nClimate training tasks ({args.dims}-D, batches of {args.batch_size}), "
        f"{args.batches} batches after {WARMUP_BATCHES} of warm-up, CPU, 1 torch thread, "
        f"dask scheduler {args.scheduler}\n"
    )
    print("| field | path | train split GB | build s | tasks / s | memory ÷ lazy | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        field, path = name.split("/")
        rate = statistics.median(r["tasks_per_second"] for r in results)
        memory = runs.get(f"{field}/memory")
        ratio = (
            f"{statistics.median(r['tasks_per_second'] for r in memory) / rate:.2f}"
            if path == "lazy" and memory
            else ""
        )
        build = statistics.median(r["build_seconds"] for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        gb = results[0]["train_gb"]
        print(f"| {field} | {path} | {gb:.3f} | {build:.1f} | {rate:,.0f} | {ratio} | {rss:.0f} |")


if __name__ == "__main__":
    main()
