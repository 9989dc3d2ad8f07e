"""A latent safety probe: a logistic head on the policy's own hidden states.

``risk = sigmoid(w . (x - mu) / sigma + b)`` where ``x`` is the policy's hidden state at one layer,
pooled over the response so far (``mean``), taken at the last response token (``last``), at the
request's last token (``request``: what the policy computed at prefill), the mean and the request
side by side (``mean+request``), or an attention-pooled response beside the request
(``attention+request``: a learned query ``q`` weights the response tokens by ``softmax_i(h_i . q)``,
:meth:`latentguard.lm.DecodeState.attention_pooled`; McKenzie et al. 2025 found attention-pooled
probes the best of their probes out of distribution).

- During decoding (:meth:`LatentProbe.score_state`) ``x`` is read from the decoding state the
  policy already computed: zero extra forward passes.
- Standalone (:meth:`LatentProbe.score`, e.g. as an evaluation judge) the probe runs the policy
  model once over prompt + response to get ``x``; an empty response is judged on the prompt's
  last latent.

Saved as ``probe.safetensors`` + ``probe.json`` (model id, layer, pooling, latent size, threshold);
attaching it to a different model, layer or latent size is an error, never a silent mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from latentguard.guards.base import Guard
from latentguard.guards.linear_head import LinearHead
from latentguard.lm.state import FEATURE_POOLINGS, feature_width

PROBE_POOLINGS = (*FEATURE_POOLINGS, "attention+request")
"""What a probe may read: the shared poolings, and the attention-pooled response beside the request."""

if TYPE_CHECKING:
    from latentguard.lm import DecodeState, LanguageModel


@dataclass
class ProbeConfig:
    """What a probe reads; saved beside its weights."""

    model_id: str
    """The policy model whose latents the probe reads."""
    layer: int
    """Hidden-state index (0 = embeddings, num_layers = final normed state)."""
    pooling: str
    """``mean`` over the response tokens so far, ``last`` response token, ``request`` (last prompt
    token), ``mean+request`` (both, concatenated) or ``attention+request`` (attention-pooled response
    and request, concatenated; needs ``query``)."""
    hidden_size: int
    """Latent size of the policy at that layer (the head reads twice as many for ``mean+request``)."""
    threshold: float = 0.5
    """Operating point: risk >= threshold is flagged."""
    info: dict = field(default_factory=dict)
    """Training record (data, regularisation, selection, metrics summary)."""
    query: list[float] | None = None
    """The attention query (``hidden_size`` values) of ``attention+request``; None for the other poolings."""


class LatentProbe(Guard):
    """A logistic probe on one layer of the policy's latents (see the module docstring)."""

    name = "latent-probe"

    @property
    def lineage(self) -> frozenset[str]:
        """The policy's latents, and what labelled its training answers (``info["labels"]``): the
        refusal-marker rule (also every probe from before that record), or ``labeller:JUDGE``, so
        that the judge that made a probe's labels is never taken for an independent measure of it."""
        labels = self.config.info.get("labels", "refusal")
        made_by = "rule:refusal-markers" if labels in ("refusal", "refusal-markers") else f"labeller:{labels}"
        return frozenset({"features:policy-latents", made_by})

    def __init__(self, config: ProbeConfig, head: LinearHead) -> None:
        if config.pooling not in PROBE_POOLINGS:
            raise ValueError(f"probe pooling must be one of {PROBE_POOLINGS}, got {config.pooling!r}")
        attention = config.pooling == "attention+request"
        if attention != (config.query is not None) or (attention and len(config.query or ()) != config.hidden_size):
            raise ValueError(f"pooling {config.pooling!r} needs a query of {config.hidden_size} values exactly when it "
                             f"is attention+request, got {None if config.query is None else len(config.query)}")
        width = 2 * config.hidden_size if attention else feature_width(config.pooling, config.hidden_size)
        if head.dim != width:
            raise ValueError(f"probe head reads {head.dim} features, but pooling {config.pooling!r} of hidden size "
                             f"{config.hidden_size} gives {width}")
        self.config = config
        self.head = head
        self.query = None if config.query is None else torch.tensor(config.query, dtype=torch.float32)  # (H,)
        self.threshold = float(config.threshold)
        self.lm: LanguageModel | None = None
        self.forwards = 0  # forwards this probe ran itself (stays 0 during decoding)

    # ------------------------------------------------------------------ scoring
    def features_from_state(self, state: DecodeState, rows: Sequence[int]) -> torch.Tensor:
        """(R, H) latents of ``rows`` read from a decoding state (no forward); (R, 2H) for ``mean+request``
        and ``attention+request``."""
        if self.query is not None:
            layer = self.config.layer
            return torch.cat([state.attention_pooled(layer, self.query, rows), state.prompt_latent(layer, rows)], -1)
        return state.features(self.config.layer, self.config.pooling, rows)

    def score_state(self, prompts, responses, state=None, rows=None) -> np.ndarray:
        if state is None or state.lm is not self.lm:
            return self.score(prompts, responses)
        rows = list(range(state.batch_size)) if rows is None else list(rows)
        return self.head.risk(self.features_from_state(state, rows))

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Risk of each (prompt, response): one forward of the policy model per batch."""
        lm = self._ensure_lm()
        out = []
        for start in range(0, len(prompts), batch_size):
            ps, rs = prompts[start : start + batch_size], responses[start : start + batch_size]
            state = prefill_answers(lm, ps, rs)
            self.forwards += 1
            out.append(self.head.risk(self.features_from_state(state, range(len(ps)))))
        return np.concatenate(out) if out else np.zeros(0)

    # ------------------------------------------------------------------ the policy model
    def attach(self, lm: LanguageModel) -> None:
        """Read latents from ``lm``; it must be the model the probe was trained on."""
        cfg = self.config
        lm.check_reader("probe", cfg.model_id, cfg.hidden_size, cfg.layer,
                        f"train one for it with: python train.py guard --model {lm.model_id}")
        lm.capture_layer(cfg.layer, history=cfg.pooling != "last")
        self.head = self.head.to(lm.device)
        self.lm = lm

    def _ensure_lm(self) -> LanguageModel:
        if self.lm is None:
            from latentguard.lm import load_lm

            lm = load_lm(self.config.model_id)
            LatentProbe.attach(self, lm)  # its own model (a ModelProbe ignores the policy's)
            return lm
        return self.lm

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``probe.safetensors`` + ``probe.json`` into ``folder`` (atomically)."""
        return self.head.save(folder, "probe", asdict(self.config))

    @classmethod
    def load(cls, folder: str | Path) -> LatentProbe:
        """Load a probe saved by :meth:`save`."""
        head, config = LinearHead.load(folder, "probe")
        return cls(ProbeConfig(**config), head)


