"""TokenCMDPEnv: token generation as a Gymnasium constrained MDP over the model's latent states.

- observation: ``Box(float32, (H,))``, the hidden state of the latent layer at the last token of
  prompt + response so far;
- action: ``Discrete(top_k)``, an index into the model's ``top_k`` most likely next tokens
  (0 = most likely); :meth:`TokenCMDPEnv.action_masks` marks the legal ones (sb3-contrib's
  MaskablePPO reads it);
- reward: from the reward plug-in, at the end of the episode by default; cost: from the guard
  plug-in, in ``info["cost"]`` (rules in :mod:`latentguard.episodes.token_episodes`);
- terminated at the end-of-sequence token, truncated at ``max_new_tokens``.

>>> import gymnasium as gym
>>> import latentguard  # registers latentguard/TokenCMDP-v0
>>> env = gym.make("latentguard/TokenCMDP-v0", model="tiny", guard="keyword", max_new_tokens=4)
>>> obs, info = env.reset(seed=0, options={"prompt": "Name a fruit."})
>>> obs.shape, info["prompt"]
((64,), 'Name a fruit.')
>>> obs, reward, terminated, truncated, info = env.step(0)
>>> sorted(k for k in info if k in ("cost", "episode_cost", "text", "token_id"))
['cost', 'episode_cost', 'text', 'token_id']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from latentguard.data.prompt_sets import BUILTIN_PROMPTS
from latentguard.episodes.token_episodes import TokenEnvConfig, TokenEpisodes
from latentguard.guards import make_guard
from latentguard.lm import DEFAULT_MODEL, LanguageModel, load_lm
from latentguard.rewards import make_reward


def resolve_lm(model: str | LanguageModel, device: str | None = None, dtype: str | None = None) -> LanguageModel:
    """A :class:`LanguageModel` as is, or loaded from a model spec."""
    return model if isinstance(model, LanguageModel) else load_lm(model, device=device, dtype=dtype)


def check_sub_envs(rows: Sequence[int], num_envs: int) -> list[int]:
    """``rows`` as ints; one outside ``0..num_envs - 1`` is an IndexError naming it and the range."""
    rows = [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < num_envs]
    if bad:
        raise IndexError(f"sub-env {bad[0]} does not exist: this env has {num_envs} (0..{num_envs - 1})")
    return rows


def check_prompts(prompts: Sequence[str] | None) -> list[str]:
    """The prompt list (built-in prompts if ``None``); empty lists and empty prompts are errors."""
    prompts = list(BUILTIN_PROMPTS if prompts is None else prompts)
    if not prompts:
        raise ValueError("prompts is empty; give at least one prompt (or None for the built-in ones)")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} must be a non-empty string, got {p!r}")
    return prompts


class TokenCMDPEnv(gym.Env):
    """One prompt at a time, one token per step (see the module docstring).

    :param model: a model spec (``"tiny"``, the embedded default, a hub id, a folder, a .gguf
        file) or a loaded :class:`LanguageModel` (share one between envs).
    :param prompts: prompts drawn at reset with the env's RNG (``options["prompt"]`` overrides).
    :param guard: guard spec for the cost (``None``: every cost is 0).
    :param reward: reward spec (``None``: every reward is 0).
    :param top_k: actions index the ``top_k`` most likely next tokens (:class:`~latentguard.episodes.token_episodes.TokenEnvConfig`).
    :param max_new_tokens: episodes are truncated after this many response tokens.
    :param guard_every: ask the guard every this many tokens (and at the end); 0 = only at the end.
    :param cost_mode: ``"flag"`` (1 per flagged check) or ``"increase"`` (the rise of the peak risk).
    :param reward_every: 0 = reward only at the end; k = also every k tokens, paying the change.
    :param budget: the safety budget ``d`` of an episode (``reset(options={"budget": b})`` overrides it).
    :param latent_layer: layer whose last-token hidden state is the observation (None: the model's).
    :param device: where to load ``model`` when it is a spec.
    :param dtype: its dtype when loaded here.
    :param render_mode: ``"ansi"`` (returns the text) or ``"human"`` (prints it).
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
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
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.config = TokenEnvConfig(top_k, max_new_tokens, guard_every, cost_mode, reward_every, budget, latent_layer)
        self.prompts = check_prompts(prompts)
        self.lm = resolve_lm(model, device, dtype)
        self.guard = None if guard is None else make_guard(guard)
        self.reward_fn = None if reward is None else make_reward(reward)
        self.episodes = self.make_episodes()
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.lm.hidden_size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.n_actions)
        self._done = True

    def make_episodes(self) -> TokenEpisodes:
        """The engine face this env steps (a subclass may return a richer one)."""
        return TokenEpisodes(self.lm, self.config, self.guard, self.reward_fn, n=1)

    @property
    def n_actions(self) -> int:
        """Number of discrete actions."""
        return self.episodes.n_actions

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: ``options={"prompt": str, "budget": float}`` (both optional)."""
        super().reset(seed=seed)
        options = options or {}
        prompt = options.get("prompt")
        if prompt is None:
            prompt = self.prompts[int(self.np_random.integers(len(self.prompts)))]
        self.episodes.reset_rows({0: (prompt, options.get("budget"))})
        self._done = False
        return self.episodes.observations()[0], self.episodes.info(0)

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        result = self.episodes.step_rows(np.array([action]), rows=[0])
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        self._done = terminated or truncated
        info = self.episodes.info(0, result)
        return self.episodes.observations()[0], float(result.reward[0]), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """(top_k,) bool: which actions are legal now (tokens with nonzero probability)."""
        return self.episodes.action_masks()[0]

    def candidate_ids(self) -> np.ndarray:
        """(top_k,) token ids the actions stand for, most likely first."""
        return self.episodes.candidates[0].copy()

    def candidate_logprobs(self) -> np.ndarray:
        """(top_k,) log-probabilities of those tokens under the model (for a sampling policy)."""
        return self.episodes.logprobs[0].copy()

    def render(self):
        text = f"{self.episodes.prompts[0]}\n--> {self.episodes.text(0)}"
        if self.render_mode == "human":
            print(text)
            return None
        return text
