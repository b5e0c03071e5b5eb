"""The paper-style results table, as Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DISPLAY_NAMES = {
    "tnp": "TNP",
    "tetnp": "TE-TNP (T)",
    "tetnp_approx": "TE-TNP (T̃)",
    "convcnp": "ConvCNP (T)",
    "convcnp_approx": "ConvCNP (T̃)",
}


def display_name(key: str) -> str:
    """The paper's name for a registry key."""
    return DISPLAY_NAMES.get(key, key)


def estimate(summary: dict[str, float] | None, digits: int = 3) -> str:
    """``mean ± stderr`` of a summary, or a dash."""
    if summary is None or math.isnan(summary["mean"]):
        return "–"
    if math.isnan(summary["stderr"]):
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['stderr']:.{digits}f}"


def results_table(results: Sequence[dict[str, Any]], id_split: str, ood_split: str | None) -> str:
    """Markdown table: one row per model, plus strict rows for approximate models.

    Columns: in-distribution and out-of-distribution log-likelihood, gap to the ground truth
    (when known), context log-likelihood and ``Δequiv`` (in distribution). Ground-truth and
    oracle rows come first when the experiment has them.
    """
    has_gt = any("gt_loglik" in r["splits"][id_split] for r in results)
    header = ["Model", f"{id_split} log-lik"]
    if ood_split:
        header.append(f"{ood_split} log-lik")
    if has_gt:
        header.append(f"gap to GT ({id_split})")
    header += [f"context log-lik ({id_split})", f"Δequiv ({id_split})"]
    rows = []
    if has_gt:
        splits = results[0]["splits"]
        for label, metric in (
            ("Ground truth (mixture)", "gt_loglik"),
            ("Oracle (true kernel)", "oracle_loglik"),
        ):
            row = [label, estimate(splits[id_split][metric])]
            if ood_split:
                row.append(estimate(splits[ood_split][metric]))
            rows.append([*row, "0" if metric == "gt_loglik" else "–", "–", "–"])
    for result in results:
        splits = result["splits"]
        for suffix, label in (("", ""), ("_strict", ", fixed inputs zeroed")):
            if id_split + suffix not in splits:
                continue
            id_metrics = splits[id_split + suffix]
            row = [display_name(result["model"]) + label, estimate(id_metrics["loglik"])]
            if ood_split:
                row.append(estimate(splits[ood_split + suffix]["loglik"]))
            if has_gt:
                row.append(estimate(id_metrics["gap"]))
            row += [estimate(id_metrics["context_loglik"]), estimate(id_metrics.get("delta_equiv"))]
            rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
