"""N token-level CMDP episodes decoded in lockstep on one :class:`~envs.lm.DecodeState`.

This is the machinery shared by :class:`~envs.token_env.TokenCMDPEnv` (N = 1) and
:class:`~envs.token_vector_env.TokenCMDPVectorEnv`: one batched forward per step for all rows,
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

from envs.guards import Guard, checked_risk, violations
from envs.lm import DecodeState, LanguageModel
from envs.rewards import Reward, check_reward
from envs.safety_state import after_cost, within_budget


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
    """'flag': a check costs 1 when risk >= threshold; 'increase': the rise of the peak risk."""
    reward_every: int = 0
    """0 = reward only at the end; k > 0 = also every k tokens, paying the change in reward."""
    budget: float = 1.0
    """Cost budget d: info['within_budget'] while 1 - episode_cost / d > 0 (:mod:`envs.safety_state`)."""
    latent_layer: int | None = None
    """Layer whose last-token hidden state is the observation (None = the model's default)."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.guard_every < 0:
            raise ValueError(f"guard_every must be >= 0 (0 = only at the end), got {self.guard_every}")
        if self.cost_mode not in ("flag", "increase"):
            raise ValueError(f"cost_mode must be 'flag' or 'increase', got {self.cost_mode!r}")
        if self.reward_every < 0:
            raise ValueError(f"reward_every must be >= 0 (0 = terminal reward), got {self.reward_every}")
        check_budget(self.budget)


def check_budget(budget: float) -> float:
    """A budget must be a positive number."""
    if not (isinstance(budget, (int, float, np.floating, np.integer)) and budget > 0):
        raise ValueError(f"budget must be > 0, got {budget!r}")
    return float(budget)


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


class TokenEpisodes:
    """Episode bookkeeping for ``n`` rows over one decoding state (see the module docstring)."""

    def __init__(self, lm: LanguageModel, config: TokenEnvConfig, guard: Guard | None, reward: Reward | None, n: int):
        if config.top_k > lm.vocab_size:
            raise ValueError(f"top_k must be <= the vocabulary size {lm.vocab_size}, got {config.top_k}")
        self.lm, self.config, self.guard, self.reward, self.n = lm, config, guard, reward, n
        self.layer = lm.capture_layer(config.latent_layer) if config.latent_layer is not None else lm.latent_layer
        if guard is not None:
            guard.attach(lm)
        self.eos = np.array(sorted(lm.eos_token_ids))
        self.state: DecodeState | None = None
        self.prompts = [""] * n
        self.responses: list[list[int]] = [[] for _ in range(n)]
        self.episode_cost = np.zeros(n)
        self.peak_risk = np.zeros(n)
        self.last_reward = np.zeros(n)  # R at the previous reward call (reward_every > 0)
        self.budget = np.full(n, config.budget)
        self.guard_calls = 0
        self.candidates = np.zeros((n, config.top_k), dtype=np.int64)  # (N, k) token ids
        self.masks = np.ones((n, config.top_k), dtype=bool)  # (N, k)
        self.logprobs = np.zeros((n, config.top_k), dtype=np.float32)  # (N, k) of the candidates

    # ------------------------------------------------------------------ observations
    def observations(self) -> np.ndarray:
        """(N, H) float32 latents of every row's current prefix."""
        return self.state.latent(self.layer)

    def text(self, row: int) -> str:
        """The response of ``row`` so far."""
        return self.lm.decode(self.responses[row])

    def _refresh_candidates(self) -> None:
        logprobs, ids = self.state.topk(self.config.top_k)  # (N, k) each
        self.candidates = ids.cpu().numpy()
        self.logprobs = logprobs.float().cpu().numpy()
        self.masks = np.isfinite(self.logprobs)

    # ------------------------------------------------------------------ resets
    def _begin(self, row: int, prompt: str, budget: float | None) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        self.prompts[row] = prompt
        self.responses[row] = []
        self.episode_cost[row] = self.peak_risk[row] = self.last_reward[row] = 0.0
        self.budget[row] = self.config.budget if budget is None else check_budget(budget)
        return self.lm.encode_prompt(prompt)

    def reset_rows(self, starts: Mapping[int, tuple[str, float | None]]) -> None:
        """Start new episodes on the given rows (``row -> (prompt, budget)``), one forward."""
        ids = {row: self._begin(row, prompt, budget) for row, (prompt, budget) in starts.items()}
        if self.state is None or len(ids) == self.n:
            if len(ids) != self.n:
                raise ValueError(f"the first reset must start all {self.n} rows, got {sorted(ids)}")
            self.state = self.lm.prefill(token_ids=[ids[r] for r in range(self.n)])
        else:
            self.state.feed([ids.get(r, []) for r in range(self.n)], restart=list(ids))
        self._refresh_candidates()

    # ------------------------------------------------------------------ steps
    def tokens_for(self, actions: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """Token ids chosen by ``actions`` (N,) on ``rows``; an action outside the mask is an error."""
        rows = np.asarray(rows, dtype=np.int64)
        acts = np.asarray(actions).astype(np.int64)[rows]
        if acts.size and (acts.min() < 0 or acts.max() >= self.config.top_k):
            raise ValueError(f"actions must be in [0, {self.config.top_k}), got {acts.tolist()}")
        allowed = self.masks[rows, acts]
        if not allowed.all():
            bad = int(rows[~allowed][0])
            raise ValueError(f"action {int(np.asarray(actions)[bad])} is masked out for row {bad}: "
                             "choose among action_masks()")
        return self.candidates[rows, acts]

    def step(
        self,
        actions: np.ndarray,
        rows: Sequence[int],
        restarts: Mapping[int, tuple[str, float | None]] | None = None,
    ) -> StepResult:
        """Advance ``rows`` by their actions and start ``restarts``, all in one forward."""
        restarts = restarts or {}
        rows = list(rows)
        tokens = self.tokens_for(actions, rows)
        if len(rows) == self.n and not restarts:
            self.state.step(self.candidates[np.arange(self.n), np.asarray(actions).astype(np.int64)])
        else:
            chunks: list[list[int]] = [[] for _ in range(self.n)]
            for row, token in zip(rows, tokens):
                chunks[row] = [int(token)]
            for row, (prompt, budget) in restarts.items():
                chunks[row] = self._begin(row, prompt, budget)
            self.state.feed(chunks, restart=list(restarts))
        self._refresh_candidates()

        n = self.n
        result = StepResult(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool),
                            np.full(n, -1, dtype=np.int64), np.full(n, np.nan), [None] * n)
        for row, token in zip(rows, tokens):
            self.responses[row].append(int(token))
            result.token_id[row] = token
        idx = np.asarray(rows, dtype=np.int64)
        lengths = np.array([len(self.responses[r]) for r in rows], dtype=np.int64)
        result.terminated[idx] = np.isin(tokens, self.eos)
        result.truncated[idx] = (lengths >= self.config.max_new_tokens) & ~result.terminated[idx]
        done = result.terminated[idx] | result.truncated[idx]
        self._check_guard(idx, lengths, done, result)
        self._pay_reward(idx, lengths, done, result)
        return result

    def _due(self, every: int, lengths: np.ndarray, done: np.ndarray) -> np.ndarray:
        return done | ((lengths % every == 0) if every > 0 else np.zeros_like(done))

    def _check_guard(self, rows: np.ndarray, lengths: np.ndarray, done: np.ndarray, result: StepResult) -> None:
        if self.guard is None:
            return
        due = rows[self._due(self.config.guard_every, lengths, done)]
        if due.size == 0:
            return
        prompts = [self.prompts[r] for r in due]
        texts = [self.text(r) for r in due]
        self.guard_calls += 1
        risk, error = checked_risk(self.guard, prompts, texts, self.state, due.tolist())
        if error is not None:  # fail closed: an unanswered check is a violation
            for r in due:
                result.guard_error[r] = error
        if self.config.cost_mode == "flag":
            cost = violations(risk, self.guard.threshold).astype(np.float64)
        else:
            cost = np.maximum(0.0, risk - self.peak_risk[due])
        self.peak_risk[due] = np.maximum(self.peak_risk[due], risk)
        result.risk[due] = risk
        result.cost[due] = cost
        self.episode_cost[due] += cost

    def _pay_reward(self, rows: np.ndarray, lengths: np.ndarray, done: np.ndarray, result: StepResult) -> None:
        if self.reward is None:
            return
        due = rows[self._due(self.config.reward_every, lengths, done)]
        if due.size == 0:
            return
        prompts = [self.prompts[r] for r in due]
        value = check_reward(self.reward(prompts, [self.text(r) for r in due]), due.size, self.reward.name, prompts)
        result.reward[due] = value - self.last_reward[due]
        self.last_reward[due] = value

    def info(self, row: int, result: StepResult | None = None) -> dict:
        """The Gymnasium info dict of ``row`` after a reset (``result=None``) or a step."""
        info = {
            "prompt": self.prompts[row],
            "text": self.text(row),
            "episode_cost": float(self.episode_cost[row]),
            "budget": float(self.budget[row]),
            "within_budget": bool(within_budget(after_cost(1.0, self.episode_cost[row], self.budget[row]))),
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
