"""A request gate: a linear probe on the request's latents that refuses before any token.

The latent probe (:mod:`latentguard.guards.probe`) reads the answer as it grows; the gate reads only
the request, once, from the prefill every method runs anyway. It is trained supervised on the
labelled requests (harmful against benign, look-alikes weighted up), selected by cross-validation
with whole harm categories out per fold, and its threshold is set to refuse at most a given share
of the *dev* look-alikes (``train.py gate``, :mod:`latentguard.training.gate_training`).

Methods use it as ``gate=request``: ``critic-search`` refuses a gated prompt before it takes any
rows; ``learned-care`` refuses it at the first decision and, since the gate now owns the refusal of
unflagged requests, turns the policy's refusals where no check has flagged into a continue (after a
flagged check the policy's choice stands).

Why a supervised gate beside the policy's own first decision: on the held-out categories it tells
harmful requests from look-alikes at AUROC 0.961 against the policy's 0.927, and at thresholds that
refuse the same share of dev look-alikes it refuses 76% of held-out harmful requests against 59%
(``tools/explore/request_probe.py``, ``results/issue25/request-gate/``).

Resolution order for a model (:func:`load_request_gate`): the user cache (your own ``train.py gate``
run), then the file shipped in ``latentguard/guards/pretrained/<model>/request-gate.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from latentguard.common.storage import atomic_write_json, read_json_file, slug, user_cache_dir
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.pretrained import pretrained_path

if TYPE_CHECKING:
    from latentguard.lm import LanguageModel
    from latentguard.lm.state import DecodeState

KIND = "request-gate"
GATE_POOLINGS = ("request", "last")


@dataclass
class RequestGate:
    """A standardised logistic head over one layer's request latent, with its refusal threshold."""

    model_id: str
    layer: int
    pooling: str
    """``request`` (the hidden state at the request's last token, before any forced assistant text) or
    ``last`` (at the last template token)."""
    head: LinearHead
    threshold: float
    """Refuse where the risk is at least this (set on dev look-alikes)."""
    info: dict[str, Any] = field(default_factory=dict)
    """How it was trained and what it scored (selection, dev and held-out figures)."""

    def __post_init__(self) -> None:
        if self.pooling not in GATE_POOLINGS:
            raise ValueError(f"request gate pooling must be one of {GATE_POOLINGS}, got {self.pooling!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"request gate threshold must be in (0, 1), got {self.threshold}")

    def risk_of(self, state: DecodeState, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(R,) risk of ``rows`` of a decoding state that captured :attr:`layer` with history (no forward)."""
        picked = None if rows is None else [int(r) for r in rows]
        return self.head.risk(state.features(self.layer, self.pooling, picked))

    def risk(self, lm: LanguageModel, prompts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """(len(prompts),) risk of each request: one prefill forward per ``batch_size`` prompts."""
        key = (self.pooling, self.layer)
        return self.head.risk(request_features(lm, list(prompts), [key], batch_size)[key])

    def first_refusal(self, prompts: Sequence[str], ctx: Any) -> np.ndarray:
        """The gate's score of each prompt, for ``critic-search``'s gate (the run's model)."""
        return self.risk(ctx.lm, prompts)

    def to_dict(self) -> dict:
        return {"kind": KIND, "model_id": self.model_id, "layer": self.layer, "pooling": self.pooling,
                "threshold": self.threshold, "info": self.info, "head": self.head.to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write the gate as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RequestGate:
        """Read a gate file; a file of another kind is an error naming it."""
        fix = "retrain it: python train.py gate"
        data = read_json_file(path, "request gate", fix)
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"{str(path)!r} is not a request gate (kind {data.get('kind') if isinstance(data, dict) else None!r}); {fix}")
        return cls(str(data["model_id"]), int(data["layer"]), str(data["pooling"]), LinearHead.from_dict(data["head"]),
                   float(data["threshold"]), dict(data.get("info") or {}))


def request_features(lm: LanguageModel, prompts: list[str], keys: list[tuple[str, int]],
                     batch_size: int = 32) -> dict[tuple[str, int], np.ndarray]:
    """(pooling, layer) -> (N, H) float32 request features of ``prompts``: one prefill of the chat-formatted
    requests per batch (similar lengths together), nothing decoded. Captures each layer with history."""
    from latentguard.guards.probe import prefill_answers

    for layer in {layer for _, layer in keys}:
        lm.capture_layer(layer, history=True)
    out = {key: np.zeros((len(prompts), lm.hidden_size), np.float32) for key in keys}
    order = np.argsort([len(p) for p in prompts])  # similar lengths together: less padding
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            idx = order[start:start + batch_size]
            state = prefill_answers(lm, [prompts[i] for i in idx], [""] * len(idx))
            for pooling, layer in keys:
                out[pooling, layer][idx] = state.features(layer, pooling).float().cpu().numpy()
    return out


def cached_gate_path(model_id: str) -> Path:
    """Where ``train.py gate`` writes the gate of ``model_id`` (the user cache)."""
    return user_cache_dir() / "gates" / slug(model_id) / f"{KIND}.json"


def load_request_gate(model_id: str, path: str = "") -> RequestGate:
    """The request gate for ``model_id``: ``path`` if given, else the user cache's, else the shipped one."""
    candidates = [Path(path)] if path else [cached_gate_path(model_id), pretrained_path(model_id, KIND)]
    for candidate in candidates:
        if candidate.is_file():
            gate = RequestGate.read(candidate)
            if gate.model_id != model_id:
                raise ValueError(f"the request gate {str(candidate)!r} was trained for {gate.model_id!r}, not "
                                 f"{model_id!r}; train one for this model: python train.py gate --model {model_id}")
            return gate
    raise FileNotFoundError(f"no request gate for {model_id!r} (looked in {', '.join(map(str, candidates))}); "
                            f"train one: python train.py gate --model {model_id}")
