"""A learned intervention policy's files: where ``train.py policy`` writes them, the card saved
beside the weights, the checks that refuse a policy trained for another run, and loading.

A policy folder holds ``policy.zip`` (Stable-Baselines3's MaskablePPO) and ``policy.json`` (the
training report, with the :func:`policy_card` under ``"card"``).

SB3 pickles the classes a policy was built with by their import path (here the features extractor,
:class:`latentguard.agents.policy_features.LatentStateExtractor`). Policies saved before the package
was named ``latentguard`` (version 0.1, top-level ``envs``, ``agents`` ...) name the old paths;
:func:`load_policy` reads them under the new ones, so a user's older policy, like the shipped one,
still loads. Cards of that version name the budget fields by their old names (``safety_budget``,
``min_rel_budget`` ...): :func:`card_env` reads both.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from latentguard.common.storage import slug, user_cache_dir
from latentguard.envs.decision_env import ACTIONS, ENV_FIELDS, STATE_FIELDS, DecisionVectorEnv
from latentguard.episodes.safety_state import BudgetConvention

LEGACY_MODULES = {
    "envs.policy_features": "latentguard.agents.policy_features",
    "envs.decision_env": "latentguard.envs.decision_env",
    "envs.sb3": "latentguard.training.sb3",
    "envs": "latentguard.envs",
    "agents": "latentguard.agents",
    "critics": "latentguard.critics",
    "training": "latentguard.training",
    "evaluation": "latentguard.evaluation",
}
"""Module paths of version 0.1 -> where the same code lives now (longest match first)."""

LEGACY_FIELDS = {"safety_budget": "budget", "min_rel_budget": "z0_min", "max_rel_budget": "z0_max",
                 "test_rel_budget": "z0"}
"""Decision-env fields of version 0.1 -> their names now."""


def default_policy_dir(model_id: str) -> Path:
    """Where ``train.py policy`` writes for a model (checkpoints, logs); the policy itself is in
    its ``policy/`` folder, which ``learned-care`` reads by default."""
    return user_cache_dir() / "policies" / slug(model_id) / "learned-care"


def policy_card(env: DecisionVectorEnv, guard_spec: str) -> dict:
    """What a policy trained on ``env`` depends on, saved beside its weights: the model, the latent
    it reads (layer, pooling, width), the guard, the actions, the state fields, the budget
    convention (:class:`~latentguard.episodes.safety_state.BudgetConvention`: cost 1 per flagged span
    released) and the env's options."""
    cfg = env.config
    return {"model": env.lm.model_id, "hidden_size": env.lm.hidden_size, "layer": env.layer, "pooling": cfg.pooling,
            "observation_size": int(env.single_observation_space.shape[0]), "guard": guard_spec,
            "actions": list(ACTIONS), "state_fields": list(STATE_FIELDS),
            "budget": BudgetConvention(cfg.budget, 1.0, "release", guard_spec).record(),
            "env": {name: getattr(cfg, name) for name in ENV_FIELDS}}


def card_env(card: dict) -> dict[str, Any]:
    """The decision-env options a policy was trained with (a 0.1 card's budget fields renamed)."""
    return {LEGACY_FIELDS.get(k, k): v for k, v in card["env"].items()}


def card_convention(card: dict) -> BudgetConvention:
    """The budget convention a policy was trained under (a 0.1 card's one-off record read too)."""
    return BudgetConvention.from_record(card.get("budget", {}) | {"guard": card.get("guard")})


def check_card(card: dict, model_id: str, guard_spec: str, path: str) -> None:
    """Refuse a policy (its ``card``, read from ``path``) trained for another model, guard or action set."""
    fix = f"train one for this run: python train.py policy --model {model_id} --guard {guard_spec!r}"
    if card.get("model") != model_id:
        raise ValueError(f"the policy {path} was trained on model {card.get('model')!r}, not {model_id!r}; {fix}")
    if str(card.get("guard", "")).strip() != str(guard_spec).strip():
        raise ValueError(f"the policy {path} was trained with guard {card.get('guard')!r}, this run uses "
                         f"{guard_spec!r}: its decisions answer another guard's checks; {fix}")
    if list(card.get("actions", [])) != list(ACTIONS) or list(card.get("state_fields", [])) != list(STATE_FIELDS):
        raise ValueError(f"the policy {path} acts with {card.get('actions')} on {card.get('state_fields')}, this "
                         f"version's decision env with {list(ACTIONS)} on {list(STATE_FIELDS)}; {fix}")


def renamed_module(module: str) -> str:
    """``module`` under its current path (a 0.1 path is mapped by :data:`LEGACY_MODULES`)."""
    for old in sorted(LEGACY_MODULES, key=len, reverse=True):
        if module == old or module.startswith(old + "."):
            return LEGACY_MODULES[old] + module[len(old):]
    return module


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(renamed_module(module), name)


def legacy_objects(source: str | Path | bytes) -> dict[str, Any]:
    """The entries of an SB3 zip's ``data`` that name a 0.1 module path, unpickled under the current
    paths (for ``custom_objects``: SB3 then uses them instead of its own unpickling)."""
    raw_zip = source if isinstance(source, bytes) else Path(source).read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw_zip)) as archive:
        data = json.loads(archive.read("data"))
    out = {}
    for key, value in data.items():
        if not (isinstance(value, dict) and ":serialized:" in value):
            continue
        raw = base64.b64decode(value[":serialized:"])
        if any(f"{old.split('.')[0]}.".encode() in raw for old in LEGACY_MODULES):
            out[key] = _RenamingUnpickler(io.BytesIO(raw)).load()
    return out


def load_policy(source: str | Path | bytes, keep_random_state: bool = False, **kwargs: Any):
    """Load an SB3 MaskablePPO from a zip path or its bytes (``kwargs`` go to ``MaskablePPO.load``),
    whichever version of latentguard saved it.

    SB3's load reseeds Python's, NumPy's and torch's global random streams with the policy's seed
    (resumed training relies on it); ``keep_random_state=True`` leaves them as they were (a policy
    loaded to act, beside other work that draws from them)."""
    from sb3_contrib import MaskablePPO

    custom = {**legacy_objects(source), **kwargs.pop("custom_objects", {})}
    path = io.BytesIO(source) if isinstance(source, bytes) else source
    if not keep_random_state:
        return MaskablePPO.load(path, custom_objects=custom or None, **kwargs)
    import torch

    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        model = MaskablePPO.load(path, custom_objects=custom or None, **kwargs)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    return model
