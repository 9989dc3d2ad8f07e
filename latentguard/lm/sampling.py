"""Next-token selection from a batch of logits: greedy, temperature, top-k and top-p.

All randomness comes from an explicit ``torch.Generator``, so the same seed gives the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen from the logits."""

    temperature: float = 1.0
    """Softmax temperature; ``0`` means greedy (argmax)."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens before sampling; ``0`` keeps all."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability sums to ``top_p`` (nucleus); ``1`` keeps all."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """True when the choice is the argmax."""
        return self.temperature == 0


GREEDY = SamplingConfig(temperature=0.0)


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Apply temperature, top-k and top-p to ``logits`` (B, V); removed tokens get ``-inf``."""
    logits = logits.float() / max(config.temperature, 1e-6)
    if 0 < config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= config.top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


NUCLEUS_CANDIDATES = 256
"""Nucleus sampling first looks among this many most likely tokens (exact: rows whose nucleus is
larger fall back to the full sort)."""


def _draw(probs: torch.Tensor, generator) -> torch.Tensor:
    """One draw per row of ``probs`` (B, n); ``generator``: one, one per row, or None."""
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"got {len(generator)} generators for {probs.shape[0]} rows")
        return torch.cat([torch.multinomial(p[None], 1, generator=g)[0] for p, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Choose one token per row of ``logits`` (B, V); returns (B,) int64 on the logits' device.

    ``generator`` may be one generator for the batch, or one per row: then every row's draws
    depend only on its own seed, whatever else is in the batch. With top-k or top-p the draw is
    made among the few most likely tokens (a partial sort), with exactly the probabilities of
    :func:`filter_logits`.
    """
    if config.greedy:
        return logits.argmax(-1)
    vocab = logits.shape[-1]
    limited = 0 < config.top_k < vocab
    if not limited and config.top_p >= 1.0:  # plain temperature sampling: the whole vocabulary
        return _draw((logits.float() / config.temperature).softmax(-1), generator)
    n = min(vocab, config.top_k if limited else NUCLEUS_CANDIDATES)
    scaled = logits.float() / max(config.temperature, 1e-6)  # (B, V)
    values, ids = torch.topk(scaled, n, dim=-1)  # (B, n), most likely first
    if limited:  # the top-k renormalised, as filter_logits does
        probs = values.softmax(-1)
    else:
        probs = (values - torch.logsumexp(scaled, -1, keepdim=True)).exp()  # true probabilities
    if config.top_p < 1.0:
        cum = probs.cumsum(-1)
        if not limited and bool((cum[:, -1] < config.top_p).any()) and n < vocab:  # nucleus wider than n
            return _draw(filter_logits(logits, config).softmax(-1), generator)
        probs = probs.masked_fill(cum - probs >= config.top_p, 0.0)  # keep the token that crosses top_p
    return ids.gather(-1, _draw(probs / probs.sum(-1, keepdim=True), generator)[:, None]).squeeze(-1)


def row_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One seeded generator per row."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
