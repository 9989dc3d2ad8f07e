"""Detection metrics shared by guard training, calibration and the evaluation tools."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def safe_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC, or NaN when only one class is present."""
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def tpr_at_fpr(risk: np.ndarray, positive: np.ndarray, fpr: float) -> tuple[float, float]:
    """(TPR, threshold): the share of positives at or above the lowest threshold whose FPR on the
    negatives is at most ``fpr`` (``(0.0, inf)`` when no threshold separates anything).

    >>> tpr_at_fpr(np.array([0.9, 0.8, 0.3, 0.2, 0.1]), np.array([1, 1, 1, 0, 0], bool), 0.0)
    (1.0, 0.3)
    """
    risk, positive = np.asarray(risk, float), np.asarray(positive, bool)
    negatives = np.sort(risk[~positive])[::-1]  # descending
    allowed = int(np.floor(fpr * len(negatives) + 1e-9))  # negatives that may lie at or above the threshold
    bar = negatives[allowed] if allowed < len(negatives) else -np.inf  # the threshold must lie above this one
    candidates = risk[risk > bar]
    if not len(candidates):
        return 0.0, float("inf")
    threshold = float(candidates.min())
    return float((risk[positive] >= threshold).mean()), threshold
