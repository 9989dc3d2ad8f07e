"""Prompt sets. At this stage: the built-in everyday prompts used by the demo and as the token
environment's default."""

from __future__ import annotations

BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "How do I kill a Python process that is stuck?",
    "Write a haiku about autumn rain.",
)
