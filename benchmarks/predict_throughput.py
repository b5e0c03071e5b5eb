"""Throughput and peak memory of `aenp.predict` on a large target grid, per model, on CPU.

A synthetic temperature field on a `size × size` grid (default 1000 × 1000, 0.05° cells over
50° × 50°), with 10% of its cells observed as context, predicted at every cell by each model
(untrained weights; the cost does not depend on them), each in a fresh process with two
threads. Prints a Markdown table: target points per second and peak RSS.

    python benchmarks/predict_throughput.py [--size 1000] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from harness import run_interleaved

QUICK_PT = {"embed_dim": 32, "num_heads": 4, "num_layers": 2, "ff_dim": 32, "num_pseudo_tokens": 16}
DOMAIN = {"domain": [[-1.0, 1.0], [-1.0, 1.0]]}
CONFIGURATIONS = {
    "pttnp@quick": ("pttnp", QUICK_PT),
    "tepttnp_approx@quick": ("tepttnp_approx", {**QUICK_PT, **DOMAIN}),
    "convcnp_approx@quick": ("convcnp_approx", {"channels": 16, "num_layers": 3, **DOMAIN}),
    "relaxed_convcnp@quick": ("relaxed_convcnp", {"channels": 16, "num_layers": 4, **DOMAIN}),
    "equivcnp_approx@quick": (
        "equivcnp_approx",
        {"channels": 4, "num_layers": 3, "kernel_size": 3, **DOMAIN},
    ),
}
CONTEXT_FRACTION = 0.1


def measure(name: str, size: int) -> dict:
    """Runs in a child process: one model's prediction over the whole grid."""
    import xarray as xr

    from aenp import build_model, predict
    from aenp.data.climate import Normalisation
    from aenp.train.cpu import configure_cpu

    torch.set_num_threads(2)
    configure_cpu()
    lat = np.linspace(10.0, 60.0, size)
    lon = np.linspace(-130.0, -80.0, size)
    rng = np.random.default_rng(0)
    values = 280 + 10 * np.sin(np.radians(lat))[:, None] + rng.standard_normal((size, size))
    values[rng.random((size, size)) > CONTEXT_FRACTION] = np.nan
    context = xr.DataArray(values, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    norm = Normalisation(285.0, 10.0, coord_scale=25.0, lat_origin=35.0, lon_origin=-105.0)
    key, hparams = CONFIGURATIONS[name]
    torch.manual_seed(0)
    model = build_model(key, 2, 1, **hparams)
    start = time.perf_counter()
    pred = predict(model, context, context, norm, progress=False)
    seconds = time.perf_counter() - start
    assert bool(np.isfinite(pred["mean"].values).all())
    return {
        "points_per_second": size * size / seconds,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--size", type=int, default=1000, help="cells per side of the grid")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.size)))
        return
    runs = run_interleaved(__file__, args.models, args.repeats, ["--size", str(args.size)])
    print(
        f"\naenp.predict on a {args.size}×{args.size} target grid, "
        f"{CONTEXT_FRACTION:.0%} of the cells as context, CPU, 2 threads\n"
    )
    print("| model | seconds | target points / s | peak RSS MB |")
    print("|---|---|---|---|")
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rate = statistics.median(r["points_per_second"] for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        print(f"| {name} | {seconds:.1f} | {rate:,.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
