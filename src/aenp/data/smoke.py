"""2-D smoke plumes simulated with PhiFlow, stored in a chunked zarr store with a manifest.

Incompressible smoke in the closed unit square: every simulation has its own inflow (position
and radius) and buoyancy (direction, uniform over angles, and magnitude), while one fixed
obstacle and the closed walls are the same in all of them — structure that breaks translation
and rotation symmetry, which fixed inputs can learn. The smoke density after a fixed number of
steps is one field.

The store (``<out>/smoke.zarr``) holds, per split, ``density [n, resolution, resolution]``
(axis 1 is x, axis 2 is y; cell centres at ``(i + 0.5) / resolution``), ``params [n, 5]``
(inflow x, inflow y, inflow radius, buoyancy angle, buoyancy magnitude) and ``done [n]``.
``<out>/manifest.json`` records the simulator's version, the settings, the seed, the counts,
the status and, once the store is complete, a CRC-32 of every chunk file, which
:class:`SmokeStore` checks on opening, so that a missing chunk never reads as zeros (zarr's
fill value) and a damaged one is named. Generation is resumable: simulations already marked
done are skipped. Simulation ``i`` of a split has its parameters from ``(seed, split, i)``; the
same options (batch size included) give the same store, also when generation was interrupted
and resumed.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import shlex
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aenp.errors import AenpError, InputError, InputTypeError
from aenp.files import write_json

OBSTACLE = ((0.45, 0.55), (0.45, 0.6))
"""The fixed obstacle, an axis-aligned box ``((x_low, x_high), (y_low, y_high))``."""
INFLOW_POSITION_RANGE = (0.15, 0.85)
"""Range of each coordinate of the inflow centre."""
INFLOW_RADIUS_RANGE = (0.03, 0.08)
"""Range of the inflow radius."""
BUOYANCY_RANGE = (2.0, 6.0)
"""Range of the buoyancy magnitude (the direction is uniform over angles)."""
INFLOW_CLEARANCE = 0.02
"""Minimum gap between the inflow disc and the obstacle."""
SOLVER_TOLERANCE = 1e-3
"""Relative and absolute tolerance of the pressure solve."""
SOLVER_MAX_ITERATIONS = 2000
"""Iterations the conjugate-gradient pressure solve may take before it counts as failed."""
SPLITS = ("train", "test")
STORE_NAME = "smoke.zarr"
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2
"""Manifest format written: 2 adds ``chunks``, the CRC-32 of every chunk file of the store."""
READABLE_FORMATS = (1, 2)
"""Manifest formats read; a format-1 store has no checksums, so every chunk is decoded instead."""
STATUSES = ("incomplete", "complete", "failed")
ARRAYS = ("density", "params", "done")
"""The arrays of each split."""
MANIFEST_KEYS = ("format_version", "settings", "counts", "batch_size", "status")
"""Keys every manifest has."""
OPTIONAL_MANIFEST_KEYS = ("simulator", "parameters", "obstacle", "failures", "chunks")
"""Keys a manifest may have (``chunks`` only once the store is complete)."""
PARAMETER_NAMES = ("inflow_x", "inflow_y", "inflow_radius", "buoyancy_angle", "buoyancy")


class SimulationError(AenpError, RuntimeError):
    """A simulation failed; the message names each failed simulation's seed."""


class SmokeStoreError(InputError):
    """A smoke store is missing, partial, corrupt or was made with other settings."""


