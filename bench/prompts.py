"""Everyday prompts shared by the speed benchmarks (same prompts in every bench)."""

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain photosynthesis to a ten-year-old.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "What is a prime number? Give examples.",
    "Describe a busy market in the morning.",
    "How does a bicycle stay upright?",
]
