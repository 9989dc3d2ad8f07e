"""The Gymnasium ids of latentguard's envs, registered by ``import latentguard`` (entry points are
strings: nothing is imported until ``gym.make``)."""

from __future__ import annotations

import gymnasium as gym

TOKEN_CMDP_ID = "latentguard/TokenCMDP-v0"
"""One token per step: :class:`~latentguard.envs.token_env.TokenCMDPEnv` (vector:
:class:`~latentguard.envs.token_vector_env.TokenCMDPVectorEnv`)."""
REWRITE_ID = "latentguard/Rewrite-v0"
"""CARE's rewrite actions: :class:`~latentguard.envs.rewrite_env.RewriteEnv` / ``RewriteVectorEnv``."""
DECISION_ID = "latentguard/Decision-v0"
"""CARE's decisions for a learned policy: :class:`~latentguard.envs.decision_env.DecisionEnv` / ``DecisionVectorEnv``."""

ENTRY_POINTS = {
    TOKEN_CMDP_ID: ("latentguard.envs.token_env:TokenCMDPEnv", "latentguard.envs.token_vector_env:TokenCMDPVectorEnv"),
    REWRITE_ID: ("latentguard.envs.rewrite_env:RewriteEnv", "latentguard.envs.rewrite_env:RewriteVectorEnv"),
    DECISION_ID: ("latentguard.envs.decision_env:DecisionEnv", "latentguard.envs.decision_env:DecisionVectorEnv"),
}


def register_envs() -> None:
    """Register the ids with Gymnasium (once; a second call changes nothing)."""
    for env_id, (single, vector) in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=single, vector_entry_point=vector, disable_env_checker=False)