@dataclass(frozen=True)
class SmokeSettings:
    """What determines a smoke dataset.

    Attributes:
        resolution: Cells along each side of the square box.
        num_steps: Simulation steps before the density is recorded.
        time_step: Simulation time per step.
        seed: Base seed; simulation ``i`` of a split uses ``(seed, split, i)``.
    """

    resolution: int = 64
    num_steps: int = 60
    time_step: float = 0.05
    seed: int = 0

    def __post_init__(self):
        # Plain Python numbers, so that the settings compare equal to a manifest's JSON.
        object.__setattr__(self, "resolution", _integer("resolution", self.resolution, 1))
        object.__setattr__(self, "num_steps", _integer("num_steps", self.num_steps, 1))
        object.__setattr__(self, "seed", _integer("seed", self.seed, 0))
        time_step = self.time_step
        if isinstance(time_step, bool) or not isinstance(time_step, numbers.Real):
            raise InputTypeError(f"time_step must be a number, got {time_step!r}")
        if not 0 < time_step < math.inf:
            raise InputError(f"time_step must be positive and finite, got {time_step}")
        object.__setattr__(self, "time_step", float(time_step))


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer of at least {minimum}, got {value}")
    return int(value)


def simulation_seed(settings: SmokeSettings, split: str, index: int) -> int:
    """The integer seed of one simulation (reported when it fails)."""
    entropy = [settings.seed, SPLITS.index(split), index]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def simulation_parameters(seed: int) -> np.ndarray:
    """Inflow and buoyancy of one simulation, ``[5]`` in :data:`PARAMETER_NAMES` order.

    The inflow disc is redrawn until it clears the obstacle.
    """
    rng = np.random.default_rng(seed)
    (x_low, x_high), (y_low, y_high) = OBSTACLE
    while True:
        x, y = rng.uniform(*INFLOW_POSITION_RANGE, size=2)
        radius = rng.uniform(*INFLOW_RADIUS_RANGE)
        gap = radius + INFLOW_CLEARANCE
        if not (x_low - gap < x < x_high + gap and y_low - gap < y < y_high + gap):
            break
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([x, y, radius, angle, rng.uniform(*BUOYANCY_RANGE)])


def simulate(parameters: np.ndarray, settings: SmokeSettings) -> np.ndarray:
    """Runs a batch of simulations with PhiFlow; returns their densities ``[n, res, res]``.

    Raises:
        SimulationError: If the pressure solve fails or the density is not finite.
    """
    from phi import flow

    n, res = len(parameters), settings.resolution
    sims = flow.batch("sim")
    vector = flow.channel(vector="x,y")
    centre = flow.tensor(parameters[:, :2], sims, vector)
    radius = flow.tensor(parameters[:, 2], sims)
    direction = np.stack([np.cos(parameters[:, 3]), np.sin(parameters[:, 3])], axis=-1)
    buoyancy = flow.tensor(direction * parameters[:, 4:5], sims, vector)
    bounds = flow.Box(x=1, y=1)
    (x_low, x_high), (y_low, y_high) = OBSTACLE
    obstacle = flow.Obstacle(flow.Box(x=(x_low, x_high), y=(y_low, y_high)))
    smoke = flow.CenteredGrid(0, flow.ZERO_GRADIENT, bounds, x=res, y=res)
    velocity = flow.StaggeredGrid(0, 0, bounds, x=res, y=res)
    source = flow.resample(flow.Sphere(center=centre, radius=radius), to=smoke, soft=True)
    solve = flow.Solve(
        "CG",
        SOLVER_TOLERANCE,
        SOLVER_TOLERANCE,
        max_iterations=SOLVER_MAX_ITERATIONS,
        rank_deficiency=1,  # a closed box fixes the pressure only up to a constant
    )
    dt = settings.time_step
    try:
        # float64 keeps the conjugate-gradient residual from stagnating above the tolerance.
        with warnings.catch_warnings(), flow.math.precision(64):
            # The closed box's pressure is defined up to a constant (rank deficiency 1,
            # declared above); PhiFlow warns about the deficiency even when it is declared.
            warnings.filterwarnings("ignore", message="Rank deficiency", category=RuntimeWarning)
            for _ in range(settings.num_steps):
                smoke = flow.advect.mac_cormack(smoke, velocity, dt) + source * dt
                force = flow.resample(smoke * buoyancy, to=velocity)
                velocity = flow.advect.semi_lagrangian(velocity, velocity, dt) + force * dt
                velocity, _ = flow.fluid.make_incompressible(velocity, (obstacle,), solve)
    except flow.math.Diverged as error:
        raise SimulationError(f"pressure solve diverged: {error}") from error
    except flow.math.NotConverged as error:
        raise SimulationError(f"pressure solve did not converge: {error}") from error
    density = smoke.values.numpy("sim,x,y").reshape(n, res, res).astype(np.float32)
    if not np.isfinite(density).all():
        raise SimulationError("the density contains NaN or infinite values")
    return density


