"""Stable-Baselines3 adapter for Gymnasium vector envs (the token vector env in particular).

SB3 collects rollouts through its own ``VecEnv`` API: auto-reset on the step an episode ends,
the last observation in ``info["terminal_observation"]``, one info dict per env. :class:`SB3VecEnv`
gives that API to any Gymnasium ``VectorEnv`` created with ``autoreset_mode="SameStep"``, keeping
the batched forward of :class:`~latentguard.envs.token_vector_env.TokenCMDPVectorEnv` (SB3's ``DummyVecEnv``
would step sub-environments one by one). ``env_method("action_masks")`` serves sb3-contrib's
MaskablePPO.

>>> from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
>>> venv = SB3VecEnv(TokenCMDPVectorEnv(2, model="tiny", max_new_tokens=3, autoreset_mode="SameStep"))
>>> venv.reset().shape
(2, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices


def unbatch_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's dict of arrays (with ``_key`` masks) -> one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        present = np.flatnonzero(infos.get(f"_{key}", np.ones(n, dtype=bool)))
        items = unbatch_infos(value, n) if isinstance(value, dict) else value
        for i in present:
            item = items[i]
            out[i][key] = item.item() if isinstance(item, np.generic) else item
    return out


class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium ``VectorEnv`` with ``autoreset_mode="SameStep"``.

    For an env that just ended, the returned info holds the last step's info (``cost``,
    ``episode_cost``, ...), ``terminal_observation`` and ``TimeLimit.truncated``.
    """

    def __init__(self, venv: VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"SB3VecEnv needs a vector env with autoreset_mode='SameStep', got {mode!r}")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, infos = self.venv.reset(seed=seed, options=self._options[0] or None)
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out = unbatch_infos(infos, self.num_envs)
        for i in np.flatnonzero(dones):
            info = dict(out[i].get("final_info", {}))  # the last step's info, not the reset's
            info["terminal_observation"] = out[i]["final_obs"]
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self.reset_infos[i] = {k: v for k, v in out[i].items() if k not in ("final_obs", "final_info")}
            out[i] = info
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        rows = self._indices(indices)
        if isinstance(result, np.ndarray) and result.shape[:1] == (self.num_envs,):
            return [result[i] for i in rows]  # batched methods such as action_masks()
        return [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