class ModelProbe(LatentProbe):
    """A probe on a *second* model's latents: it reads request + answer with its own model (one
    forward per batch, its cost), never the policy's decoding state, so it may sit beside any policy,
    e.g. as the second stage of a cascade (``cascade(latent-probe, model-probe:PATH, ...)``).

    Same files as :class:`LatentProbe`; ``config.model_id`` names the model it runs.
    """

    name = "model-probe"

    @property
    def lineage(self) -> frozenset[str]:
        """Its model's latents, and what labelled its training answers."""
        return (super().lineage - {"features:policy-latents"}) | {f"features:latents:{self.config.model_id}"}

    def attach(self, lm: LanguageModel) -> None:
        """Nothing to take from the policy: its own model loads on first use."""

    def score_state(self, prompts, responses, state=None, rows=None) -> np.ndarray:
        return self.score(prompts, responses)


def prefill_answers(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str], max_tokens: int | None = None):
    """One forward over prompt (chat template) + response text; ``prompt_lengths`` mark the split.

    Responses are cut to ``max_tokens`` tokens when given. Returns the decoding state.
    """
    prompt_ids = [lm.encode_prompt(p) for p in prompts]
    response_ids = [lm.tokenizer(r, add_special_tokens=False).input_ids[:max_tokens] for r in responses]
    state = lm.prefill(token_ids=[p + r for p, r in zip(prompt_ids, response_ids)])
    state.prompt_lengths = torch.as_tensor([len(p) for p in prompt_ids], device=state.ids.device)
    state.forced_lengths = torch.as_tensor([lm.forced_length(p) for p in prompt_ids], device=state.ids.device)  # read as answer
    return state
