"""The paper-style results table, as Markdown."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from aenp.evaluate.metrics import mean_and_stderr
from aenp.models.registry import MODEL_SPECS, strict_counterpart


def display_name(key: str) -> str:
    """The paper's name for a registry key (the key itself for any other name)."""
    spec = MODEL_SPECS.get(key)
    return key if spec is None else spec.display_name


def __getattr__(name: str) -> Any:
    """``DISPLAY_NAMES``, deprecated: the names are in ``MODEL_SPECS[key].display_name``."""
    if name != "DISPLAY_NAMES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "aenp.evaluate.tables.DISPLAY_NAMES is deprecated; use display_name(key) or "
        "aenp.models.registry.MODEL_SPECS[key].display_name",
        DeprecationWarning,
        stacklevel=2,
    )
    return {key: spec.display_name for key, spec in MODEL_SPECS.items()}


SMALL = 0.01
"""Magnitudes below which estimates are shown in scientific notation."""


def estimate(summary: dict[str, float] | None, digits: int = 3) -> str:
    """``mean ± stderr`` of a summary (scientific notation for small values), or a dash."""
    if summary is None or math.isnan(summary["mean"]):
        return "–"
    small = 0 < abs(summary["mean"]) < SMALL
    form = f".{digits - 1}e" if small else f".{digits}f"
    if math.isnan(summary["stderr"]):
        return f"{summary['mean']:{form}}"
    return f"{summary['mean']:{form}} ± {summary['stderr']:{form}}"


def across_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± standard error over runs (one per seed) of each run's mean, per split and metric.

    A seed whose mean is NaN makes the figure NaN rather than being left out.

    Args:
        runs: Results of :func:`aenp.evaluate.run.evaluate_run` of one model, one per seed.

    Returns:
        ``{split: {metric: {"mean", "stderr", "num_seeds"}}}`` over the first run's metrics.
    """
    return {
        split: {
            metric: _over_seeds([run["splits"][split][metric]["mean"] for run in runs])
            for metric in metrics
        }
        for split, metrics in runs[0]["splits"].items()
    }


def _over_seeds(means: Sequence[float]) -> dict[str, float]:
    values = np.asarray(means, dtype=np.float64)
    n = len(values)
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": float(values.mean()), "stderr": stderr, "num_seeds": n}


def _by_model(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped by model, in order of first appearance."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault(result["model"], []).append(result)
    return grouped


def results_table(results: Sequence[dict[str, Any]], id_split: str, ood_split: str | None) -> str:
    """Markdown table: one row per model, plus strict rows for approximate models.

    Columns: log-likelihood in and out of distribution, the gap to the ground truth (when
    known), RMSE in and out of distribution, the context log-likelihood (for point-set
    experiments) and ``Δequiv`` (in distribution). Ground-truth and oracle rows come first when
    the experiment has them.

    ``results`` holds one entry per run. A model with several (one per seed, first seed first)
    shows its first run's figures, and each column is followed by one *across seeds*: the mean
    ± standard error of the runs' means (:func:`across_seeds`).
    """
    runs = _by_model(results)
    num_seeds = max(len(model_runs) for model_runs in runs.values())
    splits = [id_split, *([ood_split] if ood_split else [])]
    first = results[0]["splits"]
    has_gt = "gt_loglik" in first[id_split]
    has_context = any(
        not math.isnan(r["splits"][id_split]["context_loglik"]["mean"]) for r in results
    )
    columns = [(f"{s} log-lik", s, "loglik") for s in splits]
    if has_gt:
        columns.append((f"gap to GT ({id_split})", id_split, "gap"))
    columns += [(f"{s} RMSE", s, "rmse") for s in splits]
    if has_context:
        columns.append((f"context log-lik ({id_split})", id_split, "context_loglik"))
    columns.append((f"Δequiv ({id_split})", id_split, "delta_equiv"))
    seed_cells = 2 if num_seeds > 1 else 1
    rows = []
    if has_gt:
        for label, metric in (
            ("Ground truth (mixture)", "gt_loglik"),
            ("Oracle (true kernel)", "oracle_loglik"),
        ):
            cells = {"loglik": lambda s, m=metric: estimate(first[s][m]), "gap": lambda s: "0"}
            if metric != "gt_loglik":
                cells["gap"] = lambda s: "–"
            row = [label]
            for _, s, m in columns:
                # The ground truth does not depend on a seed: no across-seed figure.
                row += [cells.get(m, lambda s: "–")(s), *["–"] * (seed_cells - 1)]
            rows.append(row)
    for key, model_runs in runs.items():
        spread = across_seeds(model_runs) if len(model_runs) > 1 else {}
        for suffix, label in (("", ""), ("_strict", ", fixed inputs zeroed")):
            if id_split + suffix not in model_runs[0]["splits"]:
                continue
            row = [display_name(key) + label]
            for _, s, m in columns:
                row.append(estimate(model_runs[0]["splits"][s + suffix].get(m)))
                if num_seeds > 1:
                    row.append(estimate(spread.get(s + suffix, {}).get(m)))
            rows.append(row)
    header = ["Model"]
    for name, _, _ in columns:
        header += [name, *([f"{name}, {num_seeds} seeds"] if num_seeds > 1 else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


SIGNIFICANCE = 2.0
"""Standard errors a paired difference must clear to be called better or worse."""


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return mean_and_stderr(torch.from_numpy(a - b))


def _verdict(summary: dict[str, float]) -> str:
    if summary["mean"] - SIGNIFICANCE * summary["stderr"] > 0:
        return "better"
    if summary["mean"] + SIGNIFICANCE * summary["stderr"] < 0:
        return "worse"
    return "no significant difference"


def _paired_over_seeds(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean ± standard error over seeds of the per-seed paired differences ``[num_seeds, nt]``."""
    return _over_seeds(
        [_paired(a_seed, b_seed)["mean"] for a_seed, b_seed in zip(a, b, strict=True)]
    )