def _manifest(
    settings: SmokeSettings, counts: dict[str, int], batch_size: int, status: str, **extra
) -> dict:
    import phi

    return {
        "format_version": FORMAT_VERSION,
        "simulator": f"phiflow {phi.__version__}",
        "settings": asdict(settings),
        "counts": counts,
        # Batched pressure solves stop when every simulation of a batch has converged, so
        # results depend on the batching at the solver's tolerance: resume with the same size.
        "batch_size": batch_size,
        "parameters": list(PARAMETER_NAMES),
        "obstacle": [list(OBSTACLE[0]), list(OBSTACLE[1])],
        "status": status,
        **extra,
    }


def _write_manifest(path: Path, manifest: dict) -> None:
    write_json(path, manifest)


def _command(
    out: str | os.PathLike, settings: SmokeSettings, counts: Mapping[str, int], batch_size: int
) -> str:
    """The ``aenp data smoke`` command that makes, or resumes, a store: every option spelt out."""
    options = {
        "--num-train": counts["train"],
        "--num-test": counts["test"],
        "--resolution": settings.resolution,
        "--steps": settings.num_steps,
        "--time-step": settings.time_step,
        "--seed": settings.seed,
        "--batch-size": batch_size,
        "--out": out,
    }
    words = [str(word) for option in options.items() for word in option]
    return shlex.join(["aenp", "data", "smoke", *words])


