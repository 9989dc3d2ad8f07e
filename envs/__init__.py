"""The world: language-model backend, guards, rewards, the token-level CMDP and its wrappers.

Importing :mod:`envs` registers ``latentguard/TokenCMDP-v0`` with Gymnasium (single env:
:class:`envs.token_env.TokenCMDPEnv`; ``gym.make_vec(..., vectorization_mode="vector_entry_point")``:
:class:`envs.token_vector_env.TokenCMDPVectorEnv`). Nothing is loaded at import time.
"""

import gymnasium as gym

TOKEN_CMDP_ID = "latentguard/TokenCMDP-v0"

if TOKEN_CMDP_ID not in gym.registry:
    gym.register(
        id=TOKEN_CMDP_ID,
        entry_point="envs.token_env:TokenCMDPEnv",
        vector_entry_point="envs.token_vector_env:TokenCMDPVectorEnv",
        disable_env_checker=False,
    )
