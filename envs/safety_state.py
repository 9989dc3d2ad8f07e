"""The Saute safety state, defined once: the budget, the update of ``z``, its discount and budget
rescale, the "within budget" rule, and the convention a critic records.

- ``z`` is the relative budget left; it starts at ``z0`` (1 = the whole budget);
- each cost ``c`` updates it as ``z <- (z - c / d) / gamma`` (:func:`update`), where ``d`` is the
  safety budget rescaled by ``(1 - gamma**T) / (1 - gamma) / T`` when ``gamma < 1``
  (:func:`scaled_budget`); with ``gamma = 1`` the state after a cumulative cost ``C`` is
  ``z0 - C / d`` (:func:`after_cost`);
- an episode is **within budget** while ``z > 0`` (:func:`within_budget`); once ``z <= 0`` Saute pays
  ``unsafe_reward`` and search ranks the candidate last. With a budget of 1 and a cost of 1 per
  flagged check, one flag spends the budget.

:class:`BudgetConvention` is what a critic's safety head predicts under (budget, discount, cost
rule, guard, check period); a search refuses a critic whose convention differs from its own.

>>> z = update(1.0, cost=1.0, budget=2.0)      # half the budget spent
>>> z, bool(within_budget(z)), bool(within_budget(update(z, 1.0, 2.0)))
(0.5, True, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def check_budget(budget: float) -> float:
    """A budget must be a positive number; returns it as a float."""
    if not (isinstance(budget, (int, float, np.floating, np.integer)) and not isinstance(budget, bool) and budget > 0):
        raise ValueError(f"budget must be > 0, got {budget!r}")
    return float(budget)


def scaled_budget(safety_budget: float, gamma: float, max_ep_len: int) -> float:
    """The per-step-scaled budget ``d``: ``safety_budget * (1 - g**T) / (1 - g) / T`` if ``g < 1``."""
    if gamma < 1.0:
        return safety_budget * (1.0 - gamma**max_ep_len) / (1.0 - gamma) / max_ep_len
    return safety_budget


def update(z, cost, budget: float, gamma: float = 1.0):
    """One safety-state update ``(z - cost / budget) / gamma`` (scalars or arrays)."""
    return (z - cost / budget) / gamma


def after_cost(z0, cumulative_cost, budget: float):
    """The undiscounted state after a cumulative cost: ``z0 - C / d`` (scalars or arrays)."""
    return z0 - cumulative_cost / budget


def within_budget(z):
    """``z > 0`` (bool or bool array): budget left."""
    return np.asarray(z) > 0


@dataclass(frozen=True)
class BudgetConvention:
    """What a safety prediction is conditioned on; recorded with every critic."""

    budget: float = 1.0
    """d: cost units per unit of z."""
    gamma: float = 1.0
    """Discount of the safety state."""
    cost: str = "flag"
    """Cost rule: 'flag' (1 per flagged guard check) or 'increase' (rise of the peak risk)."""
    guard: str | None = None
    """Spec of the guard whose checks cost (None: not recorded)."""

    def record(self) -> dict:
        """The JSON record written beside a critic."""
        return asdict(self) | {"safe": "z_T > 0, z_t = z0 - cost_so_far / budget"}

    @classmethod
    def from_record(cls, record: dict, budget: float) -> BudgetConvention:
        """Read a critic's record (older records: ``cost`` as free text starting with the rule)."""
        cost = str(record.get("cost", "flag")).split(":")[0].strip() or "flag"
        return cls(float(budget), float(record.get("gamma", 1.0)), cost, record.get("guard"))

    def mismatch(self, run: BudgetConvention) -> list[str]:
        """What differs from ``run`` (a field this record lacks is not compared), as readable lines."""
        out = []
        if self.guard is not None and run.guard is not None and self.guard.strip() != run.guard.strip():
            out.append(f"guard {self.guard!r}, this run uses {run.guard!r}")
        if abs(self.budget - run.budget) > 1e-9:
            out.append(f"budget {self.budget}, this run uses budget={run.budget}")
        if abs(self.gamma - run.gamma) > 1e-9:
            out.append(f"discount {self.gamma}, this run uses {run.gamma}")
        if self.cost != run.cost:
            out.append(f"cost rule {self.cost!r}, this run charges {run.cost!r}")
        return out
