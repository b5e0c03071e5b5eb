"""``aenp reproduce``: train every model of an experiment, evaluate, tabulate and plot."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from aenp.data.experiments import Experiment
from aenp.errors import InputError, RunError
from aenp.evaluate.plots import experiment_figures
from aenp.evaluate.report import ablation_markdown, results_markdown
from aenp.evaluate.run import evaluate_run
from aenp.evaluate.tables import ablation_table, across_seeds, comparisons_table, results_table
from aenp.evaluate.terrain import departure_by_terrain
from aenp.files import atomic_write, write_json
from aenp.models.registry import strict_counterpart

# TRAIN_LOG moved to aenp.run_directory; it stays importable from here.
from aenp.run_directory import TRAIN_LOG as TRAIN_LOG
from aenp.run_directory import RunDirectory
from aenp.train.run import CONFIG_DIR, check_settings, compose_config, config_changes, train
from aenp.version import __version__

SCALES = ("quick", "paper")
PLAN_DIR = CONFIG_DIR / "reproduce"
TRAIN_COMMAND = (sys.executable, "-m", "aenp.train")
"""``aenp train`` in a process of its own."""
EVALUATE_COMMAND = (sys.executable, "-m", "aenp.cli", "evaluate")
"""``aenp evaluate`` in a process of its own."""
QUIET = ("trainer.enable_progress_bar=false",)
"""What a run in a process of its own adds: a progress bar would write a line per step."""
POLL_SECONDS = 0.2
"""How often :func:`run_processes` looks for finished processes."""
SEED_OVERRIDE = re.compile(r"(\+\+)?seed=")
"""A Hydra override of the seed, which :func:`plan_runs` replaces by each run's own."""

log = logging.getLogger(__name__)


def load_plan(experiment: str, scale: str) -> dict[str, Any]:
    """The models and overrides ``reproduce`` uses for an experiment at a scale.

    Also the models whose runs start first, in that order (``start_order``; the others start
    after them, in the plan's order): on a few cores, starting the longest runs first lets the
    ``--parallel`` processes finish together. The tables keep the plan's order.
    """
    path = PLAN_DIR / f"{experiment}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))
        raise InputError(f"no reproduce plan for experiment {experiment!r}; available: {available}")
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    plan = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    start_order = plan["scales"][scale].get("start_order") or []
    unknown = [key for key in start_order if key not in plan["models"]]
    if unknown or len(set(start_order)) < len(start_order):
        raise InputError(
            f"{path}: start_order must name models of the plan ({', '.join(plan['models'])}) "
            f"at most once each, got {', '.join(start_order)}"
        )
    return {
        "models": plan["models"],
        "overrides": plan["scales"][scale]["overrides"],
        "model_overrides": plan["scales"][scale].get("models") or {},
        "start_order": start_order,
    }


def train_overrides(
    experiment: str, key: str, plan: dict[str, Any], run_dir: Path, extra: list[str]
) -> list[str]:
    """The ``aenp train`` overrides that train one model of the plan into ``run_dir``."""
    return [
        f"experiment={experiment}",
        f"model={key}",
        f"run_dir={run_dir}",
        *plan["overrides"],
        *plan["model_overrides"].get(key, []),
        *extra,
    ]


def _write_text(path: Path, text: str) -> None:
    """Writes a results file whole or not at all."""
    with atomic_write(path) as partial:
        partial.write_text(text)


