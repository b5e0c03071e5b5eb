"""The Markdown reports of ``aenp reproduce`` (``results.md``) and ``aenp ablate``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aenp.evaluate.tables import display_name
from aenp.evaluate.terrain import terrain_table


def results_markdown(
    summary: dict[str, Any], tables: list[str], figures: list[Path], out: Path
) -> str:
    """``results.md`` of ``aenp reproduce``.

    Args:
        summary: The content of ``results.json``.
        tables: The results table and the table of paired comparisons.
        figures: The figures, linked relative to ``out``.
        out: The folder ``results.md`` is written to.
    """
    hw = summary["hardware"]
    gpu = f", {hw['gpu']}" if "gpu" in hw else ""
    results_note, verdict_note = _seed_notes(summary["seeds"])
    runs: dict[str, list[dict[str, Any]]] = {}
    for result in summary["results"]:
        runs.setdefault(result["model"], []).append(result)
    per_seed = " per seed" if len(summary["seeds"]) > 1 else ""
    at_once = f", {summary['parallel']} runs at a time" if summary["parallel"] > 1 else ""
    lines = [
        f"# {summary['experiment']} — scale `{summary['scale']}`",
        "",
        "Mean test log-likelihood per target point (nats) ± standard error over tasks. "
        "Rows marked *fixed inputs zeroed* evaluate an approximate model inside "
        "`strictly_equivariant(...)`. Δequiv is the mean |μ − μ_strict| over test targets."
        + _value_unit_note(summary)
        + results_note,
        "",
        tables[0],
        "",
        "Approximate models against their counterparts, as paired differences over the same "
        "test tasks (positive: the approximate model is better; *better*/*worse*"
        f"{verdict_note}):",
        "",
        tables[1],
        "",
        *_terrain_note(summary),
        f"Training time: {sum(r['train_seconds'] for r in summary['results']) / 60:.1f} min "
        f"in total; this `aenp reproduce` took {summary['wall_seconds'] / 60:.1f} min (models "
        f"already trained are only evaluated{at_once}). Hardware: {hw['processor']} "
        f"({hw['cpus']} CPUs, {hw['threads']} threads, torch {hw['torch']}{gpu}).",
        "",
        f"| model | parameters | training time{per_seed} (s) |",
        "|---|---|---|",
        *(
            f"| {key} | {model_runs[0]['num_parameters']:,} | "
            + ", ".join(f"{r['train_seconds']:.0f}" for r in model_runs)
            + " |"
            for key, model_runs in runs.items()
        ),
        "",
        *_commands_block(summary["commands"].values()),
        *(f"![{f.stem}]({f.relative_to(out)})" for f in figures),
        "",
    ]
    return "\n".join(lines)


def ablation_markdown(summary: dict[str, Any], table: str) -> str:
    """``ablation.md`` of ``aenp ablate``, from the content of ``ablation.json`` and its table."""
    lines = [
        f"# Ablation of `{summary['parameter']}` for {summary['model']} on "
        f"{summary['experiment']} (scale `{summary['scale']}`)",
        "",
        table,
        "",
        *_commands_block(summary["commands"]),
    ]
    return "\n".join(lines)


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


def _seed_notes(seeds: list[int]) -> tuple[str, str]:
    """What ``results.md`` says about several seeds: below the results and comparisons tables."""
    if len(seeds) == 1:
        return "", " when the difference clears two standard errors"
    first, many = seeds[0], f"*{len(seeds)} seeds*"
    return (
        f" With several seeds, the figures over tasks are those of seed {first}, and each column "
        f"marked {many} gives the mean ± standard error of the per-seed means (seeds "
        f"{first}–{seeds[-1]}); every seed is tested on the same tasks, so that spread is "
        f"training's alone. Figures show the seed-{first} models.",
        f" when the difference clears two standard errors both over the tasks of seed {first} "
        f"and, in the column marked {many}, over the per-seed paired differences (runs of one "
        "seed train on the same tasks)",
    )


def _commands_block(commands: Iterable[str]) -> list[str]:
    """Markdown lines listing the exact commands of a run."""
    return ["Commands:", "", "```", *commands, "```", ""]
