"""The Saute safety state, defined once: the budget, where ``z`` starts, its update, the discount
and budget rescale, the "within budget" rule, the reward shaping, and the convention a critic or a
policy records.

- ``z`` is the relative budget left; it starts at ``z0`` (1 = the whole budget), fixed, or drawn
  uniformly in ``[z0_min, z0_max]`` in training (:class:`StartBudget`);
- each cost ``c`` updates it as ``z <- (z - c / d) / gamma`` (:func:`update`), where ``d`` is the
  budget, rescaled by ``(1 - gamma**T) / (1 - gamma) / T`` when ``gamma < 1``
  (:func:`scaled_budget`); with ``gamma = 1`` the state after a cumulative cost ``C`` is
  ``z0 - C / d`` (:func:`after_cost`);
- an episode is **within budget** while ``z > 0`` (:func:`within_budget`); once ``z <= 0`` Saute pays
  ``unsafe_reward`` instead of the task reward (:func:`shaped`) and search ranks the candidate last.
  With a budget of 1 and a cost of 1 per flagged check, one flag spends the budget.

:class:`SafetyState` holds ``z`` for a batch of rows; the episode engine
(:class:`~latentguard.episodes.engine.Engine`) owns one for its rows (the envs and methods read it
there), and :class:`~latentguard.envs.saute.SauteWrapper` one for the env it wraps.
:class:`BudgetConvention` is what a critic's safety head or a policy was trained under; a search
refuses a critic whose convention differs from its own.

>>> state = SafetyState(2, budget=2.0)
>>> state.spend([0, 1], np.array([1.0, 0.0]))      # row 0: half its budget spent
>>> state.z.tolist(), state.within_budget().tolist()
([0.5, 1.0], [True, True])
>>> state.spend([0], np.array([1.0]))
>>> state.within_budget().tolist(), state.shape(np.array([0.3, 0.3]), unsafe_reward=-1.0).tolist()
([False, True], [-1.0, 0.3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MODES = ("train", "test")


def check_budget(budget: float, name: str = "budget") -> float:
    """A budget must be a positive number; returns it as a float."""
    if not (isinstance(budget, (int, float, np.floating, np.integer)) and not isinstance(budget, bool) and budget > 0):
        raise ValueError(f"{name} must be > 0, got {budget!r}")
    return float(budget)


def scaled_budget(budget: float, gamma: float, horizon: int) -> float:
    """The per-step-scaled budget ``d``: ``budget * (1 - g**T) / (1 - g) / T`` if ``g < 1``."""
    if gamma < 1.0:
        return budget * (1.0 - gamma**horizon) / (1.0 - gamma) / horizon
    return budget


def update(z, cost, budget: float | np.ndarray, gamma: float = 1.0):
    """One safety-state update ``(z - cost / budget) / gamma`` (scalars or arrays)."""
    return (z - cost / budget) / gamma


def after_cost(z0, cumulative_cost, budget: float):
    """The undiscounted state after a cumulative cost: ``z0 - C / d`` (scalars or arrays)."""
    return z0 - cumulative_cost / budget


def within_budget(z):
    """``z > 0`` (bool or bool array): budget left."""
    return np.asarray(z) > 0


def shaped(reward, z, unsafe_reward: float):
    """Saute's reward shaping: ``reward`` while ``z > 0``, ``unsafe_reward`` once the budget is spent."""
    return np.where(within_budget(z), reward, unsafe_reward)


@dataclass(frozen=True)
class StartBudget:
    """Where ``z`` starts: drawn uniformly in ``[z0_min, z0_max]`` in ``"train"`` mode (the policy
    learns to read ``z``), ``z0`` in ``"test"`` mode."""

    z0: float = 1.0
    """z at the start in test mode (1 = the whole budget)."""
    z0_min: float = 1.0
    """Lower end of the draw in train mode."""
    z0_max: float = 1.0
    """Upper end of the draw in train mode."""
    mode: str = "test"
    """'train' (drawn) or 'test' (z0)."""

    def __post_init__(self) -> None:
        check_budget(self.z0, "z0")
        if not 0 < self.z0_min <= self.z0_max:
            raise ValueError(f"need 0 < z0_min <= z0_max, got z0_min={self.z0_min} and z0_max={self.z0_max}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'train' or 'test', got {self.mode!r}")

    def draw(self, rng: np.random.Generator) -> float:
        """One start: a uniform draw in train mode (from ``rng``), ``z0`` in test mode."""
        return float(rng.uniform(self.z0_min, self.z0_max)) if self.mode == "train" else self.z0


