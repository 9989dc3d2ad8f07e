"""Built-in task rewards that read the text.

- :class:`RelevanceReward`: cosine similarity between the prompt and the response in
  all-MiniLM-L6-v2 embedding space, in [-1, 1] (0 for an empty response). It measures whether the
  answer is about what was asked: an on-topic answer to a benign question scores ~0.4-0.8, an
  off-topic or empty one ~0. It does not judge correctness or safety.
- :class:`RepetitionReward`: minus the fraction of repeated word n-grams (default n = 3) in the
  response, in [-1, 0]. It measures degenerate looping ("a gentle rain, a gentle rain, ..."),
  which small models fall into; 0 means no n-gram occurs twice.
- :class:`CoherenceReward`: minus the larger of that fraction and the share of non-space
  characters that are not letters, in [-1, 0]: loops and runs of emoji, digits or URL fragments
  score low, language scores near 0 (the degenerate guard's risk, negated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentguard.rewards.base import Reward
from latentguard.text.embeddings import SentenceEncoder, UsesEncoder


class RelevanceReward(UsesEncoder, Reward):
    """Prompt-response cosine similarity of MiniLM sentence embeddings, in [-1, 1].

    :param encoder: a shared :class:`SentenceEncoder` (created lazily on first use if ``None``).
    """

    name = "relevance"

    def __init__(self, encoder: SentenceEncoder | None = None) -> None:
        self._encoder = encoder

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(0)
        emb = self.encoder.encode(list(prompts) + list(responses))  # (2B, 384)
        p, r = emb[: len(prompts)], emb[len(prompts) :]
        sim = (p * r).sum(-1).astype(np.float64)
        empty = np.array([not s.strip() for s in responses])
        return np.where(empty, 0.0, np.clip(sim, -1.0, 1.0))


class RepetitionReward(Reward):
    """Minus the share of word ``n``-grams in the response that repeat an earlier one, in [-1, 0].

    >>> RepetitionReward(n=2)(["q"], ["a b a b a b"]).round(2).tolist()   # 5 bigrams, 3 repeats
    [-0.6]
    """

    name = "repetition"

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(responses))
        for i, response in enumerate(responses):
            words = response.lower().split()
            grams = [tuple(words[j : j + self.n]) for j in range(len(words) - self.n + 1)]
            if grams:
                out[i] = -(len(grams) - len(set(grams))) / len(grams)
        return out


def symbol_share(text: str) -> float:
    """Share of the non-space characters of ``text`` that are not letters (0 for empty text)."""
    chars = [c for c in text if not c.isspace()]
    return sum(not c.isalpha() for c in chars) / len(chars) if chars else 0.0


class CoherenceReward(Reward):
    """Minus max(repeated word ``n``-gram share, non-letter share) of the response, in [-1, 0].

    >>> CoherenceReward()(["q", "q"], ["Mix two cups of flour.", "a b c a b c a b c"]).round(3).tolist()
    [-0.056, -0.571]
    """

    name = "coherence"

    def __init__(self, n: int = 3) -> None:
        self.repetition = RepetitionReward(n)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        repeated = -self.repetition(prompts, responses)  # (B,) in [0, 1]
        symbols = np.array([symbol_share(r) for r in responses])
        return -np.maximum(repeated, symbols)
