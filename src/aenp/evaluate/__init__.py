"""Evaluation: metrics (log-likelihood, gap to ground truth, Δequiv), tables and figures."""
