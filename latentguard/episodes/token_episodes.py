"""The token-level CMDP as a face of the episode engine (:mod:`latentguard.episodes.engine`).

This is the machinery shared by :class:`~latentguard.envs.token_env.TokenCMDPEnv` (N = 1) and
:class:`~latentguard.envs.token_vector_env.TokenCMDPVectorEnv`: one batched forward per step for all rows,
resets that share that forward, guard checks and rewards batched over the rows that need them.

**Cost rule.** The guard is asked for the risk ``r`` of the prompt and the whole response so far
every ``guard_every`` new tokens and when the episode ends (never in between: a step without a
check costs 0). With ``cost_mode="flag"`` (default) a check costs ``1`` if ``r >= guard.threshold``
and ``0`` otherwise, so the episode cost counts flagged checks. With ``cost_mode="increase"`` a
check costs the rise of the running maximum risk, ``max(0, r - max(earlier r))``, so the episode
cost telescopes to the peak risk, in [0, 1]. A guard that raises fails closed: the check is
counted as risk 1 and ``info["guard_error"]`` says why.

**Reward rule.** With ``reward_every=0`` (default) the reward function is called once, on the last
step, with the whole response; other steps give 0. With ``reward_every=k`` it is also called every
``k`` tokens and each call pays the change since the previous one (``R_t - R_{t-k}``), so the
episode return is the same terminal reward, spread out. A reward that returns NaN or inf is an
error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from latentguard.episodes.engine import COST_MODES, Engine, Start
from latentguard.episodes.safety_state import check_budget
from latentguard.guards import Guard
from latentguard.lm import LanguageModel
from latentguard.rewards import Reward


@dataclass
class TokenEnvConfig:
    """Options of the token-level CMDP (shared by the single and the vector env)."""

    top_k: int = 20
    """Actions are indices into the ``top_k`` most likely next tokens (0 = most likely)."""
    max_new_tokens: int = 64
    """Episodes are truncated after this many response tokens."""
    guard_every: int = 8
    """Ask the guard every this many tokens (and at the end); 0 = only at the end."""
    cost_mode: str = "flag"
    """'flag': a check costs 1 when risk >= threshold; 'increase': the rise of the peak risk;
    'release': 1 per flagged span a policy lets through (rewrite and decision envs only)."""
    reward_every: int = 0
    """0 = reward only at the end; k > 0 = also every k tokens, paying the change in reward."""
    budget: float = 1.0
    """Cost budget d: info['within_budget'] while z = 1 - episode_cost / d > 0 (:mod:`latentguard.episodes.safety_state`)."""
    latent_layer: int | None = None
    """Layer whose last-token hidden state is the observation (None = the model's default)."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.guard_every < 0:
            raise ValueError(f"guard_every must be >= 0 (0 = only at the end), got {self.guard_every}")
        if self.cost_mode not in COST_MODES:
            raise ValueError(f"cost_mode must be one of {COST_MODES}, got {self.cost_mode!r}")
        if self.reward_every < 0:
            raise ValueError(f"reward_every must be >= 0 (0 = terminal reward), got {self.reward_every}")
        check_budget(self.budget)


@dataclass
class StepResult:
    """What one step produced for every row (entries of rows that did not step are 0/False)."""

    reward: np.ndarray  # (N,) float
    cost: np.ndarray  # (N,) float
    terminated: np.ndarray  # (N,) bool: end-of-sequence token
    truncated: np.ndarray  # (N,) bool: max_new_tokens reached
    token_id: np.ndarray  # (N,) int, -1 where the row did not step
    risk: np.ndarray  # (N,) float, NaN where the guard was not asked
    guard_error: list[str | None] = field(default_factory=list)


class TokenEpisodes(Engine):
    """The token CMDP over ``n`` episodes: top-k actions, the check and reward schedule, the
    Gymnasium info (see the module docstring).

    The episodes are engine rows ``0..n-1``. A face may ask for ``helpers`` more rows after them,
    decoded in the same forwards but never shown as episodes (CARE's critiques,
    :mod:`latentguard.envs.rewrite_env`); they start as copies of row 0 and are restarted when used.
    """

    lets_spans_through = False
    """Whether a policy can let a flagged span through (``cost_mode="release"`` charges it)."""

    def __init__(self, lm: LanguageModel, config: TokenEnvConfig, guard: Guard | None, reward: Reward | None, n: int,
                 helpers: int = 0):
        if config.top_k > lm.vocab_size:
            raise ValueError(f"top_k must be <= the vocabulary size {lm.vocab_size}, got {config.top_k}")
        if config.cost_mode == "release" and not self.lets_spans_through:
            raise ValueError("cost_mode 'release' charges the flagged spans a policy lets through: only the rewrite "
                             "and decision envs have such a choice; use 'flag' or 'increase'")
        super().__init__(lm, guard, reward, config.max_new_tokens, config.cost_mode, config.budget)
        self.config = config
        self.layer = lm.capture_layer(config.latent_layer) if config.latent_layer is not None else lm.latent_layer
        self.eos_ids = np.array(sorted(lm.eos_token_ids))
        self.n_episodes, self.helpers = n, helpers
        self.seed = 0  # the env's reset seed (the rewrite face seeds its critiques with it)
        self._allocate(n)
        self.candidates = np.zeros((n, config.top_k), dtype=np.int64)  # (N, k) token ids
        self.masks = np.ones((n, config.top_k), dtype=bool)  # (N, k)
        self.logprobs = np.zeros((n, config.top_k), dtype=np.float32)  # (N, k) of the candidates

    # ------------------------------------------------------------------ observations
    def observations(self) -> np.ndarray:
        """(N, H) float32 latents of every episode's current prefix."""
        return self.live_state.latent(self.layer)[: self.n_episodes]

    def features(self, layer: int, pooling: str = "mean") -> np.ndarray:
        """(N, H) float32 features of the episodes (:meth:`latentguard.lm.DecodeState.features`)."""
        return self.live_state.features(layer, pooling, range(self.n_episodes)).float().cpu().numpy()

    @property
    def n_actions(self) -> int:
        """Discrete actions of one row: the top-k candidates."""
        return self.config.top_k

    def action_masks(self) -> np.ndarray:
        """(N, k) bool: the legal actions of every episode."""
        return self.masks[: self.n_episodes].copy()

    def refresh(self) -> None:
        """Recompute every row's top-k candidates after the decoding state changed."""
        logprobs, ids = self.live_state.topk(self.config.top_k)  # (N, k) each
        self.candidates = ids.cpu().numpy()
        self.logprobs = logprobs.float().cpu().numpy()
        self.masks = np.isfinite(self.logprobs)

    # ------------------------------------------------------------------ resets
    def abandon(self, rows: Sequence[int]) -> None:
        """Forget what the face holds for ``rows`` beyond the engine, whose episodes end unanswered
        (nothing here; a face with more, such as critiques in progress, drops it)."""

    def reset_rows(self, starts: Mapping[int, Start], fresh: bool = False) -> None:
        """Start new episodes on the given rows (``row -> (prompt, budget[, z0])``), one forward: on
        the rows in flight (a restart), or on a fresh decoding state (the first reset, ``fresh``, or
        every row started). A fresh start may leave rows out (an env with fewer prompts than rows, a
        server's first requests): they are copies of the first row started, made without a forward."""
        n = self.n_episodes
        if fresh or self.state is None or len(starts) == n:
            rows = sorted(starts)
            if not rows or not 0 <= rows[0] <= rows[-1] < n:
                raise ValueError(f"a fresh start needs one or more of the rows 0..{n - 1}, got {rows}")
            firsts = [starts[r] for r in rows]
            self.start([s[0] for s in firsts], [s[1] for s in firsts], [s[2] if len(s) > 2 else 1.0 for s in firsts])
            place = {row: j for j, row in enumerate(rows)}
            sources = [place.get(row, 0) for row in range(n)] + [0] * self.helpers
            if sources != list(range(len(rows))):
                self.fork(sources)
        else:
            self.restart(starts)
        self.refresh()

    # ------------------------------------------------------------------ steps
    def tokens_for(self, actions: np.ndarray, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token ids chosen by ``actions`` (N,) on ``rows``; an action outside the mask is an error."""
        idx = np.asarray(rows, dtype=np.int64)
        acts = np.asarray(actions).astype(np.int64)[idx]
        if acts.size and (acts.min() < 0 or acts.max() >= self.config.top_k):
            raise ValueError(f"actions must be in [0, {self.config.top_k}), got {acts.tolist()}")
        allowed = self.masks[idx, acts]
        if not allowed.all():
            bad = int(idx[~allowed][0])
            raise ValueError(f"action {int(np.asarray(actions)[bad])} is masked out for row {bad}: "
                             "choose among action_masks()")
        return self.candidates[idx, acts]

    def step_rows(
        self,
        actions: np.ndarray,
        rows: Sequence[int] | np.ndarray,
        restarts: Mapping[int, Start] | None = None,
        token_ids: np.ndarray | None = None,
    ) -> StepResult:
        """Advance ``rows`` by their actions and start ``restarts``, all in one forward.

        ``token_ids`` (N,), when given, are the tokens themselves (any id of the vocabulary: a
        policy that samples from the whole distribution) instead of candidate indices.
        """
        rows = list(rows)
        if token_ids is None:
            tokens = self.tokens_for(actions, rows)
        else:
            tokens = np.asarray(token_ids, dtype=np.int64)[np.asarray(rows, dtype=np.int64)]
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.lm.vocab_size):
                raise ValueError(f"token ids must be in [0, {self.lm.vocab_size}), got {tokens.tolist()}")
        self.feed_step(tokens, rows, restarts)
        self.refresh()
        n = self.n_episodes
        result = StepResult(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool),
                            np.full(n, -1, dtype=np.int64), np.full(n, np.nan), [None] * n)
        idx = np.asarray(rows, dtype=np.int64)
        result.token_id[idx] = tokens
        lengths = np.array([len(self.responses[r]) for r in rows], dtype=np.int64)
        result.terminated[idx] = np.isin(tokens, self.eos_ids)
        result.truncated[idx] = (lengths >= self.config.max_new_tokens) & ~result.terminated[idx]
        done = result.terminated[idx] | result.truncated[idx]
        self._check_guard(self.check_due(idx, lengths, done), result)
        self._pay_reward(idx[self._due(self.config.reward_every, lengths, done)], result)
        return result

    def feed_step(self, tokens: np.ndarray, rows: Sequence[int],
                  restarts: Mapping[int, Start] | None) -> None:
        """The step's one :meth:`~latentguard.episodes.engine.Engine.step` (a face adds its helper rows' feeds here)."""
        self.step(tokens, rows, restarts)

    def check_due(self, rows: np.ndarray, lengths: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The stepped rows whose guard check is due (every ``guard_every`` tokens and at the end)."""
        if self.guard is None:
            return rows[:0]
        return rows[self._due(self.config.guard_every, lengths, done)]

    @staticmethod
    def _due(every: int, lengths: np.ndarray, done: np.ndarray) -> np.ndarray:
        return done | ((lengths % every == 0) if every > 0 else np.zeros_like(done))

    def _check_guard(self, due: np.ndarray, result: StepResult) -> None:
        if due.size == 0:
            return
        check = self.check(due)
        if check.error is not None:  # fail closed: an unanswered check is a violation
            for r in due:
                result.guard_error[r] = check.error
        result.risk[due] = check.risk
        result.cost[due] = check.cost

    def _pay_reward(self, due: np.ndarray, result: StepResult) -> None:
        if self.reward is not None and due.size:
            result.reward[due] = self.pay(due)

    def info(self, row: int, result: StepResult | None = None) -> dict:
        """The Gymnasium info dict of ``row`` after a reset (``result=None``) or a step."""
        info = {
            "prompt": self.prompts[row],
            "text": self.text(row),
            "episode_cost": float(self.safety.cost[row]),
            "budget": float(self.safety.budget[row]),
            "safety_state": float(self.safety.z[row]),
            "within_budget": bool(self.safety.within_budget([row])[0]),
            "guard_calls": self.guard_calls,
        }
        if result is not None:
            info["cost"] = float(result.cost[row])
            info["token_id"] = int(result.token_id[row])
            if not np.isnan(result.risk[row]):
                info["risk"] = float(result.risk[row])
            if result.guard_error[row] is not None:
                info["guard_error"] = result.guard_error[row]
        return info
