"""latentguard-evaluate: answer prompts with a language model and report what it said and how fast.

At this stage it runs the embedded default model over a few built-in everyday prompts and prints
each answer with the decoding speed; methods, prompt sets, judges and reports build on this.

    python evaluate.py --max-new-tokens 48 --temperature 0
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from envs.cli import parse_config
from envs.lm import DEFAULT_MODEL, SamplingConfig, generate, load_lm
from envs.prompt_sets import BUILTIN_PROMPTS


@dataclass
class DemoConfig:
    """Answer the built-in prompts with a model and print the answers with tokens/s."""

    model: str = DEFAULT_MODEL
    """Model spec: the embedded default, 'tiny', a hub id, a local folder or a .gguf file."""
    max_new_tokens: int = 48
    """Tokens to generate per answer at most."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    seed: int = 0
    """Seed of the sampler."""
    device: str = "cpu"
    """'cpu' or 'cuda'."""


def run_demo(config: DemoConfig, prompts: Sequence[str] = BUILTIN_PROMPTS) -> dict:
    """Load the model, answer ``prompts`` in one batch, print them; returns the figures."""
    start = time.perf_counter()
    lm = load_lm(config.model, device=config.device)
    load_s = time.perf_counter() - start
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p)
    result = generate(lm, list(prompts), config.max_new_tokens, sampling, seed=config.seed)
    for prompt, completion in zip(prompts, result.completions):
        print(f"\n### {prompt}\n{completion.text.strip()}")
    print(
        f"\n{lm.model_id}: loaded in {load_s:.1f} s; {result.new_tokens} tokens for {len(prompts)} "
        f"prompts in {result.seconds:.1f} s = {result.tokens_per_s:.1f} tokens/s (batch {len(prompts)}, {lm.device})"
    )
    return {"load_s": load_s, "tokens": result.new_tokens, "seconds": result.seconds, "tokens_per_s": result.tokens_per_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-evaluate``)."""
    run_demo(parse_config(DemoConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
