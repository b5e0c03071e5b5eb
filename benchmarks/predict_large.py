"""Wall time and peak memory of `aenp predict` to zarr on a large grid, block by block, on CPU.

Writes a synthetic temperature field (`aenp.data.climate.write_synthetic_field`: a smooth
field plus noise, NaN over a third of the cells) of `--times` daily steps on a `--size` ×
`--size` grid (default 100 × 1000 × 1000, 400 MB in float32) to a zarr store, saves an untrained
climate model with a normalisation (the cost does not depend on the weights), then runs

    aenp predict RUN --context field.zarr --targets field.zarr --out prediction.zarr

in a fresh process: every time step of the field is the context of one task, predicted at
every cell. Prints the time to write the field, the prediction's wall time and throughput, and
the prediction process's peak RSS (the target is under 3 GB at the default size).

    python benchmarks/predict_large.py [--size 1000] [--times 100] [--model convcnp_approx@quick]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aenp.prediction import DEFAULT_BLOCK_SIDE, DEFAULT_BLOCK_TIME
from predict_throughput import CONFIGURATIONS

BOX = {"south": 30.0, "north": 70.0, "west": -20.0, "east": 40.0}
"""The field's region: Europe, as the paper's ERA5 experiment."""
PEAK_RSS_TARGET_MB = 3 * 1024
CLI = "import sys; from aenp.cli import main; sys.exit(main(sys.argv[1:]))"


def prepare(folder: Path, size: int, times: int, model: str) -> Path:
    """Writes the field and saves the model with its normalisation; returns the run folder."""
    from aenp import build_model, save
    from aenp.data.climate import Normalisation, write_synthetic_field

    write_synthetic_field(
        folder / "field.zarr", times, size, size, freq="1D", chunks=(8, 256, 256), **BOX
    )
    centre_lat, centre_lon = (BOX["south"] + BOX["north"]) / 2, (BOX["west"] + BOX["east"]) / 2
    half_side = max(BOX["north"] - BOX["south"], BOX["east"] - BOX["west"]) / 2
    normalisation = Normalisation(
        value_mean=280.0,
        value_std=10.0,
        coord_scale=half_side,
        lat_origin=centre_lat,
        lon_origin=centre_lon,
    )
    key, hparams = CONFIGURATIONS[model]
    save(
        build_model(key, 2, 1, **hparams),
        folder / "run" / "model",
        metadata={"normalisation": normalisation.to_dict()},
    )
    return folder / "run"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1000, help="cells per side of the grid")
    parser.add_argument("--times", type=int, default=100, help="time steps of the context")
    conv = [name for name in CONFIGURATIONS if "conv" in name]
    parser.add_argument("--model", default="convcnp_approx@quick", choices=conv)
    parser.add_argument(
        "--block-time", type=int, default=DEFAULT_BLOCK_TIME, help="steps per block"
    )
    parser.add_argument("--block-side", type=int, default=DEFAULT_BLOCK_SIDE, help="cells a side")
    parser.add_argument("--folder", type=Path, help="keep the stores here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.folder or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run = prepare(folder, args.size, args.times, args.model)
        prepare_seconds = time.perf_counter() - start
        field = folder / "field.zarr"
        command = [sys.executable, "-c", CLI, "predict", str(run), "--context", str(field)]
        command += ["--targets", str(field), "--out", str(folder / "prediction.zarr")]
        command += ["--block-time", str(args.block_time), "--block-side", str(args.block_side)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        check_prediction(folder / "prediction.zarr", args.times, args.size)
    cells = args.times * args.size * args.size
    print(
        f"\naenp predict to zarr: {args.model}, {args.times} × {args.size} × {args.size} cells, "
        f"blocks of {args.block_time} × {args.block_side} × {args.block_side}, CPU\n"
    )
    print("| field written (s) | predict (s) | cells / s | peak RSS MB | target MB |")
    print("|---|---|---|---|---|")
    print(
        f"| {prepare_seconds:.1f} | {seconds:.1f} | {cells / seconds:,.0f} | {peak_mb:.0f} | "
        f"{PEAK_RSS_TARGET_MB} |"
    )


def check_prediction(path: Path, times: int, size: int) -> None:
    """Fails unless the store holds a finite prediction at every cell of the last time step."""
    import xarray as xr

    prediction = xr.open_zarr(path)
    assert prediction["mean"].shape == (times, size, size)
    assert bool(np.isfinite(prediction["mean"].isel(time=-1).values).all())


if __name__ == "__main__":
    main()
