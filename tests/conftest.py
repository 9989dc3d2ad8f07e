"""Shared fixtures: one tiny random model and one real default model per test session."""

from __future__ import annotations

import pytest

from envs.lm import load_lm

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain in one sentence why the sky is blue, and mention the name of the effect.",
]


@pytest.fixture(scope="session")
def tiny_lm():
    """A 2-layer random Llama with SmolLM2's tokenizer (seed 0)."""
    return load_lm("tiny", latent_layers=[1, 0, 2])


@pytest.fixture(scope="session")
def default_lm():
    """The embedded SmolLM2-135M-Instruct (dequantized once into the user cache)."""
    return load_lm()