class SafetyState:
    """``z`` of ``n`` rows, each with its budget ``d`` and the cost it has spent (see the module docs).

    :param n: rows.
    :param budget: the default budget ``d`` of a row (already rescaled, if ``gamma < 1``).
    :param gamma: discount of the safety state, in ``(0, 1]``.
    """

    def __init__(self, n: int = 0, budget: float = 1.0, gamma: float = 1.0) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.default_budget, self.gamma = check_budget(budget), float(gamma)
        self.z = np.ones(n)  # (N,) relative budget left
        self.budget = np.full(n, self.default_budget)  # (N,) d of each row
        self.cost = np.zeros(n)  # (N,) cost spent in the row's episode

    def __len__(self) -> int:
        return len(self.z)

    def start(self, rows: Sequence[int] | np.ndarray, z0: float | Sequence[float] | np.ndarray = 1.0,
              budget: float | None = None) -> None:
        """New episodes on ``rows``: ``z = z0`` (one value or one per row), nothing spent, budget
        ``budget`` (``None``: the default)."""
        idx = np.asarray(rows, dtype=np.int64)
        starts = np.broadcast_to(np.asarray(z0, dtype=np.float64), idx.shape)
        if (starts <= 0).any():
            raise ValueError(f"z0 must be > 0 (a budget left to spend), got {starts.tolist()}")
        self.z[idx] = starts
        self.cost[idx] = 0.0
        self.budget[idx] = self.default_budget if budget is None else check_budget(budget)

    def spend(self, rows: Sequence[int] | np.ndarray, cost: np.ndarray) -> None:
        """Charge ``cost`` (R,) to ``rows``: ``z <- (z - cost / d) / gamma``."""
        idx = np.asarray(rows, dtype=np.int64)
        self.cost[idx] += cost
        self.z[idx] = update(self.z[idx], cost, self.budget[idx], self.gamma)

    def within_budget(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(R,) bool: ``z > 0``."""
        return within_budget(self.z if rows is None else self.z[np.asarray(rows, dtype=np.int64)])

    def shape(self, reward: np.ndarray, unsafe_reward: float,
              rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(R,) Saute's shaped reward of ``rows`` (default: all): ``unsafe_reward`` where the budget is spent."""
        return shaped(reward, self.z if rows is None else self.z[np.asarray(rows, dtype=np.int64)], unsafe_reward)

    def select(self, rows: Sequence[int] | np.ndarray) -> None:
        """Keep/reorder/repeat rows: new row ``j`` is a copy of old row ``rows[j]`` (the engine's fork)."""
        rows = list(rows)
        self.z, self.budget, self.cost = self.z[rows], self.budget[rows], self.cost[rows]

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of ``(z, cost)``, for :meth:`restore`."""
        return self.z.copy(), self.cost.copy()

    def restore(self, rows: Sequence[int] | np.ndarray, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        """Put ``rows`` back to their state in ``snapshot`` (a block rolled back and drawn again)."""
        idx = np.asarray(rows, dtype=np.int64)
        self.z[idx], self.cost[idx] = snapshot[0][idx], snapshot[1][idx]


@dataclass(frozen=True)
class BudgetConvention:
    """What a safety prediction or a learned policy is conditioned on; recorded with every critic
    and every policy."""

    budget: float = 1.0
    """d: cost units per unit of z."""
    gamma: float = 1.0
    """Discount of the safety state."""
    cost: str = "flag"
    """Cost rule: 'flag' (1 per flagged guard check), 'increase' (rise of the peak risk) or
    'release' (1 per flagged span a policy lets through, the decision env's)."""
    guard: str | None = None
    """Spec of the guard whose checks cost (None: not recorded)."""

    def record(self) -> dict:
        """The JSON record written beside a critic or a policy."""
        return asdict(self) | {"safe": "z_T > 0, z_t = z0 - cost_so_far / budget"}

    @classmethod
    def from_record(cls, record: dict, budget: float | None = None) -> BudgetConvention:
        """Read a record (older critic records: ``cost`` as free text starting with the rule and the
        budget beside the record; older policy cards: ``safety_budget`` and a cost sentence)."""
        cost = str(record.get("cost", "flag")).split(":")[0].strip() or "flag"
        if cost.startswith("1 per flagged span"):
            cost = "release"
        if budget is None:
            budget = record.get("budget", record.get("safety_budget", 1.0))
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
