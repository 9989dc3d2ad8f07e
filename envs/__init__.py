"""The runtime world: language-model backend, the episode engine, the Saute safety state, guards that
load and score, rewards, the release buffer, and the environments that are faces of the engine.

Importing :mod:`envs` registers three Gymnasium ids (nothing is loaded at import time):

- ``latentguard/TokenCMDP-v0``: :class:`envs.token_env.TokenCMDPEnv`; with
  ``gym.make_vec(..., vectorization_mode="vector_entry_point")``:
  :class:`envs.token_vector_env.TokenCMDPVectorEnv`;
- ``latentguard/Rewrite-v0``: :class:`envs.rewrite_env.RewriteEnv` and
  :class:`envs.rewrite_env.RewriteVectorEnv` (CARE's rewrite actions);
- ``latentguard/Decision-v0``: :class:`envs.decision_env.DecisionEnv` and
  :class:`envs.decision_env.DecisionVectorEnv` (CARE's decisions at release points, for a learned policy).

The main names are also importable from here (loaded on first use): ``load_lm``, ``make_guard``,
``make_reward``, ``Engine``, ``SauteWrapper``, ``TokenCMDPEnv``, ``TokenCMDPVectorEnv``,
``RewriteEnv``, ``RewriteVectorEnv``, ``DecisionEnv``, ``DecisionVectorEnv``.
"""

import importlib

import gymnasium as gym

TOKEN_CMDP_ID = "latentguard/TokenCMDP-v0"
REWRITE_ID = "latentguard/Rewrite-v0"
DECISION_ID = "latentguard/Decision-v0"

for _id, _single, _vector in ((TOKEN_CMDP_ID, "envs.token_env:TokenCMDPEnv", "envs.token_vector_env:TokenCMDPVectorEnv"),
                              (REWRITE_ID, "envs.rewrite_env:RewriteEnv", "envs.rewrite_env:RewriteVectorEnv"),
                              (DECISION_ID, "envs.decision_env:DecisionEnv", "envs.decision_env:DecisionVectorEnv")):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_single, vector_entry_point=_vector, disable_env_checker=False)

_EXPORTS = {
    "load_lm": "envs.lm",
    "make_guard": "envs.guards",
    "make_reward": "envs.rewards",
    "Engine": "envs.engine",
    "SauteWrapper": "envs.saute",
    "TokenCMDPEnv": "envs.token_env",
    "TokenCMDPVectorEnv": "envs.token_vector_env",
    "RewriteEnv": "envs.rewrite_env",
    "RewriteVectorEnv": "envs.rewrite_env",
    "DecisionEnv": "envs.decision_env",
    "DecisionVectorEnv": "envs.decision_env",
}

__all__ = ["DECISION_ID", "REWRITE_ID", "TOKEN_CMDP_ID", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