def _batches(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


def _arrays(group: Any, counts: Mapping[str, int], present: bool = False) -> dict[str, Any]:
    """Every array of the store (or, with ``present``, those it has), keyed by path."""
    names = [f"{split}/{name}" for split in counts for name in ARRAYS]
    return {name: group[name] for name in names if not present or name in group}


def _checked_chunks(
    store: Path,
    arrays: Mapping[str, Any],
    recorded: Mapping[str, str] | None,
    remedy: str,
    missing_ok: bool = False,
) -> dict[str, str]:
    """The CRC-32 of every chunk file of ``arrays``, keyed by the file's path inside ``store``.

    Every chunk must exist (unless ``missing_ok``, for a store not yet finished): zarr would
    read a missing one as its fill value, zeros. Each checksum must equal the ``recorded``
    one; without recorded checksums (a store being resumed or finished, or one of format 1)
    every chunk is decoded instead, so that an unreadable chunk is named now rather than
    halfway through training.

    Raises:
        SmokeStoreError: Naming the array and the chunk file that is missing or corrupt, and
            saying what to do (``remedy``).
    """
    checksums = {}
    for name, array in arrays.items():
        for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
            key = f"{name}/{array.metadata.encode_chunk_key(coords)}"
            file = store / key
            if not file.is_file():
                if missing_ok:
                    continue
                raise SmokeStoreError(
                    f"chunk file {file} of array {name} is missing (zarr would read it as "
                    f"zeros); {remedy}"
                )
            checksums[key] = f"{zlib.crc32(file.read_bytes()):08x}"
            if recorded is not None and recorded.get(key) != checksums[key]:
                raise SmokeStoreError(
                    f"chunk file {file} of array {name} is corrupt: its CRC-32 is "
                    f"{checksums[key]}, the manifest records {recorded.get(key)}; {remedy}"
                )
            if recorded is None:
                try:
                    array.blocks[coords]
                except Exception as error:  # whatever the codec reports, the chunk is unreadable
                    raise SmokeStoreError(
                        f"chunk file {file} of array {name} is corrupt: it cannot be decoded "
                        f"({error}); {remedy}"
                    ) from error
    return checksums


def _remedy(out: Path, settings: SmokeSettings, counts: Mapping[str, int], batch_size: int) -> str:
    """What to do about a damaged store."""
    command = _command(out, settings, counts, batch_size)
    return (
        f"the store is damaged: delete {out / STORE_NAME} and run `{command}` to simulate it again"
    )


def generate(
    out: str | os.PathLike,
    num_train: int,
    num_test: int,
    settings: SmokeSettings = SmokeSettings(),
    batch_size: int = 32,
    progress: bool = True,
) -> Path:
    """Simulates plumes into ``out`` (created if needed), resuming where a run stopped.

    Each batch of simulations is written as soon as it finishes, so an interrupted run loses
    at most one batch. A batch that fails is re-run one simulation at a time, so only the
    failing simulations are left out; they are listed (with their seeds) in the manifest and
    in the :class:`SimulationError` raised at the end — never written as zeros. Once every
    simulation is written, every chunk is decoded and its checksum recorded in the manifest.

    Args:
        out: Output directory.
        num_train: Training simulations.
        num_test: Test simulations.
        settings: Resolution, steps, time step and seed.
        batch_size: Simulations run together by PhiFlow.
        progress: Show a progress bar.

    Returns:
        The output directory.

    Raises:
        InputError: If a count or the batch size is not a positive integer, or ``out`` is a file.
        SmokeStoreError: If ``out`` holds a store made with other options, or a damaged one.
        SimulationError: If simulations failed (the others are written).
    """
    import zarr

    out, counts, batch_size = _checked_options(out, num_train, num_test, settings, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    _check_resumable(out, settings, counts, batch_size)
    remedy = _remedy(out, settings, counts, batch_size)
    group = zarr.open_group(out / STORE_NAME, mode="a")
    # What earlier runs wrote must decode before anything is added to it.
    written = _arrays(group, counts, present=True)
    _checked_chunks(out / STORE_NAME, written, None, remedy, missing_ok=True)
    _write_manifest(manifest_path, _manifest(settings, counts, batch_size, "incomplete"))
    failures = []
    total = sum(counts.values())
    with tqdm(total=total, desc="smoke plumes", unit="plume", disable=not progress) as bar:
        for split, n in counts.items():
            failures += _simulate_split(group, split, n, settings, batch_size, bar)
    if failures:
        _write_manifest(
            manifest_path, _manifest(settings, counts, batch_size, "failed", failures=failures)
        )
        listed = ", ".join(f"{f['split']} #{f['index']} (seed {f['seed']})" for f in failures[:10])
        raise SimulationError(
            f"{len(failures)} simulation(s) failed and were not written: {listed}; see "
            f"{manifest_path}"
        )
    chunks = _checked_chunks(out / STORE_NAME, _arrays(group, counts), None, remedy)
    complete = _manifest(settings, counts, batch_size, "complete", failures=[], chunks=chunks)
    _write_manifest(manifest_path, complete)
    return out


def _checked_options(
    out: str | os.PathLike, num_train: int, num_test: int, settings: Any, batch_size: int
) -> tuple[Path, dict[str, int], int]:
    """``out``, the counts per split and the batch size of :func:`generate`, checked."""
    out = Path(out)
    counts = {
        "train": _integer("num_train", num_train, 1),
        "test": _integer("num_test", num_test, 1),
    }
    batch_size = _integer("batch_size", batch_size, 1)
    if not isinstance(settings, SmokeSettings):
        raise InputTypeError(f"settings must be a SmokeSettings, got {settings!r}")
    if out.exists() and not out.is_dir():
        raise InputError(
            f"out {out} is a file; expected a directory, new or holding a smoke store to resume"
        )
    return out, counts, batch_size


def _check_resumable(
    out: Path, settings: SmokeSettings, counts: dict[str, int], batch_size: int
) -> None:
    """Refuses a store in ``out`` made with other options, saying how to resume it instead."""
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    previous = _read_manifest(manifest_path)
    given = {"settings": asdict(settings), "counts": counts, "batch_size": batch_size}
    for key, value in given.items():
        if previous[key] != value:
            command = _command(
                out,
                SmokeSettings(**previous["settings"]),
                previous["counts"],
                previous["batch_size"],
            )
            raise SmokeStoreError(
                f"{out} holds a smoke store made with {key} = {previous[key]}, not {value}; "
                f"resume it with `{command}`, or choose another --out"
            )


def _simulate_split(
    group: Any, split: str, n: int, settings: SmokeSettings, batch_size: int, bar: tqdm
) -> list[dict[str, Any]]:
    """Simulates the split's plumes not yet done, writing each batch as soon as it finishes.

    Returns:
        A record (split, index, seed, error) of each simulation that failed.
    """
    density, params, done = _split_arrays(group, split, n, settings.resolution, batch_size)
    todo = np.flatnonzero(~done[:]).tolist()
    bar.update(n - len(todo))
    failures = []
    for indices in _batches(todo, batch_size):
        seeds = [simulation_seed(settings, split, i) for i in indices]
        parameters = np.stack([simulation_parameters(s) for s in seeds])
        finished, fields, failed = _simulate_batch(split, indices, seeds, parameters, settings)
        failures += failed
        if finished:
            rows = [indices.index(i) for i in finished]
            density[finished] = fields
            params[finished] = parameters[rows]
            done[finished] = True  # last, so a simulation counts only once written
        bar.update(len(indices))
    return failures


def _split_arrays(
    group: Any, split: str, n: int, resolution: int, batch_size: int
) -> tuple[Any, Any, Any]:
    """The density, params and done arrays of a split, created if missing."""
    res = resolution
    density = group.require_array(
        f"{split}/density",
        shape=(n, res, res),
        chunks=(min(n, batch_size), res, res),
        dtype="float32",
        fill_value=0.0,
    )
    params = group.require_array(
        f"{split}/params", shape=(n, len(PARAMETER_NAMES)), dtype="float64", fill_value=0.0
    )
    done = group.require_array(f"{split}/done", shape=(n,), dtype="bool", fill_value=False)
    return density, params, done


def _simulate_batch(
    split: str,
    indices: list[int],
    seeds: list[int],
    parameters: np.ndarray,
    settings: SmokeSettings,
) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """Runs a batch of simulations, or, if it fails, each of them alone.

    So a failure loses only the simulations that fail alone.

    Returns:
        The indices of the simulations that finished, their densities ``[finished, res, res]``,
        and a record (split, index, seed, error) of each that failed.
    """
    try:
        return indices, simulate(parameters, settings), []
    except SimulationError:
        pass
    finished, fields, failures = [], [], []
    for i, seed, p in zip(indices, seeds, parameters, strict=True):
        try:
            fields.append(simulate(p[None], settings)[0])
            finished.append(i)
        except SimulationError as error:
            failures.append({"split": split, "index": i, "seed": seed, "error": str(error)})
    res = settings.resolution
    fields = np.stack(fields) if fields else np.empty((0, res, res), np.float32)
    return finished, fields, failures


def _check_keys(
    path: Path, where: str, mapping: Any, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Raises unless ``mapping`` is a dict with every required key and no unknown one."""
    if not isinstance(mapping, dict):
        raise SmokeStoreError(f"{path}: {where} must be a JSON object, got {mapping!r}")
    unknown = [key for key in mapping if key not in (*required, *optional)]
    if unknown:
        raise SmokeStoreError(
            f"{path}: {where} has unknown key(s) {unknown}; expected only "
            f"{[*required, *optional]} (was the file edited, or made by another program?)"
        )
    missing = [key for key in required if key not in mapping]
    if missing:
        raise SmokeStoreError(f"{path}: {where} lacks key(s) {missing}")


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, with its keys and values checked.

    Raises:
        SmokeStoreError: Naming the file and the key that is unknown, missing or invalid.
    """
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SmokeStoreError(f"{path} is not a readable smoke manifest: {error}") from error
    _check_keys(path, "the manifest", manifest, MANIFEST_KEYS, OPTIONAL_MANIFEST_KEYS)
    if manifest["format_version"] not in READABLE_FORMATS:
        raise SmokeStoreError(
            f"{path}: format_version {manifest['format_version']!r} is not one this aenp reads "
            f"({list(READABLE_FORMATS)}); was the store made by a newer aenp?"
        )
    _check_keys(path, "settings", manifest["settings"], list(asdict(SmokeSettings())))
    _check_keys(path, "counts", manifest["counts"], SPLITS)
    try:
        SmokeSettings(**manifest["settings"])
        for split, n in manifest["counts"].items():
            _integer(f"counts {split}", n, 1)
        _integer("batch_size", manifest["batch_size"], 1)
    except (InputError, InputTypeError) as error:
        raise SmokeStoreError(f"{path}: {error}") from error
    if manifest["status"] not in STATUSES:
        raise SmokeStoreError(
            f"{path}: status must be one of {list(STATUSES)}, got {manifest['status']!r}"
        )
    if not isinstance(manifest.get("chunks", {}), dict):
        raise SmokeStoreError(f"{path}: chunks must be a JSON object, got {manifest['chunks']!r}")
    return manifest


class SmokeStore:
    """Read access to a complete smoke store; arrays are read lazily, chunk by chunk.

    Opening checks that every chunk file exists and has the checksum the manifest records
    (a store of format 1, which records none, has every chunk decoded instead).

    Raises:
        SmokeStoreError: If the directory, manifest, arrays or a chunk file are missing or
            corrupt (naming the array and the file), the store is partial (it says how to
            resume) or an array has the wrong shape.
    """

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise SmokeStoreError(
                f"no smoke store at {self.path}: {manifest_path} does not exist; create one with "
                f"`aenp data smoke --out {self.path}`"
            )
        self.manifest = _read_manifest(manifest_path)
        self.settings = SmokeSettings(**self.manifest["settings"])
        counts, batch_size = self.manifest["counts"], self.manifest["batch_size"]
        if self.manifest["status"] != "complete":
            command = _command(self.path, self.settings, counts, batch_size)
            raise SmokeStoreError(
                f"smoke store {self.path} is {self.manifest['status']}; run `{command}` again "
                "to finish it"
            )
        remedy = _remedy(self.path, self.settings, counts, batch_size)
        try:
            arrays = _arrays(zarr.open_group(self.path / STORE_NAME, mode="r"), counts)
        except (KeyError, FileNotFoundError) as error:
            raise SmokeStoreError(
                f"{self.path} is missing part of its zarr store: {error}; {remedy}"
            ) from error
        res = self.settings.resolution
        for split, n in counts.items():
            shapes = {"density": (n, res, res), "params": (n, len(PARAMETER_NAMES)), "done": (n,)}
            for name, shape in shapes.items():
                if arrays[f"{split}/{name}"].shape != shape:
                    raise SmokeStoreError(
                        f"{self.path}: {split}/{name} has shape "
                        f"{arrays[f'{split}/{name}'].shape}, expected {shape}; {remedy}"
                    )
        _checked_chunks(self.path / STORE_NAME, arrays, self.manifest.get("chunks"), remedy)
        for split in counts:
            if not bool(np.all(arrays[f"{split}/done"][:])):
                raise SmokeStoreError(f"{self.path}: {split} has unfinished simulations; {remedy}")
        self._density = {split: arrays[f"{split}/density"] for split in counts}

    @property
    def resolution(self) -> int:
        """Cells along each side."""
        return self.settings.resolution

    def __len__(self) -> int:
        return sum(a.shape[0] for a in self._density.values())

    def density(self, split: str):
        """The lazily read density array of a split, ``[n, resolution, resolution]``."""
        if split not in self._density:
            raise InputError(f"unknown smoke split {split!r}; valid: {', '.join(self._density)}")
        return self._density[split]