def _cpu_name() -> str:
    """The CPU's model name where the OS reports it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """The machine a result was measured on."""
    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "aenp": __version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@dataclass(frozen=True)
class Run:
    """One training run: ``aenp train`` with ``args`` (which set ``run_dir``)."""

    name: str
    run_dir: Path
    args: tuple[str, ...]

    @property
    def command(self) -> str:
        """The ``aenp train`` command line of the run."""
        return "aenp train " + " ".join(self.args)

    @property
    def directory(self) -> RunDirectory:
        """The run directory and its files."""
        return RunDirectory(self.run_dir)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def plan_runs(
    experiment: str,
    plan: dict[str, Any],
    keys: Sequence[str],
    out: Path,
    overrides: Sequence[str],
    num_seeds: int,
) -> dict[tuple[str, int], Run]:
    """The runs of a plan: every model with ``num_seeds`` seeds, each in ``out/<key>/seed<k>``.

    The seeds are ``s, s + 1, …`` where ``s`` is the config's seed (0, or a ``seed=``
    override). Returns ``{(key, seed): run}``, model by model.
    """
    first = compose_config(train_overrides(experiment, keys[0], plan, out, list(overrides)))
    check_settings(first)
    overrides = [o for o in overrides if not SEED_OVERRIDE.match(o)]
    runs = {}
    for key in keys:
        for seed in range(first.seed, first.seed + num_seeds):
            run_dir = out / key / f"seed{seed}"
            args = train_overrides(experiment, key, plan, run_dir, [*overrides, f"seed={seed}"])
            runs[key, seed] = Run(f"{key} seed {seed}", run_dir, tuple(args))
    return runs


def move_single_run(model_dir: Path) -> None:
    """Moves a run that ``model_dir`` itself holds to ``model_dir/seed<its seed>``.

    Before seeds had run directories of their own, ``reproduce`` trained each model in
    ``out/<key>``; moving such a run where ``reproduce`` now looks for it keeps it from being
    trained again. The move is two renames through ``.<key>.moving`` beside it, and one
    interrupted between them is finished by the next call.
    """
    moving = model_dir.with_name(f".{model_dir.name}.moving")
    if RunDirectory(model_dir).config_path.is_file():
        model_dir.rename(moving)
    if moving.is_dir():
        target = model_dir / f"seed{RunDirectory(moving).recorded_config()['seed']}"
        model_dir.mkdir(exist_ok=True)
        moving.rename(target)
        log.info("Moved the run in %s to %s (a directory per seed)", model_dir, target)


def _is_trained(cfg) -> bool:
    """Whether ``cfg.run_dir`` holds a finished run of this config (which ``train`` skips)."""
    run = RunDirectory(cfg.run_dir)
    return run.is_trained() and not config_changes(
        run.training_record()["config"], OmegaConf.to_container(cfg, resolve=True)
    )


def train_and_evaluate(runs: Sequence[Run], parallel: int = 1) -> dict[Run, dict[str, Any]]:
    """Trains every run that is not trained yet and evaluates every run; returns the results.

    Runs start in the order given. With ``parallel`` 1 they train one after another in this
    process, then are evaluated in it. Otherwise each training is a process of its own
    (``python -m aenp.train``, without a progress bar, writing ``<run_dir>/train.log``) and so
    is each evaluation (``aenp evaluate``, writing ``<run_dir>/evaluate.log``), up to
    ``parallel`` at a time, each with this process's torch threads divided by ``parallel``. A
    run's evaluation starts once it is trained and no training is waiting: evaluations fill
    the cores that the last trainings leave idle.

    A run's results depend on its config and, in the last bits of floating point, on its
    number of CPU threads (on a GPU also on the kernels' own nondeterminism): on a CPU they
    are bit for bit the serial ones when the thread counts match, e.g. one thread per run.

    Returns:
        ``{run: results}`` in the order of ``runs``, as :func:`evaluate_run` returns them.

    Raises:
        InputError: If ``parallel`` is not a positive integer, or a run's settings are
            invalid (every run is checked before any starts).
        RunError: If runs in processes of their own fail; raised once the running ones have
            finished, naming each failed run and its log. Finished runs are kept.
    """
    _check_count("parallel", parallel)
    configs = [compose_config(run.args) for run in runs]
    for cfg in configs:
        check_settings(cfg)
    labels = [f"[{i}/{len(runs)}] {run.name}" for i, run in enumerate(runs, 1)]
    waiting = []
    for label, run, cfg in zip(labels, runs, configs, strict=True):
        if _is_trained(cfg):
            log.info("%s: already trained in %s", label, run.run_dir)
        else:
            waiting.append((label, run, cfg))
    if parallel > 1:
        trained_by = {run: label for label, run, _ in waiting}
        trainings = [
            Job(label, [*TRAIN_COMMAND, *run.args, *QUIET], run.directory.train_log_path)
            for label, run, _ in waiting
        ]
        evaluations = [
            Job(
                f"{label} evaluation",
                [*EVALUATE_COMMAND, str(run.run_dir)],
                run.directory.evaluate_log_path,
                after=trained_by.get(run),
            )
            for label, run in zip(labels, runs, strict=True)
        ]
        run_processes([*trainings, *evaluations], parallel, torch.get_num_threads() // parallel)
        return {run: run.directory.results() for run in runs}
    for label, run, cfg in waiting:
        log.info("%s: %s", label, run.command)
        start = time.perf_counter()
        try:
            train(cfg)
        except Exception:
            log.error("%s failed (run directory %s)", label, run.run_dir)
            raise
        log.info("%s: finished in %.1f s", label, time.perf_counter() - start)
    results = {}
    for label, run in zip(labels, runs, strict=True):
        log.info("%s: evaluating", label)
        results[run] = evaluate_run(run.run_dir)
    return results


@dataclass(frozen=True)
class Job:
    """A command run by :func:`run_processes`, named ``label``, writing to ``log``.

    ``after`` is the label of a job that must finish before this one starts (None: none).
    """

    label: str
    argv: list[str]
    log: Path
    after: str | None = None


def run_processes(jobs: Sequence[Job], parallel: int, threads: int) -> None:
    """Runs the jobs' commands, ``parallel`` at a time, each with ``threads`` torch threads.

    Jobs start in the order given, a job waiting for the one it comes ``after`` letting the
    next ones start first. Each job's output (stdout and stderr) is appended to its log. Once
    a job fails, no further job starts and the running ones finish. Interrupted (Ctrl-C), the
    running ones are stopped.

    Raises:
        ValueError: If a job comes after a job that is not before it in ``jobs``.
        RunError: If jobs failed, naming each with its exit status, last line and log.
    """
    earlier = set()
    for job in jobs:
        if job.after is not None and job.after not in earlier:
            raise ValueError(f"{job.label} comes after {job.after!r}, which is not a job before it")
        earlier.add(job.label)
    threads = max(1, threads)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    waiting = list(jobs)
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    finished, failed = set(), []
    try:
        while running or (waiting and not failed):
            ready = [job for job in waiting if job.after is None or job.after in finished]
            while ready and not failed and len(running) < parallel:
                job = ready.pop(0)
                waiting.remove(job)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with job.log.open("a") as output:
                    process = subprocess.Popen(
                        job.argv, stdout=output, stderr=subprocess.STDOUT, env=environment
                    )
                running[process] = (job, time.perf_counter())
                log.info(
                    "%s: started (torch threads: %d), output in %s", job.label, threads, job.log
                )
            time.sleep(POLL_SECONDS)
            for process in [p for p in running if p.poll() is not None]:
                job, start = running.pop(process)
                seconds = time.perf_counter() - start
                if process.returncode == 0:
                    finished.add(job.label)
                    log.info("%s: finished in %.1f s", job.label, seconds)
                    continue
                lines = job.log.read_text(errors="replace").strip().splitlines()
                failed.append(
                    f"{job.label} (exit status {process.returncode}: "
                    f"{lines[-1] if lines else 'no output'}; log: {job.log})"
                )
                log.error("%s: failed after %.1f s; log: %s", job.label, seconds, job.log)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait()
    if failed:
        not_started = f"; {len(waiting)} not started" if waiting else ""
        raise RunError(
            f"{len(failed)} of {len(jobs)} processes failed{not_started}: {'; '.join(failed)}. "
            "Finished runs are kept: the same command again trains only what is missing"
        )


def reproduce(
    experiment: str,
    scale: str,
    out: Path,
    models: list[str] | None = None,
    overrides: list[str] | None = None,
    seeds: int = 1,
    parallel: int = 1,
) -> Path:
    """Trains and evaluates every model of the experiment's plan; writes results to ``out``.

    ``models`` restricts the plan to some of its models; ``overrides`` (Hydra syntax, e.g.
    ``trainer.max_epochs=1``) apply to every model after the plan's own. Every model is trained
    with ``seeds`` seeds (from the config's seed, 0 unless overridden with ``seed=``), each in
    its own run directory ``out/<key>/seed<k>`` that ``aenp evaluate`` can read again, up to
    ``parallel`` runs at a time (see :func:`train_and_evaluate`), the longest first where the
    plan names them (``start_order``). Writes ``results.json`` (every run's
    results, and with several seeds the across-seed figures), ``results.md`` and figures (of
    the first seed's models) to ``out``.

    Runs already trained there are only evaluated, and unfinished ones resume; one trained
    there with other settings is refused (see :func:`aenp.train.run.train`). A run in
    ``out/<key>`` itself, where ``reproduce`` trained each model before seeds had directories
    of their own, is first moved to ``out/<key>/seed<k>`` (:func:`move_single_run`).
    """
    _check_count("seeds", seeds)
    _check_count("parallel", parallel)
    plan = load_plan(experiment, scale)
    keys = plan["models"] if models is None else list(models)
    if not keys:
        raise InputError(
            f"models must name at least one model, got none (the {experiment} plan names "
            f"{', '.join(plan['models']) or 'none'})"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for key in keys:
        move_single_run(out / key)
    runs = plan_runs(experiment, plan, keys, out, overrides or [], seeds)
    rank = {key: i for i, key in enumerate(plan["start_order"])}
    start_order = sorted(runs, key=lambda key_seed: rank.get(key_seed[0], len(rank)))
    evaluated = train_and_evaluate([runs[key_seed] for key_seed in start_order], parallel)
    exp = next(iter(runs.values())).directory.experiment()
    results = []
    for (_, seed), run in runs.items():
        result = {"seed": seed, "run_dir": str(run.run_dir), **evaluated[run]}
        result["train_seconds"] = run.directory.training_record()["seconds"]
        results.append(result)
    seed_list = sorted({seed for _, seed in runs})
    summary = {
        "experiment": experiment,
        "scale": scale,
        "seeds": seed_list,
        "parallel": parallel,
        "wall_seconds": time.perf_counter() - start,
        "hardware": hardware(),
        "commands": {f"{key}/seed{seed}": run.command for (key, seed), run in runs.items()},
        "results": results,
    }
    if seeds > 1:
        summary["across_seeds"] = {
            key: across_seeds([r for r in results if r["model"] == key]) for key in keys
        }
    unit = _value_unit(exp)
    if unit is not None:
        summary["value_unit"] = unit
    first_runs = {key: runs[key, seed_list[0]] for key in keys}
    trained = {key: run.directory.load_model() for key, run in first_runs.items()}
    terrain = _terrain_rows(exp, trained)
    if terrain:
        summary["departure_by_terrain"] = terrain
    write_json(out / "results.json", summary)
    run_dirs = {key: run.run_dir for key, run in first_runs.items()}
    figures = experiment_figures(exp, trained, run_dirs, out)
    per_task = {
        key: _stack([runs[key, seed].directory.per_task_loglik() for seed in seed_list])
        for key in keys
    }
    id_split = exp.evaluation_splits[0]
    ood_split = exp.ood_splits[0] if exp.ood_splits else None
    tables = [
        results_table(results, id_split, ood_split),
        comparisons_table(per_task, id_split, ood_split),
    ]
    _write_text(out / "results.md", results_markdown(summary, tables, figures, out))
    return out


def _stack(per_seed: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-task arrays of several seeds as ``{split: [num_seeds, num_tasks]}``."""
    return {split: np.stack([arrays[split] for arrays in per_seed]) for split in per_seed[0]}


def _value_unit(experiment: Experiment) -> dict[str, Any] | None:
    """Size and units of one standardised unit of the values (None: models see them as they are)."""
    if experiment.normalisation is None:
        return None
    return {"size": experiment.normalisation.value_std, "units": experiment.units}


def _terrain_rows(experiment: Experiment, models: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`departure_by_terrain` of every approximate model of an experiment on the Earth."""
    if experiment.regions is None:
        return {}
    approximate = {k: m for k, m in models.items() if strict_counterpart(k) is not None}
    try:
        return {k: departure_by_terrain(m, experiment) for k, m in approximate.items()}
    except ImportError as error:
        log.warning("departure by terrain skipped: %s", error)
        return {}


ABLATIONS = ("num_fixed_inputs", "p_drop")


def ablate(
    experiment: str,
    scale: str,
    model: str,
    parameter: str,
    values: list[float],
    out: Path,
    overrides: list[str] | None = None,
    parallel: int = 1,
) -> Path:
    """Trains an approximate model once per value of ``parameter``; tabulates the effect.

    ``num_fixed_inputs = 0`` trains the strictly equivariant counterpart instead. Every run
    uses the plan's settings for the scale (the model's own overrides included), so the rows
    differ only in the ablated value; up to ``parallel`` runs train at a time (see
    :func:`train_and_evaluate`). Writes ``ablation.json`` and ``ablation.md`` to ``out``.
    """
    if parameter not in ABLATIONS:
        raise InputError(f"unknown ablation {parameter!r}; choose one of {', '.join(ABLATIONS)}")
    strict = strict_counterpart(model)
    if strict is None:
        raise InputError(f"{model!r} has no fixed inputs to ablate; use an approximate model")
    _check_count("parallel", parallel)
    if not values:
        raise InputError(f"values must hold at least one value of {parameter}, got none")
    plan = load_plan(experiment, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for value in values:
        value = int(value) if parameter == "num_fixed_inputs" else float(value)
        key = strict if parameter == "num_fixed_inputs" and value == 0 else model
        extra = [] if key == strict else [f"model.hparams.{parameter}={value}"]
        run_dir = out / f"{parameter}-{value}"
        plan_for_key = {**plan, "model_overrides": {key: plan["model_overrides"].get(model, [])}}
        train_args = train_overrides(
            experiment, key, plan_for_key, run_dir, [*(overrides or []), *extra]
        )
        runs[value, key] = Run(f"{parameter}={value}", run_dir, tuple(train_args))
    evaluated = train_and_evaluate(list(runs.values()), parallel)
    exp = next(iter(runs.values())).directory.experiment()
    rows, per_task = [], {}
    for (value, key), run in runs.items():
        result = evaluated[run]
        rows.append({"value": value, "model": key, "splits": result["splits"]})
        per_task[value] = run.directory.per_task_loglik()
    summary = {
        "experiment": experiment,
        "scale": scale,
        "model": model,
        "parameter": parameter,
        "hardware": hardware(),
        "commands": [run.command for run in runs.values()],
        "rows": rows,
    }
    write_json(out / "ablation.json", summary)
    ood = exp.ood_splits[0] if exp.ood_splits else None
    table = ablation_table(parameter, rows, per_task, exp.evaluation_splits[0], ood)
    _write_text(out / "ablation.md", ablation_markdown(summary, table))
    return out
