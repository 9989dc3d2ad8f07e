"""TokenCMDPVectorEnv: N token-level CMDP episodes with one batched forward per step.

A ``gymnasium.vector.VectorEnv`` whose sub-environments share one language model and one KV
cache: every step feeds one token per row in a single forward, and a sub-environment that resets
gets its new prompt in that same forward (``autoreset_mode="NextStep"``, Gymnasium's default), or
in one extra forward on the step it ends (``"SameStep"``: the reset observation is returned at
once and the last one is in ``infos["final_obs"]``, which is what Stable-Baselines3 expects; see
:class:`latentguard.training.sb3.SB3VecEnv`).

>>> import gymnasium as gym
>>> import latentguard
>>> vec = gym.make_vec("latentguard/TokenCMDP-v0", num_envs=3, vectorization_mode="vector_entry_point",
...                    model="tiny", max_new_tokens=4)
>>> obs, infos = vec.reset(seed=0)
>>> obs.shape
(3, 64)
>>> obs, rewards, terminated, truncated, infos = vec.step(np.zeros(3, dtype=np.int64))
>>> infos["cost"].shape, vec.action_masks().shape
((3,), (3, 20))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from latentguard.envs.token_env import check_prompts, check_sub_envs, resolve_lm
from latentguard.episodes.token_episodes import TokenEnvConfig, TokenEpisodes
from latentguard.guards import make_guard
from latentguard.lm import DEFAULT_MODEL, LanguageModel
from latentguard.rewards import make_reward

PROMPT_ORDERS = ("random", "cycle", "once")


class TokenCMDPVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~latentguard.envs.token_env.TokenCMDPEnv` decoded as one batch.

    Takes the same arguments as :class:`~latentguard.envs.token_env.TokenCMDPEnv`, plus ``num_envs``,
    ``autoreset_mode`` (``"NextStep"`` or ``"SameStep"``) and ``prompt_order``: ``"random"`` (drawn
    with the env's RNG), ``"cycle"`` (every new episode takes the next prompt of the list, so a
    collection job can walk through a prompt list exactly) or ``"once"`` (as ``"cycle"``, each
    prompt once: a sub-environment with no prompt left goes idle, its actions are ignored and
    :attr:`finished` says when all are). ``episode_index[i]`` is the position in the prompt list of
    sub-environment ``i``'s episode (``"cycle"`` and ``"once"``).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        num_envs: int = 8,
        model: str | LanguageModel = DEFAULT_MODEL,
        prompts: Sequence[str] | None = None,
        guard: Any = None,
        reward: Any = None,
        top_k: int = 20,
        max_new_tokens: int = 64,
        guard_every: int = 8,
        cost_mode: str = "flag",
        reward_every: int = 0,
        budget: float = 1.0,
        latent_layer: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        prompt_order: str = "random",
        render_mode: str | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if prompt_order not in PROMPT_ORDERS:
            raise ValueError(f"prompt_order must be one of {PROMPT_ORDERS}, got {prompt_order!r}")
        self.prompt_order = prompt_order
        self.prompts_started = 0  # episodes started so far ('cycle' takes prompts in this order)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode 'Disabled' is not supported; use 'NextStep' or 'SameStep'")
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.config = TokenEnvConfig(top_k, max_new_tokens, guard_every, cost_mode, reward_every, budget, latent_layer)
        self.prompts = check_prompts(prompts)
        self.lm = resolve_lm(model, device, dtype)
        self.guard = None if guard is None else make_guard(guard)
        self.reward_fn = None if reward is None else make_reward(reward)
        self.num_envs = num_envs
        self.episodes = self.make_episodes()
        self.render_mode = render_mode
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.lm.hidden_size,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(self.n_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self.idle = np.zeros(num_envs, dtype=bool)  # 'once': no prompt left for this sub-env
        self.episode_index = np.full(num_envs, -1, dtype=np.int64)
        self._started = False

    def make_episodes(self) -> TokenEpisodes:
        """The engine face this env steps (a subclass may return a richer one)."""
        return TokenEpisodes(self.lm, self.config, self.guard, self.reward_fn, n=self.num_envs)

    @property
    def n_actions(self) -> int:
        """Actions of one sub-environment."""
        return self.episodes.n_actions

    @property
    def restarting(self) -> np.ndarray:
        """(num_envs,) bool: sub-envs whose next step is a reset (their episode ended last step)."""
        return self._autoreset.copy()

    @property
    def finished(self) -> bool:
        """``prompt_order="once"``: every prompt has been answered (all sub-envs idle)."""
        return bool(self.idle.all())

    def add_prompts(self, prompts: Sequence[str]) -> None:
        """``prompt_order="once"``: append prompts to the list while the env runs (a server's new
        requests); idle sub-envs wake and start them at their next step (:attr:`restarting`)."""
        if self.prompt_order != "once":
            raise ValueError(f"add_prompts needs prompt_order='once', this env draws {self.prompt_order!r}")
        self.prompts.extend(check_prompts(prompts))
        waking = np.flatnonzero(self.idle)[: len(self.prompts) - self.prompts_started]
        self.idle[waking] = False
        self._autoreset[waking] = True

    def abandon(self, rows: Sequence[int]) -> None:
        """End the episodes of sub-envs ``rows`` now, unanswered (their readers went away): each
        starts the next prompt at its next step, or goes idle when none is left (``"once"``)."""
        rows = check_sub_envs(rows, self.num_envs)
        self.episodes.abandon(rows)
        self._autoreset[rows] = True

    def _draw(self, rows: Sequence[int] | np.ndarray, options: dict[str, Any]) -> dict[int, tuple[str, float | None]]:
        """New (prompt, budget) per row: ``options["prompt"]`` / ``["budget"]`` (scalar or per row)."""
        starts = {}
        for row in rows:
            prompt = options.get("prompt")
            if isinstance(prompt, (list, tuple)):
                prompt = prompt[row]
            if prompt is None and self.prompt_order == "once" and self.prompts_started >= len(self.prompts):
                self.idle[row] = True
                continue
            if prompt is None and self.prompt_order != "random":
                self.episode_index[row] = self.prompts_started
                prompt = self.prompts[self.prompts_started % len(self.prompts)]
            elif prompt is None:
                prompt = self.prompts[int(self.np_random.integers(len(self.prompts)))]
            self.prompts_started += 1
            budget = options.get("budget")
            if isinstance(budget, (list, tuple, np.ndarray)):
                budget = budget[row]
            starts[row] = (prompt, budget)
        return starts

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start all sub-environments (``options`` as in the single env, values scalar or per env)."""
        super().reset(seed=seed)
        if self.prompt_order == "once":  # each reset answers the list again
            self.prompts_started, self.idle[:] = 0, False
        starts = self._draw(range(self.num_envs), options or {})
        self.episodes.reset_rows(starts, fresh=True)  # 'once' with fewer prompts than sub-envs: idle rows hold a copy
        self.episodes.seed = 0 if seed is None else int(seed)
        self._autoreset[:] = False
        self._started = True
        infos: dict[str, Any] = {}
        for row in range(self.num_envs):
            infos = self._add_info(infos, self.episodes.info(row), row)
        return self.episodes.observations(), infos

    def step(self, actions):
        return self._advance(actions, None)

    def step_tokens(self, token_ids, actions=None):
        """The same step with the next tokens given by id (N,): a policy that samples from the whole
        distribution, as the decoding methods do. ``actions`` (N,), when given, carries the
        non-token actions of a face that has them (e.g. the rewrite env); it is ignored elsewhere."""
        token_ids = np.asarray(token_ids)
        if token_ids.shape != (self.num_envs,):
            raise ValueError(f"token_ids must have shape ({self.num_envs},), got {token_ids.shape}")
        return self._advance(np.zeros(self.num_envs, np.int64) if actions is None else actions, token_ids)

    def _advance(self, actions, token_ids):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        restarts = self._draw(np.flatnonzero(self._autoreset & ~self.idle), {}) or None
        restarting = np.array(sorted(restarts or ()), dtype=np.int64)
        stepping = np.flatnonzero(~self._autoreset & ~self.idle)
        result = self.episodes.step_rows(actions, stepping, restarts, token_ids)
        done = result.terminated | result.truncated
        row_infos = {int(row): self.episodes.info(int(row), result) for row in stepping}
        row_infos.update({int(row): self.episodes.info(int(row)) for row in restarting})
        obs = self.episodes.observations()
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            finished = np.flatnonzero(done)
            for row in finished.tolist():
                infos = self._add_info(infos, {"final_obs": obs[row], "final_info": row_infos[row]}, row)
            starts = self._draw(finished, {})
            if starts:
                self.episodes.reset_rows(starts)
                obs = self.episodes.observations()
            row_infos.update({int(row): self.episodes.info(row) for row in starts})
        else:
            self._autoreset = done
        for row in range(self.num_envs):
            infos = self._add_info(infos, row_infos.get(row) or self.episodes.info(row), row)
        return obs, result.reward.copy(), result.terminated.copy(), result.truncated.copy(), infos

    def candidate_logprobs(self) -> np.ndarray:
        """(num_envs, top_k) log-probabilities of the candidate tokens (for a sampling policy)."""
        return self.episodes.logprobs[: self.num_envs].copy()

    def action_masks(self) -> np.ndarray:
        """(num_envs, n_actions) bool: the legal actions of every sub-environment."""
        return self.episodes.action_masks()

    def candidate_ids(self) -> np.ndarray:
        """(num_envs, top_k) token ids the actions stand for."""
        return self.episodes.candidates[: self.num_envs].copy()

    def render(self):
        return tuple(f"{self.episodes.prompts[r]}\n--> {self.episodes.text(r)}" for r in range(self.num_envs))
