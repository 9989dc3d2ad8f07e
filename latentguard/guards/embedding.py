"""An embedding guard: a logistic head on all-MiniLM-L6-v2 sentence embeddings.

Features are ``[e(prompt), e(response)]`` (2 x 384), so the head can tell "how do I kill a
process" + an answer about ``kill -9`` from a harmful request + a compliant answer. It runs its
own encoder (a 22M-parameter model) on every call: cheaper than a judge model, dearer than the
latent probe (see ``bench/guards.py``). Trained by ``python train.py guard --kind embedding`` on the
same answers as the probe; saved as ``embedding.safetensors`` + ``embedding.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentguard.guards.base import Guard
from latentguard.guards.linear_head import LinearHead
from latentguard.text.embeddings import SentenceEncoder, UsesEncoder

ENCODER = "all-MiniLM-L6-v2"


def embedding_features(encoder: SentenceEncoder, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """(B, 768) ``[e(prompt), e(response)]``."""
    emb = encoder.encode(list(prompts) + list(responses))  # (2B, 384)
    return np.hstack([emb[: len(prompts)], emb[len(prompts) :]])


class EmbeddingGuard(UsesEncoder, Guard):
    """Logistic head over prompt and response sentence embeddings."""

    name = "embedding"
    lineage = frozenset({"rule:refusal-markers", "features:minilm"})
    """Trained on answers labelled by the refusal-marker rule, from MiniLM embeddings."""

    def __init__(self, head: LinearHead, threshold: float, info: dict | None = None,
                 encoder: SentenceEncoder | None = None) -> None:
        if head.dim != 2 * SentenceEncoder.dim:
            raise ValueError(f"embedding head reads {head.dim} features, expected {2 * SentenceEncoder.dim}")
        self.head = head
        self.threshold = float(threshold)
        self.info = info or {}
        self._encoder = encoder

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(0)
        return self.head.risk(embedding_features(self.encoder, prompts, responses))

    def save(self, folder: str | Path) -> Path:
        return self.head.save(folder, "embedding", {"encoder": ENCODER, "threshold": self.threshold, "info": self.info})

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingGuard:
        head, config = LinearHead.load(folder, "embedding")
        if config.get("encoder") != ENCODER:
            raise ValueError(f"this embedding head was trained on encoder {config.get('encoder')!r}, not {ENCODER!r}")
        return cls(head, config["threshold"], config.get("info"))
