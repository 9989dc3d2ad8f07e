"""Attention-pooled probes: a learned query over the response's tokens, beside the request latent.

The shipped probe reads ``mean+request``: the mean of one layer's hidden states over the answer so
far, beside the request's last token. An attention-pooled probe replaces the mean by
``sum_i softmax_i(h_i . q) h_i`` with a learned query ``q`` (McKenzie et al. 2025: attention pooling
was their best probe out of distribution), so that a few telling tokens ("Step 1: acquire ...") are
not averaged away by the rest. A zero query is the mean, so training starts from the mean probe.

Recipe (:func:`train_attention_probe`):

1. the guard's training answers (:func:`latentguard.training.guard_training.split_answers`: the same
   cached shards as ``train.py guard``) and their labels (the labelling judge's verdicts);
2. each answer's per-token hidden states, from one forward of the policy over request + answer
   (:func:`token_latents`), for every candidate layer;
3. candidates (layer x pooling x C) scored by **category-grouped** cross-validation on the train split:
   no fold sees the harm category (or the look-alike's category) it is scored on, so CV estimates
   what a held-out category will see; ``mean+request`` is fitted by the same folds as the baseline;
4. the best candidate is refitted on all train answers, its threshold chosen on its out-of-fold risks
   as the shipped probe's was, and it is reported on the dev and held-out splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from latentguard.common.metrics import safe_auroc, tpr_at_fpr
from latentguard.guards.linear_head import LinearHead
from latentguard.guards.probe import LatentProbe, ProbeConfig, prefill_answers
from latentguard.lm import LanguageModel
from latentguard.training.probe_training import fit_head

POOLINGS = ("mean+request", "attention+request")


@dataclass
class TokenLatents:
    """Per-token hidden states of N answers: ``hidden[layer]`` (N, T, H) float32 (some models, e.g. Gemma,
    have states beyond float16), left-aligned and
    zero-padded past ``lengths``; ``request[layer]`` (N, H) the request's last-token state."""

    hidden: dict[int, np.ndarray]
    request: dict[int, np.ndarray]
    lengths: np.ndarray  # (N,) response tokens read


def token_latents(lm: LanguageModel, prompts: Sequence[str], texts: Sequence[str], layers: Sequence[int],
                  max_tokens: int = 64, batch_size: int = 16) -> TokenLatents:
    """One forward per batch over request + answer (cut to ``max_tokens`` tokens)."""
    layers = [lm.capture_layer(layer, history=True) for layer in layers]
    n = len(prompts)
    hidden = {layer: np.zeros((n, max_tokens, lm.hidden_size), np.float32) for layer in layers}
    request = {layer: np.zeros((n, lm.hidden_size), np.float32) for layer in layers}
    lengths = np.zeros(n, np.int64)
    for start in range(0, n, batch_size):
        state = prefill_answers(lm, prompts[start : start + batch_size], texts[start : start + batch_size], max_tokens)
        for layer in layers:
            states, response = state.response_states(layer)  # (B, T, H), (B, T)
            request[layer][start : start + len(states)] = state.prompt_latent(layer).float().cpu().numpy()
            for row in range(len(states)):
                tokens = states[row][response[row]].float().cpu().numpy()  # (L, H)
                hidden[layer][start + row, : len(tokens)] = tokens
                lengths[start + row] = len(tokens)
    return TokenLatents(hidden, request, lengths)


@dataclass
class Rows:
    """Training rows: one per (answer, prefix)."""

    answer: np.ndarray  # (R,) index into the answers
    prefix: np.ndarray  # (R,) tokens of the answer the row reads
    y: np.ndarray  # (R,) 1 = unsafe
    weight: np.ndarray  # (R,) fitting weight
    group: np.ndarray  # (R,) CV group (the request's category)
    harmful_request: np.ndarray  # (R,) bool
    lookalike: np.ndarray  # (R,) bool

    def select(self, index: np.ndarray) -> Rows:
        return Rows(*(getattr(self, k)[index] for k in ("answer", "prefix", "y", "weight", "group",
                                                         "harmful_request", "lookalike")))


