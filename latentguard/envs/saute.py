"""Saute RL: a safety budget made part of the state (Sootla et al., 2022).

:class:`SauteWrapper` works on any Gymnasium env that reports a per-step ``info["cost"]``. It
follows the reference implementation (huawei-noah/HEBO ``SAUTE/``), with the safety state of
:mod:`latentguard.episodes.safety_state` (the same update, start draw and shaping the engine uses):

- ``z_0`` is the relative budget left: drawn uniformly in ``[z0_min, z0_max]`` in ``mode="train"``,
  ``z0`` in ``mode="test"`` (:class:`~latentguard.episodes.safety_state.StartBudget`);
  ``reset(options={"z0": z})`` sets it directly and ``reset(options={"budget": b})`` sets it from an
  absolute budget (``z_0 = b / budget``);
- after each step ``z <- (z - c / d) / gamma``, where ``d`` is ``budget`` rescaled by
  ``(1 - g**T) / (1 - g) / T`` when ``g = gamma < 1`` (``T = max_ep_len``);
- the reward is ``r`` while ``z > 0`` and ``unsafe_reward`` once ``z <= 0``
  (``use_reward_shaping``); the original reward is in ``info["original_reward"]`` and the new
  safety state in ``info["safety_state"]``;
- ``z`` is appended to the observation, unnormalised, with bounds ``(-inf, inf)``
  (``use_state_augmentation``).

The wrapper keeps the ``z`` of the env it wraps, which may be any env (CartPole below). The token
envs also report their engine's own ``z`` (``info["safety_state"]``, under the env's ``budget``);
wrapped, the observation carries the wrapper's.

>>> import gymnasium as gym
>>> from latentguard.envs.saute import SauteWrapper
>>> env = SauteWrapper(gym.make("CartPole-v1"), budget=5.0, max_ep_len=500)
>>> obs, info = env.reset(seed=0)
>>> obs.shape, float(obs[-1])
((5,), 1.0)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from latentguard.episodes.safety_state import SafetyState, StartBudget, check_budget, scaled_budget


class SauteWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Augment an env that reports ``info["cost"]`` with a Saute safety state (see module docs).

    :param env: any env whose ``step`` puts the step's cost in ``info["cost"]``.
    :param budget: total cost allowed per episode (``> 0``).
    :param gamma: discount of the safety state, in ``(0, 1]``.
    :param max_ep_len: episode length ``T`` used to rescale the budget when ``gamma < 1``.
    :param unsafe_reward: reward once the budget is spent (``z <= 0``).
    :param z0_min: lower end of the relative budget drawn at reset in train mode.
    :param z0_max: upper end of that draw.
    :param z0: relative budget in test mode.
    :param use_reward_shaping: replace the reward by ``unsafe_reward`` once ``z <= 0``.
    :param use_state_augmentation: append ``z`` to the observation.
    :param mode: ``"train"`` (random relative budget) or ``"test"`` (``z0``).
    """

    def __init__(
        self,
        env: gym.Env,
        budget: float,
        gamma: float = 1.0,
        max_ep_len: int = 1000,
        unsafe_reward: float = 0.0,
        z0_min: float = 1.0,
        z0_max: float = 1.0,
        z0: float = 1.0,
        use_reward_shaping: bool = True,
        use_state_augmentation: bool = True,
        mode: str = "train",
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, budget=budget, gamma=gamma, max_ep_len=max_ep_len, unsafe_reward=unsafe_reward, z0_min=z0_min,
            z0_max=z0_max, z0=z0, use_reward_shaping=use_reward_shaping,
            use_state_augmentation=use_state_augmentation, mode=mode)
        gym.Wrapper.__init__(self, env)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if max_ep_len < 1:
            raise ValueError(f"max_ep_len must be >= 1, got {max_ep_len}")
        self.budget = check_budget(budget)
        self.gamma, self.max_ep_len = float(gamma), int(max_ep_len)
        self.start = StartBudget(z0, z0_min, z0_max, mode)
        self.safety = SafetyState(1, scaled_budget(self.budget, self.gamma, self.max_ep_len), self.gamma)
        self.unsafe_reward = float(unsafe_reward)
        self.use_reward_shaping = use_reward_shaping
        self.use_state_augmentation = use_state_augmentation
        if use_state_augmentation:
            space = env.observation_space
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise TypeError(f"state augmentation needs a 1-D Box observation space, got {space}")
            self.observation_space = gym.spaces.Box(
                low=np.append(space.low, -np.inf).astype(space.dtype),
                high=np.append(space.high, np.inf).astype(space.dtype),
                dtype=space.dtype,
            )

    @property
    def safety_state(self) -> float:
        """``z`` now."""
        return float(self.safety.z[0])

    def _z0(self, options: dict[str, Any] | None) -> float:
        options = options or {}
        if "z0" in options:
            return float(options["z0"])
        if "budget" in options:
            return float(options["budget"]) / self.budget
        return self.start.draw(self.np_random)

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        if not self.use_state_augmentation:
            return obs
        return np.append(obs, self.safety_state).astype(self.observation_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)  # seeds the RNG the budget is drawn from
        z0 = self._z0(options)
        if not z0 > 0:
            raise ValueError(f"the budget given at reset must be > 0, got {options}")
        self.safety.start([0], z0)
        info["safety_state"] = self.safety_state
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "cost" not in info:
            raise KeyError("SauteWrapper needs info['cost'] from the wrapped env's step; add a cost wrapper")
        self.safety.spend([0], np.array([float(info["cost"])]))
        info["original_reward"] = reward
        info["safety_state"] = self.safety_state
        if self.use_reward_shaping:
            reward = float(self.safety.shape(np.array([reward]), self.unsafe_reward)[0])
        return self._augment(obs), reward, terminated, truncated, info
