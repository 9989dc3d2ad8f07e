"""How a policy net reads the decision env's observation: the latent squeezed, the safety state kept.

An observation of :class:`latentguard.envs.decision_env.DecisionVectorEnv` is ``F`` standardised latent
features (1,152 on the default model) followed by the 6 :data:`~latentguard.envs.decision_env.STATE_FIELDS`
(``z``, the guard's risk, buffer fill, attempts, progress, flagged). A plain MLP over all of it
starts with the state fields as 6 inputs in 1,158: at the first layer they carry ~0.5% of the
variance, and the first default policy's 12 PPO updates hardly lifted them. :class:`LatentStateExtractor`
projects the latent to ``latent_features`` numbers (LayerNorm, linear, tanh) and passes the state
fields through as they are, so the policy and value heads see ``latent_features + 6`` inputs in
which the safety state is a third (SB3's ``CombinedExtractor`` does the same for dict spaces).

>>> import gymnasium as gym, numpy as np, torch
>>> space = gym.spaces.Box(-np.inf, np.inf, (10 + 6,), np.float32)
>>> LatentStateExtractor(space, latent_features=4)(torch.zeros(2, 16)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from latentguard.envs.decision_env import STATE_FIELDS


class LatentStateExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: ``tanh(W · LayerNorm(latent))`` (``latent_features``) then the
    state fields unchanged. ``observation_space``: the decision env's (F + 6,) box."""

    def __init__(self, observation_space: gym.spaces.Box, latent_features: int = 32) -> None:
        if latent_features < 1:
            raise ValueError(f"latent_features must be >= 1, got {latent_features}")
        width, state_size = int(observation_space.shape[0]), len(STATE_FIELDS)
        if width <= state_size:
            raise ValueError(f"observation of width {width} has no latent before its {state_size} "
                             "state fields: is this the decision env's observation space?")
        super().__init__(observation_space, features_dim=latent_features + state_size)
        self.state_size = state_size
        self.project = nn.Sequential(nn.LayerNorm(width - state_size),  # (B, F) -> (B, latent_features)
                                     nn.Linear(width - state_size, latent_features), nn.Tanh())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """(B, F + 6) -> (B, latent_features + 6)."""
        latent, state = observations[:, : -self.state_size], observations[:, -self.state_size:]
        return torch.cat([self.project(latent), state], dim=1)