class AttentionProbeModel(torch.nn.Module):
    """``sigmoid(w . ((pool_q(h) ++ r) - mean) / scale + b)`` over per-token states ``h``, where
    ``pool_q`` is a softmax over the first ``prefix`` tokens of ``(h - mu_h) / sd_h . q``."""

    mean: torch.Tensor  # (2H,) buffers: the head's standardisation and the token standardisation
    scale: torch.Tensor
    mu_h: torch.Tensor  # (H,)
    sd_h: torch.Tensor

    def __init__(self, head: LinearHead, mu_h: torch.Tensor, sd_h: torch.Tensor) -> None:
        super().__init__()
        self.query = torch.nn.Parameter(torch.zeros_like(mu_h))  # (H,): zero = the mean
        self.weight = torch.nn.Parameter(head.weight.clone())  # (2H,)
        self.bias = torch.nn.Parameter(head.bias.clone())
        self.register_buffer("mean", head.mean.clone())
        self.register_buffer("scale", head.scale.clone())
        self.register_buffer("mu_h", mu_h)
        self.register_buffer("sd_h", sd_h)

    def pooled(self, hidden: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
        """(R, H) from ``hidden`` (R, T, H) and ``take`` (R, T) bool (the tokens each row reads)."""
        scale = self.query / self.sd_h  # (H,): ((h - mu_h) / sd_h) . q without a standardised copy of h
        scores = hidden @ scale - self.mu_h @ scale  # (R, T)
        weights = torch.softmax(scores.masked_fill(~take, -1e9), dim=-1) * take  # (R, T)
        return torch.einsum("rt,rth->rh", weights, hidden)

    def forward(self, hidden: torch.Tensor, take: torch.Tensor, request: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.pooled(hidden, take), request], dim=-1)  # (R, 2H)
        return ((x - self.mean) / self.scale) @ self.weight + self.bias  # (R,) logits

    def inference_query(self) -> torch.Tensor:
        """(H,) the query on raw states: ``h . (q / sd_h)`` differs from the training score by a constant."""
        return (self.query / self.sd_h).detach()


def _take(rows: Rows, lengths: np.ndarray, width: int) -> torch.Tensor:
    """(R, T) bool: the tokens each row reads (its prefix of the answer)."""
    upto = np.minimum(rows.prefix, lengths[rows.answer])  # (R,)
    return torch.as_tensor(np.arange(width)[None, :] < upto[:, None])


def mean_features(latents: TokenLatents, layer: int, rows: Rows) -> np.ndarray:
    """(R, 2H) ``mean+request`` of each row: the mean over its prefix beside the request."""
    take = _take(rows, latents.lengths, latents.hidden[layer].shape[1]).numpy()  # (R, T)
    hidden = latents.hidden[layer][rows.answer].astype(np.float32)  # (R, T, H)
    mean = (hidden * take[..., None]).sum(1) / np.maximum(take.sum(1, keepdims=True), 1)
    return np.concatenate([mean, latents.request[layer][rows.answer]], axis=-1)


