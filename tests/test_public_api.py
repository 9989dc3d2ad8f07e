"""``import latentguard``: the public API by name, the env ids registered, nothing heavy loaded."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym

import latentguard


def test_every_exported_name_resolves_and_is_listed():
    for name in latentguard.__all__:
        assert getattr(latentguard, name) is not None, name
    assert set(latentguard.__all__) <= set(dir(latentguard))
    from latentguard.agents.registry import make_method
    from latentguard.episodes.engine import Engine
    from latentguard.evaluation.runner import run_evaluation

    assert latentguard.make_method is make_method and latentguard.Engine is Engine
    assert latentguard.run_evaluation is run_evaluation


def test_the_env_ids_are_registered():
    assert {latentguard.TOKEN_CMDP_ID, latentguard.REWRITE_ID, latentguard.DECISION_ID} <= set(gym.registry)


def test_importing_the_package_loads_no_model_library():
    code = "import sys, latentguard; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
