"""``aenp reproduce``: train every model of an experiment, evaluate, tabulate and plot."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from aenp import __version__
from aenp.errors import InputError
from aenp.evaluate.plots import experiment_figures
from aenp.evaluate.run import evaluate_run, load_per_task_loglik
from aenp.evaluate.tables import ablation_table, comparisons_table, display_name, results_table
from aenp.evaluate.terrain import departure_by_terrain, terrain_table
from aenp.files import atomic_write, write_json
from aenp.models.io import load
from aenp.models.registry import strict_counterpart
from aenp.train.run import (
    CONFIG_DIR,
    MODEL_DIR,
    compose_config,
    experiment_from_config,
    train,
    training_record,
)

SCALES = ("quick", "paper")
PLAN_DIR = CONFIG_DIR / "reproduce"

log = logging.getLogger(__name__)


def load_plan(experiment: str, scale: str) -> dict[str, Any]:
    """The models and overrides ``reproduce`` uses for an experiment at a scale."""
    path = PLAN_DIR / f"{experiment}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))
        raise InputError(f"no reproduce plan for experiment {experiment!r}; available: {available}")
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    plan = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {
        "models": plan["models"],
        "overrides": plan["scales"][scale]["overrides"],
        "model_overrides": plan["scales"][scale].get("models") or {},
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


def reproduce(
    experiment: str,
    scale: str,
    out: Path,
    models: list[str] | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Trains and evaluates every model of the experiment's plan; writes results to ``out``.

    ``models`` restricts the plan to some of its models; ``overrides`` (Hydra syntax, e.g.
    ``trainer.max_epochs=1``) apply to every model after the plan's own. Writes
    ``results.json``, ``results.md`` and figures to ``out``, and one run directory per model
    (``out/<key>``) that ``aenp evaluate`` can read again. Models already trained there resume
    (or are skipped if finished); one trained there with other settings is refused (see
    :func:`aenp.train.run.train`), so other settings (a seed) need another ``out``.
    """
    plan = load_plan(experiment, scale)
    keys = models or plan["models"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results, run_dirs, commands = [], {}, {}
    for i, key in enumerate(keys, 1):
        run_dir = out / key
        train_args = train_overrides(experiment, key, plan, run_dir, overrides or [])
        commands[key] = "aenp train " + " ".join(train_args)
        log.info("[%d/%d] %s", i, len(keys), commands[key])
        cfg = compose_config(train_args)
        train(cfg)
        log.info("[%d/%d] evaluating %s", i, len(keys), key)
        result = evaluate_run(run_dir)
        result["train_seconds"] = training_record(run_dir)["seconds"]
        results.append(result)
        run_dirs[key] = run_dir
    exp = experiment_from_config(cfg)
    id_split = exp.evaluation_splits[0]
    ood_split = exp.ood_splits[0] if exp.ood_splits else None
    summary = {
        "experiment": experiment,
        "scale": scale,
        "wall_seconds": time.perf_counter() - start,
        "hardware": hardware(),
        "commands": commands,
        "results": results,
    }
    normalisation = getattr(exp, "normalisation", None)
    if normalisation is not None:
        units = getattr(exp, "field", None)
        units = "" if units is None else units.attrs.get("units", "")
        summary["value_unit"] = {"size": normalisation.value_std, "units": units}
    trained = {key: load(run_dirs[key] / MODEL_DIR) for key in keys}
    terrain = _terrain_rows(exp, trained)
    if terrain:
        summary["departure_by_terrain"] = terrain
    write_json(out / "results.json", summary)
    figures = experiment_figures(exp, trained, run_dirs, out)
    per_task = {key: load_per_task_loglik(run_dirs[key]) for key in keys}
    tables = [
        results_table(results, id_split, ood_split),
        comparisons_table(per_task, id_split, ood_split),
    ]
    _write_text(out / "results.md", _markdown(summary, tables, figures, out))
    return out


def _terrain_rows(experiment, models: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`departure_by_terrain` of every approximate model of a climate experiment."""
    if not hasattr(experiment, "figure_field"):
        return {}
    approximate = {k: m for k, m in models.items() if strict_counterpart(k) is not None}
    try:
        return {k: departure_by_terrain(m, experiment) for k, m in approximate.items()}
    except ImportError as error:
        log.warning("departure by terrain skipped: %s", error)
        return {}


def _terrain_note(summary: dict[str, Any]) -> list[str]:
    """The departure-by-terrain section of ``results.md`` (empty if not measured)."""
    rows = summary.get("departure_by_terrain")
    if not rows:
        return []
    units = summary.get("value_unit", {}).get("units") or "data units"
    named = {display_name(k): r for k, r in rows.items()}
    return [
        "Where the approximate models depart from equivariance: |μ − μ_strict| per cell of the "
        "training region, averaged over every fourth test year (30% of the cells as context), "
        "against the surface elevation (see `aenp.evaluate.terrain`):",
        "",
        terrain_table(named, units),
        "",
    ]


def _value_unit_note(summary: dict[str, Any]) -> str:
    """What one standardised unit of RMSE and Δequiv is in the data's units, if known."""
    unit = summary.get("value_unit")
    if unit is None:
        return ""
    size = f"{unit['size']:.3g} {unit['units']}".strip()
    return f" RMSE and Δequiv are in standardised units: one unit is {size} of the data."


def _markdown(summary: dict[str, Any], tables: list[str], figures: list[Path], out: Path) -> str:
    hw = summary["hardware"]
    gpu = f", {hw['gpu']}" if "gpu" in hw else ""
    lines = [
        f"# {summary['experiment']} — scale `{summary['scale']}`",
        "",
        "Mean test log-likelihood per target point (nats) ± standard error over tasks. "
        "Rows marked *fixed inputs zeroed* evaluate an approximate model inside "
        "`strictly_equivariant(...)`. Δequiv is the mean |μ − μ_strict| over test targets."
        + _value_unit_note(summary),
        "",
        tables[0],
        "",
        "Approximate models against their counterparts, as paired differences over the same "
        "test tasks (positive: the approximate model is better; *better*/*worse* when the "
        "difference clears two standard errors):",
        "",
        tables[1],
        "",
        *_terrain_note(summary),
        f"Training time: {sum(r['train_seconds'] for r in summary['results']) / 60:.1f} min "
        f"in total; this `aenp reproduce` took {summary['wall_seconds'] / 60:.1f} min (models "
        f"already trained are only evaluated). Hardware: {hw['processor']} "
        f"({hw['cpus']} CPUs, {hw['threads']} threads, torch {hw['torch']}{gpu}).",
        "",
        "| model | parameters | training time (s) |",
        "|---|---|---|",
        *(
            f"| {r['model']} | {r['num_parameters']:,} | {r['train_seconds']:.0f} |"
            for r in summary["results"]
        ),
        "",
        *_commands_block(summary["commands"].values()),
        *(f"![{f.stem}]({f.relative_to(out)})" for f in figures),
        "",
    ]
    return "\n".join(lines)


ABLATIONS = ("num_fixed_inputs", "p_drop")


def ablate(
    experiment: str,
    scale: str,
    model: str,
    parameter: str,
    values: list[float],
    out: Path,
    overrides: list[str] | None = None,
) -> Path:
    """Trains an approximate model once per value of ``parameter``; tabulates the effect.

    ``num_fixed_inputs = 0`` trains the strictly equivariant counterpart instead. Every run
    uses the plan's settings for the scale (the model's own overrides included), so the rows
    differ only in the ablated value. Writes ``ablation.json`` and ``ablation.md`` to ``out``.
    """
    if parameter not in ABLATIONS:
        raise InputError(f"unknown ablation {parameter!r}; choose one of {', '.join(ABLATIONS)}")
    strict = strict_counterpart(model)
    if strict is None:
        raise InputError(f"{model!r} has no fixed inputs to ablate; use an approximate model")
    plan = load_plan(experiment, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, per_task, commands = [], {}, []
    for value in values:
        value = int(value) if parameter == "num_fixed_inputs" else float(value)
        key = strict if parameter == "num_fixed_inputs" and value == 0 else model
        extra = [] if key == strict else [f"model.hparams.{parameter}={value}"]
        run_dir = out / f"{parameter}-{value}"
        plan_for_key = {**plan, "model_overrides": {key: plan["model_overrides"].get(model, [])}}
        train_args = train_overrides(
            experiment, key, plan_for_key, run_dir, [*(overrides or []), *extra]
        )
        commands.append("aenp train " + " ".join(train_args))
        log.info("[%s=%s] %s", parameter, value, commands[-1])
        cfg = compose_config(train_args)
        train(cfg)
        result = evaluate_run(run_dir)
        rows.append({"value": value, "model": key, "splits": result["splits"]})
        per_task[value] = load_per_task_loglik(run_dir)
    exp = experiment_from_config(cfg)
    summary = {
        "experiment": experiment,
        "scale": scale,
        "model": model,
        "parameter": parameter,
        "hardware": hardware(),
        "commands": commands,
        "rows": rows,
    }
    write_json(out / "ablation.json", summary)
    ood = exp.ood_splits[0] if exp.ood_splits else None
    table = ablation_table(parameter, rows, per_task, exp.evaluation_splits[0], ood)
    lines = [
        f"# Ablation of `{parameter}` for {model} on {experiment} (scale `{scale}`)",
        "",
        table,
        "",
        *_commands_block(commands),
    ]
    _write_text(out / "ablation.md", "\n".join(lines))
    return out


def _commands_block(commands) -> list[str]:
    """Markdown lines listing the exact commands of a run."""
    return ["Commands:", "", "```", *commands, "```", ""]
