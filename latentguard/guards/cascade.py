"""A cascade: a cheap first guard scores every check; only the rows it is unsure of go to a second,
stronger and costlier guard (McKenzie et al. 2025: a probe first, a classifier on the uncertain cases).

``cascade(first, second, low=L, high=H)``: rows whose first-stage risk ``r1`` lies in ``[L, H)`` are
asked of ``second``; the others keep ``r1``. Both risks are put on the common scale of
:func:`latentguard.guards.composite.rescale` (each guard's own threshold maps to 0.5), so the cascade's
threshold is 0.5 and its risk still orders answers: below the band a row is safe, above it flagged,
inside it the second guard decides. While decoding, the first stage reads the policy's latents
(``score_state``); the second runs only on the band's rows, and :attr:`CascadeGuard.asked` counts
them, so a timing that includes the cascade includes its cost.

The band is calibrated on dev answers with :func:`calibrate_band`: among bands that send at most a
given share of rows to the second stage, the one whose cascade has the highest TPR at a fixed FPR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentguard.common.metrics import tpr_at_fpr
from latentguard.guards.base import Guard
from latentguard.guards.composite import rescale


class CascadeGuard(Guard):
    """``first`` everywhere, ``second`` on the rows whose first risk lies in ``[low, high)``.

    :param first: the guard that scores every check (e.g. the latent probe: no extra forward).
    :param second: the guard asked on the uncertain rows (its own forward, counted in :attr:`asked`).
    :param low: lower end of the uncertain band, in the first guard's own risk.
    :param high: upper end (exclusive); ``low <= first.threshold <= high`` is not required.
    """

    threshold = 0.5

    def __init__(self, first: Guard, second: Guard, low: float, high: float) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"the cascade's band needs 0 <= low <= high <= 1, got low={low}, high={high}")
        self.first, self.second = first, second
        self.low, self.high = float(low), float(high)
        self.name = f"cascade({first.name},{second.name},low={self.low:g},high={self.high:g})"
        self.asked = 0
        """Rows the second guard has scored so far."""
        self.scored = 0
        """Rows the cascade has scored so far."""

    def _combine(self, r1: np.ndarray, ask) -> np.ndarray:
        r1 = np.asarray(r1, dtype=np.float64)  # (B,)
        out = rescale(r1, self.first.threshold)
        band = np.flatnonzero((r1 >= self.low) & (r1 < self.high))
        self.scored += len(r1)
        if len(band):
            self.asked += len(band)
            out[band] = rescale(np.asarray(ask(band), dtype=np.float64), self.second.threshold)
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self._combine(self.first.score(prompts, responses),
                             lambda band: self.second.score([prompts[i] for i in band], [responses[i] for i in band]))

    def score_state(self, prompts, responses, state=None, rows=None) -> np.ndarray:
        rows = list(range(len(prompts))) if rows is None else list(rows)
        return self._combine(
            self.first.score_state(prompts, responses, state, rows),
            lambda band: self.second.score_state([prompts[i] for i in band], [responses[i] for i in band], state,
                                                 [rows[i] for i in band]),
        )

    @property
    def lineage(self) -> frozenset[str]:
        return self.first.lineage | self.second.lineage

    def attach(self, lm) -> None:
        self.first.attach(lm)
        self.second.attach(lm)


def cascade_risk(r1: np.ndarray, r2: np.ndarray, t1: float, t2: float, low: float, high: float) -> np.ndarray:
    """(N,) what a cascade returns, from both stages' risks on every row (for calibration).

    >>> cascade_risk(np.array([0.1, 0.5, 0.9]), np.array([0.9, 0.9, 0.1]), 0.5, 0.5, 0.3, 0.7).tolist()
    [0.1, 0.9, 0.9]
    """
    inside = (r1 >= low) & (r1 < high)
    return np.where(inside, rescale(np.asarray(r2, float), t2), rescale(np.asarray(r1, float), t1))


def calibrate_band(r1: np.ndarray, r2: np.ndarray, positive: np.ndarray, t1: float, t2: float, *,
                   max_asked: float = 0.3, fpr: float = 0.05, grid: int = 41) -> dict:
    """The band ``[low, high)`` with the highest TPR at ``fpr`` among those that send at most
    ``max_asked`` of the rows to the second stage (ties: the fewer rows asked), from dev rows scored
    by both stages. Returns ``{"low", "high", "asked", "tpr", "first_tpr", "second_tpr"}``."""
    r1, r2, positive = np.asarray(r1, float), np.asarray(r2, float), np.asarray(positive, bool)
    if r1.shape != r2.shape or r1.shape != positive.shape:
        raise ValueError(f"r1, r2 and positive need one value per row, got {r1.shape}, {r2.shape}, {positive.shape}")
    if positive.all() or not positive.any():
        raise ValueError("calibration needs both positive and negative rows")
    edges = np.unique(np.quantile(r1, np.linspace(0, 1, grid)))
    best = {"low": 0.0, "high": 0.0, "asked": 0.0, "tpr": tpr_at_fpr(r1, positive, fpr)[0]}
    for i, low in enumerate(edges):
        for high in edges[i + 1 :]:
            asked = float(((r1 >= low) & (r1 < high)).mean())
            if asked > max_asked:
                break
            tpr = tpr_at_fpr(cascade_risk(r1, r2, t1, t2, low, high), positive, fpr)[0]
            if tpr > best["tpr"] + 1e-12 or (abs(tpr - best["tpr"]) <= 1e-12 and asked < best["asked"]):
                best = {"low": float(low), "high": float(high), "asked": asked, "tpr": tpr}
    best["first_tpr"] = tpr_at_fpr(r1, positive, fpr)[0]
    best["second_tpr"] = tpr_at_fpr(r2, positive, fpr)[0]
    return best