def fit_attention(latents: TokenLatents, layer: int, rows: Rows, c: float, rounds: int = 2, steps: int = 100,
                  lr: float = 0.02, query_l2: float = 1e-3, seed: int = 0) -> AttentionProbeModel:
    """Fit query and head on ``rows`` by alternating, from the mean probe (a zero query):

    1. the query, by Adam on the weighted logistic loss (sklearn's class balance) with the head fixed;
    2. the head, refitted by :func:`latentguard.training.probe_training.fit_head` (L2 logistic
       regression, inverse strength ``c``) on the features pooled with that query.

    The head stays the regularised solution sklearn finds; only the query is learned by gradient.
    """
    torch.manual_seed(seed)
    w, b, mu, sigma = fit_head(mean_features(latents, layer, rows), rows.y, rows.weight, c)
    hidden = torch.as_tensor(latents.hidden[layer][rows.answer]).float()  # (R, T, H)
    take = _take(rows, latents.lengths, hidden.shape[1])
    tokens = hidden[take]  # (tokens, H)
    model = AttentionProbeModel(LinearHead.from_numpy(w, b, mu, sigma), tokens.mean(0), tokens.std(0).clamp_min(1e-4))
    request = torch.as_tensor(latents.request[layer][rows.answer]).float()
    y = torch.as_tensor(rows.y, dtype=torch.float32)
    balance = len(rows.y) / (2 * np.bincount(rows.y, minlength=2)[rows.y])  # sklearn's class_weight="balanced"
    weight = torch.as_tensor(rows.weight * balance, dtype=torch.float32)
    for _ in range(rounds):
        model.weight.requires_grad_(False)
        model.bias.requires_grad_(False)
        optimizer = torch.optim.Adam([model.query], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            logits = model(hidden, take, request)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weight, reduction="sum")
                    / weight.sum() + query_l2 * model.query.square().sum())
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            x = torch.cat([model.pooled(hidden, take), request], -1).numpy()  # (R, 2H)
        w, b, mu, sigma = fit_head(x, rows.y, rows.weight, c)
        head = LinearHead.from_numpy(w, b, mu, sigma)
        with torch.no_grad():
            model.weight.copy_(head.weight)
            model.bias.copy_(head.bias)
            model.mean.copy_(head.mean)
            model.scale.copy_(head.scale)
    return model


def predict_rows(model: AttentionProbeModel | LinearHead, latents: TokenLatents, layer: int, rows: Rows) -> np.ndarray:
    """(R,) risk of each row under an attention model or a ``mean+request`` head."""
    if isinstance(model, LinearHead):
        return model.risk(mean_features(latents, layer, rows))
    hidden = torch.as_tensor(latents.hidden[layer][rows.answer]).float()
    take = _take(rows, latents.lengths, hidden.shape[1])
    with torch.no_grad():
        return torch.sigmoid(model(hidden, take, torch.as_tensor(latents.request[layer][rows.answer]).float())).numpy()


def fit(pooling: str, latents: TokenLatents, layer: int, rows: Rows, c: float) -> AttentionProbeModel | LinearHead:
    """A ``mean+request`` head or an attention model fitted on ``rows``."""
    if pooling == "mean+request":
        return LinearHead.from_numpy(*fit_head(mean_features(latents, layer, rows), rows.y, rows.weight, c))
    return fit_attention(latents, layer, rows, c)


def vs_benign(risk: np.ndarray, rows: Rows) -> dict[str, float]:
    """Unsafe rows against rows answering benign requests: AUROC and TPR at FPR <= 0.05."""
    keep = (rows.y == 1) | ~rows.harmful_request
    return {"auroc_vs_benign": safe_auroc(rows.y[keep], risk[keep]),
            "tpr_at_fpr_05": tpr_at_fpr(risk[keep], rows.y[keep] == 1, 0.05)[0]}


def grouped_cv(pooling: str, latents: TokenLatents, layer: int, rows: Rows, c: float, folds: int = 5) -> np.ndarray:
    """(R,) out-of-fold risks, folds grouped by ``rows.group`` (whole categories out)."""
    oof = np.zeros(len(rows.y))
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(rows.y, rows.y, rows.group):
        model = fit(pooling, latents, layer, rows.select(train_idx), c)
        oof[test_idx] = predict_rows(model, latents, layer, rows.select(test_idx))
    return oof


def to_probe(model: AttentionProbeModel | LinearHead, pooling: str, lm: LanguageModel, layer: int,
             threshold: float, info: dict, cls: type[LatentProbe] = LatentProbe) -> LatentProbe:
    """The fitted model as a probe reading ``lm`` (``cls``: :class:`~latentguard.guards.probe.LatentProbe`
    for the policy's own latents, :class:`~latentguard.guards.probe.ModelProbe` for a second model's)."""
    if isinstance(model, LinearHead):
        return cls(ProbeConfig(lm.model_id, layer, pooling, lm.hidden_size, threshold, info), model)
    head = LinearHead(model.weight.detach(), model.bias.detach(), model.mean, model.scale)
    query = model.inference_query().tolist()
    return cls(ProbeConfig(lm.model_id, layer, pooling, lm.hidden_size, threshold, info, query), head)
