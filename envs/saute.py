"""Saute RL: a safety budget made part of the state (Sootla et al., 2022).

:class:`SauteWrapper` works on any Gymnasium env that reports a per-step ``info["cost"]``. It
follows the reference implementation (huawei-noah/HEBO ``SAUTE/``) exactly:

- ``z_0`` is the relative budget left: drawn uniformly in ``[min_rel_budget, max_rel_budget]`` in
  ``mode="train"``, ``test_rel_budget`` in ``mode="test"``; ``reset(options={"rel_budget": z})``
  sets it directly and ``reset(options={"budget": b})`` sets it from an absolute budget
  (``z_0 = b / safety_budget``);
- after each step ``z <- (z - c / d) / saute_gamma``, where ``d`` is ``safety_budget`` rescaled by
  ``(1 - g**T) / (1 - g) / T`` when ``g = saute_gamma < 1`` (``T = max_ep_len``);
- the reward is ``r`` while ``z > 0`` and ``unsafe_reward`` once ``z <= 0``
  (``use_reward_shaping``); the original reward is in ``info["original_reward"]`` and the new
  safety state in ``info["safety_state"]``;
- ``z`` is appended to the observation, unnormalised, with bounds ``(-inf, inf)``
  (``use_state_augmentation``).

>>> import gymnasium as gym
>>> from envs.saute import SauteWrapper
>>> env = SauteWrapper(gym.make("CartPole-v1"), safety_budget=5.0, max_ep_len=500)
>>> obs, info = env.reset(seed=0)
>>> obs.shape, float(obs[-1])
((5,), 1.0)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.safety_state import scaled_budget, update, within_budget

saute_budget = scaled_budget
"""The per-step-scaled budget (:func:`envs.safety_state.scaled_budget`)."""


class SauteWrapper(gym.Wrapper):
    """Augment an env that reports ``info["cost"]`` with a Saute safety state (see module docs).

    :param env: any env whose ``step`` puts the step's cost in ``info["cost"]``.
    :param safety_budget: total cost allowed per episode (``> 0``).
    :param saute_gamma: discount of the safety state, in ``(0, 1]``.
    :param max_ep_len: episode length ``T`` used to rescale the budget when ``saute_gamma < 1``.
    :param unsafe_reward: reward once the budget is spent (``z <= 0``).
    :param min_rel_budget: lower end of the relative budget drawn at reset in train mode.
    :param max_rel_budget: upper end of that draw.
    :param test_rel_budget: relative budget in test mode.
    :param use_reward_shaping: replace the reward by ``unsafe_reward`` once ``z <= 0``.
    :param use_state_augmentation: append ``z`` to the observation.
    :param mode: ``"train"`` (random relative budget) or ``"test"`` (``test_rel_budget``).
    """

    def __init__(
        self,
        env: gym.Env,
        safety_budget: float,
        saute_gamma: float = 1.0,
        max_ep_len: int = 1000,
        unsafe_reward: float = 0.0,
        min_rel_budget: float = 1.0,
        max_rel_budget: float = 1.0,
        test_rel_budget: float = 1.0,
        use_reward_shaping: bool = True,
        use_state_augmentation: bool = True,
        mode: str = "train",
    ) -> None:
        super().__init__(env)
        if not safety_budget > 0:
            raise ValueError(f"safety_budget must be > 0, got {safety_budget}")
        if not 0 < saute_gamma <= 1:
            raise ValueError(f"saute_gamma must be in (0, 1], got {saute_gamma}")
        if max_ep_len < 1:
            raise ValueError(f"max_ep_len must be >= 1, got {max_ep_len}")
        if not 0 < min_rel_budget <= max_rel_budget:
            raise ValueError(
                f"need 0 < min_rel_budget <= max_rel_budget, got {min_rel_budget} and {max_rel_budget}"
            )
        if not test_rel_budget > 0:
            raise ValueError(f"test_rel_budget must be > 0, got {test_rel_budget}")
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        self.safety_budget = float(safety_budget)
        self.saute_gamma = float(saute_gamma)
        self.max_ep_len = int(max_ep_len)
        self.budget = saute_budget(self.safety_budget, self.saute_gamma, self.max_ep_len)
        self.unsafe_reward = float(unsafe_reward)
        self.min_rel_budget, self.max_rel_budget = float(min_rel_budget), float(max_rel_budget)
        self.test_rel_budget = float(test_rel_budget)
        self.use_reward_shaping = use_reward_shaping
        self.use_state_augmentation = use_state_augmentation
        self.mode = mode
        self.safety_state = 1.0
        if use_state_augmentation:
            space = env.observation_space
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise TypeError(f"state augmentation needs a 1-D Box observation space, got {space}")
            self.observation_space = gym.spaces.Box(
                low=np.append(space.low, -np.inf).astype(space.dtype),
                high=np.append(space.high, np.inf).astype(space.dtype),
                dtype=space.dtype,
            )

    def _initial_safety_state(self, options: dict[str, Any] | None) -> float:
        options = options or {}
        if "rel_budget" in options:
            z = float(options["rel_budget"])
        elif "budget" in options:
            z = float(options["budget"]) / self.safety_budget
        elif self.mode == "train":
            z = float(self.np_random.uniform(self.min_rel_budget, self.max_rel_budget))
        else:
            z = self.test_rel_budget
        if not within_budget(z):
            raise ValueError(f"the budget given at reset must be > 0, got {options}")
        return z

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        if not self.use_state_augmentation:
            return obs
        return np.append(obs, self.safety_state).astype(self.observation_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)  # seeds the RNG the budget is drawn from
        self.safety_state = self._initial_safety_state(options)
        info["safety_state"] = self.safety_state
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "cost" not in info:
            raise KeyError("SauteWrapper needs info['cost'] from the wrapped env's step; add a cost wrapper")
        self.safety_state = float(update(self.safety_state, float(info["cost"]), self.budget, self.saute_gamma))
        info["original_reward"] = reward
        info["safety_state"] = self.safety_state
        if self.use_reward_shaping and self.safety_state <= 0:
            reward = self.unsafe_reward
        return self._augment(obs), reward, terminated, truncated, info

