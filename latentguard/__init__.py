"""latentguard: safe decoding for language models, framed as reinforcement learning.

Token generation is a Gymnasium constrained MDP over the model's latent states with a Saute safety
budget; a trained latent critic steers block search (InferenceGuard); CARE's buffered release,
rollback and introspection are environment actions, and a learned policy can take them.

The public API (loaded on first use, so ``import latentguard`` stays light):

- models: :func:`load_lm` (the embedded default, ``"tiny"``, a hub id, a folder or a GGUF file);
- plug-ins: :func:`make_guard`, :func:`make_reward`, :func:`make_method`;
- the episode core: :class:`Engine`; envs: :class:`TokenCMDPEnv`, :class:`TokenCMDPVectorEnv`,
  :class:`RewriteEnv`, :class:`RewriteVectorEnv`, :class:`DecisionEnv`, :class:`DecisionVectorEnv`,
  and the wrapper :class:`SauteWrapper`;
- evaluation: :class:`EvalConfig`, :func:`run_evaluation`.

``import latentguard`` registers the Gymnasium ids :data:`TOKEN_CMDP_ID`, :data:`REWRITE_ID` and
:data:`DECISION_ID`.

>>> import gymnasium as gym, latentguard
>>> env = gym.make(latentguard.TOKEN_CMDP_ID, model="tiny", guard="keyword", max_new_tokens=4)
>>> env.observation_space.shape
(64,)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latentguard.envs.registration import DECISION_ID, REWRITE_ID, TOKEN_CMDP_ID, register_envs

__version__ = "0.2.0"

register_envs()

_EXPORTS = {
    "load_lm": "latentguard.lm",
    "LanguageModel": "latentguard.lm",
    "SamplingConfig": "latentguard.lm",
    "make_guard": "latentguard.guards",
    "Guard": "latentguard.guards",
    "make_reward": "latentguard.rewards",
    "Reward": "latentguard.rewards",
    "make_method": "latentguard.agents.registry",
    "Method": "latentguard.agents.base",
    "Rollout": "latentguard.agents.base",
    "RunContext": "latentguard.agents.base",
    "Engine": "latentguard.episodes.engine",
    "SafetyState": "latentguard.episodes.safety_state",
    "SauteWrapper": "latentguard.envs.saute",
    "TokenCMDPEnv": "latentguard.envs.token_env",
    "TokenCMDPVectorEnv": "latentguard.envs.token_vector_env",
    "RewriteEnv": "latentguard.envs.rewrite_env",
    "RewriteVectorEnv": "latentguard.envs.rewrite_env",
    "DecisionEnv": "latentguard.envs.decision_env",
    "DecisionVectorEnv": "latentguard.envs.decision_env",
    "EvalConfig": "latentguard.evaluation.runner",
    "run_evaluation": "latentguard.evaluation.runner",
}

__all__ = [
    "DECISION_ID",
    "REWRITE_ID",
    "TOKEN_CMDP_ID",
    "DecisionEnv",
    "DecisionVectorEnv",
    "Engine",
    "EvalConfig",
    "Guard",
    "LanguageModel",
    "Method",
    "Reward",
    "RewriteEnv",
    "RewriteVectorEnv",
    "Rollout",
    "RunContext",
    "SafetyState",
    "SamplingConfig",
    "SauteWrapper",
    "TokenCMDPEnv",
    "TokenCMDPVectorEnv",
    "__version__",
    "load_lm",
    "make_guard",
    "make_method",
    "make_reward",
    "run_evaluation",
]

if TYPE_CHECKING:  # what editors and type checkers see; at run time each name loads on first use
    from latentguard.agents.base import Method, Rollout, RunContext
    from latentguard.agents.registry import make_method
    from latentguard.envs.decision_env import DecisionEnv, DecisionVectorEnv
    from latentguard.envs.rewrite_env import RewriteEnv, RewriteVectorEnv
    from latentguard.envs.saute import SauteWrapper
    from latentguard.envs.token_env import TokenCMDPEnv
    from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
    from latentguard.episodes.engine import Engine
    from latentguard.episodes.safety_state import SafetyState
    from latentguard.evaluation.runner import EvalConfig, run_evaluation
    from latentguard.guards import Guard, make_guard
    from latentguard.lm import LanguageModel, SamplingConfig, load_lm
    from latentguard.rewards import Reward, make_reward


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