def comparisons_table(
    per_task: dict[str, dict[str, np.ndarray]], id_split: str, ood_split: str | None
) -> str:
    """Paired differences in log-likelihood over the same tasks (the paper's claims).

    For every approximate model: against its strict counterpart and every non-equivariant
    model in distribution; out of distribution against its strict counterpart both as
    trained and with fixed inputs zeroed. A difference is called better or worse when it
    clears two standard errors of the paired difference.

    With several seeds, the paired difference over tasks is the first seed's, and a column
    beside it gives the mean ± standard error over seeds of each seed's paired difference
    (runs of one seed train on the same tasks); the verdict is better or worse only when both
    figures clear two standard errors.

    Args:
        per_task: Per-task log-likelihoods ``{model key: {split: [num_tasks]}}``, or
            ``[num_seeds, num_tasks]`` with one row per seed (the same seeds for every model).
        id_split: The in-distribution split.
        ood_split: The out-of-distribution split, if any.
    """
    per_task = {
        key: {split: np.atleast_2d(values) for split, values in arrays.items()}
        for key, arrays in per_task.items()
    }
    num_seeds = max(len(values) for arrays in per_task.values() for values in arrays.values())
    non_equivariant = [k for k in per_task if k in MODEL_SPECS and MODEL_SPECS[k].symmetry is None]
    rows = []
    for key, arrays in per_task.items():
        base = strict_counterpart(key)
        if base is None:
            continue
        rivals = ([base] if base in per_task else []) + non_equivariant
        for rival in rivals:
            rows.append(
                (
                    display_name(key),
                    display_name(rival),
                    id_split,
                    arrays[id_split],
                    per_task[rival][id_split],
                )
            )
        if ood_split and base in per_task:
            ood_base = per_task[base][ood_split]
            rows.append(
                (display_name(key), display_name(base), ood_split, arrays[ood_split], ood_base)
            )
            rows.append(
                (
                    display_name(key) + ", fixed inputs zeroed",
                    display_name(base),
                    ood_split,
                    arrays[ood_split + "_strict"],
                    ood_base,
                )
            )
    header = ["model", "compared with", "split", "Δ log-lik (paired)"]
    if num_seeds > 1:
        header.append(f"Δ log-lik (paired), {num_seeds} seeds")
    header.append("verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a, b, split, ours, theirs in rows:
        over_tasks = _paired(ours[0], theirs[0])
        cells = [a, b, split, estimate(over_tasks)]
        verdict = _verdict(over_tasks)
        if num_seeds > 1:
            over_seeds = _paired_over_seeds(ours, theirs)
            cells.append(estimate(over_seeds))
            if _verdict(over_seeds) != verdict:
                verdict = "no significant difference"
        lines.append("| " + " | ".join([*cells, verdict]) + " |")
    return "\n".join(lines)


def ablation_table(
    parameter: str,
    rows: Sequence[dict[str, Any]],
    per_task: dict[Any, dict[str, np.ndarray]],
    id_split: str,
    ood_split: str | None,
) -> str:
    """One row per value of the ablated parameter.

    Columns: log-likelihoods as trained and with fixed inputs zeroed, Δequiv, and the paired
    difference to the first row (the strict model when ``num_fixed_inputs`` starts at 0).
    """
    first = rows[0]["value"]
    splits = [id_split, *([ood_split] if ood_split else [])]
    header = [parameter, "model"]
    for split in splits:
        header += [f"{split} log-lik", f"{split}, zeroed"]
    header += [f"Δequiv ({id_split})", f"Δ {id_split} vs {parameter}={first} (paired)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["value"]), display_name(row["model"])]
        for split in splits:
            cells.append(estimate(row["splits"][split]["loglik"]))
            strict = row["splits"].get(split + "_strict")
            cells.append(estimate(strict["loglik"]) if strict else "–")
        cells.append(estimate(row["splits"][id_split].get("delta_equiv")))
        difference = _paired(per_task[row["value"]][id_split], per_task[first][id_split])
        cells.append(
            "–" if row["value"] == first else f"{estimate(difference)} ({_verdict(difference)})"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
