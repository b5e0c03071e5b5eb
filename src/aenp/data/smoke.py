"""2-D smoke plumes simulated with PhiFlow, stored in a chunked zarr store with a manifest.

Incompressible smoke in the closed unit square: every simulation has its own inflow (position
and radius) and buoyancy (direction, uniform over angles, and magnitude), while one fixed
obstacle and the closed walls are the same in all of them — structure that breaks translation
and rotation symmetry, which fixed inputs can learn. The smoke density after a fixed number of
steps is one field.

The store (``<out>/smoke.zarr``) holds, per split, ``density [n, resolution, resolution]``
(axis 1 is x, axis 2 is y; cell centres at ``(i + 0.5) / resolution``), ``params [n, 5]``
(inflow x, inflow y, inflow radius, buoyancy angle, buoyancy magnitude) and ``done [n]``.
``<out>/manifest.json`` records the simulator's version, the settings, the seed, the counts
and the status. Generation is resumable: simulations already marked done are skipped.
Simulation ``i`` of a split has its parameters from ``(seed, split, i)``; the same options
(batch size included) give the same store, also when generation was interrupted and resumed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aenp.errors import AenpError, InputError

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
FORMAT_VERSION = 1
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


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)


def _batches(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


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
    in the :class:`SimulationError` raised at the end — never written as zeros.

    Args:
        out: Output directory.
        num_train: Training simulations.
        num_test: Test simulations.
        settings: Resolution, steps, time step and seed.
        batch_size: Simulations run together by PhiFlow.
        progress: Show a progress bar.

    Returns:
        The output directory.
    """
    import zarr

    out = Path(out)
    counts = {"train": num_train, "test": num_test}
    if min(counts.values()) < 1:
        raise InputError(f"num_train and num_test must be positive, got {counts}")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file():
        previous = _read_manifest(manifest_path)
        expected = _manifest(settings, counts, batch_size, previous["status"])
        for key in ("settings", "counts", "batch_size", "format_version"):
            if previous.get(key) != expected[key]:
                raise SmokeStoreError(
                    f"{out} holds a smoke store made with {key} = {previous.get(key)}, not "
                    f"{expected[key]}; use the same options to resume, or another --out"
                )
    _write_json(manifest_path, _manifest(settings, counts, batch_size, "incomplete"))
    group = zarr.open_group(out / STORE_NAME, mode="a")
    res = settings.resolution
    failures = []
    total = sum(counts.values())
    with tqdm(total=total, desc="smoke plumes", unit="plume", disable=not progress) as bar:
        for split, n in counts.items():
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
            todo = np.flatnonzero(~done[:]).tolist()
            bar.update(n - len(todo))
            for chunk in _batches(todo, batch_size):
                seeds = [simulation_seed(settings, split, i) for i in chunk]
                parameters = np.stack([simulation_parameters(s) for s in seeds])
                try:
                    fields, finished = simulate(parameters, settings), chunk
                except SimulationError:
                    fields, finished = [], []
                    for i, seed, p in zip(chunk, seeds, parameters, strict=True):
                        try:
                            fields.append(simulate(p[None], settings)[0])
                            finished.append(i)
                        except SimulationError as error:
                            failures.append(
                                {"split": split, "index": i, "seed": seed, "error": str(error)}
                            )
                    fields = np.stack(fields) if fields else np.empty((0, res, res), np.float32)
                if finished:
                    rows = [chunk.index(i) for i in finished]
                    density[finished] = fields
                    params[finished] = parameters[rows]
                    done[finished] = True  # last, so a simulation counts only once written
                bar.update(len(chunk))
    status = "failed" if failures else "complete"
    _write_json(manifest_path, _manifest(settings, counts, batch_size, status, failures=failures))
    if failures:
        listed = ", ".join(f"{f['split']} #{f['index']} (seed {f['seed']})" for f in failures[:10])
        raise SimulationError(
            f"{len(failures)} simulation(s) failed and were not written: {listed}; see "
            f"{manifest_path}"
        )
    return out


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SmokeStoreError(f"{path} is not a readable smoke manifest: {error}") from error
    missing = [k for k in ("format_version", "settings", "counts", "status") if k not in manifest]
    if missing:
        raise SmokeStoreError(f"{path} lacks field(s) {missing}")
    return manifest


class SmokeStore:
    """Read access to a complete smoke store; arrays are read lazily, chunk by chunk.

    Raises:
        SmokeStoreError: If the directory, manifest or arrays are missing, the store is partial
            (it says how to resume) or an array has the wrong shape.
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
        counts = self.manifest["counts"]
        if self.manifest["status"] != "complete":
            raise SmokeStoreError(
                f"smoke store {self.path} is {self.manifest['status']}; run `aenp data smoke "
                f"--num-train {counts['train']} --num-test {counts['test']} --resolution "
                f"{self.settings.resolution} --out {self.path}` again to finish it"
            )
        try:
            group = zarr.open_group(self.path / STORE_NAME, mode="r")
            res = self.settings.resolution
            self._density = {}
            for split, n in counts.items():
                array = group[f"{split}/density"]
                if array.shape != (n, res, res):
                    raise SmokeStoreError(
                        f"{self.path}: {split}/density has shape {array.shape}, expected "
                        f"{(n, res, res)}"
                    )
                if not bool(np.all(group[f"{split}/done"][:])):
                    raise SmokeStoreError(f"{self.path}: {split} has unfinished simulations")
                self._density[split] = array
        except (KeyError, FileNotFoundError) as error:
            raise SmokeStoreError(
                f"{self.path} is missing part of its zarr store: {error}"
            ) from error

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
