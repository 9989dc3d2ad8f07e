"""Shared prompt heads computed once and reused: the prefix cache.

Many rows begin with the same tokens: the chat template's head (its default system prompt) comes
before every request, and CARE's critique prompt has the same ~40 tokens before the request it
quotes. A :class:`PrefixCache` holds, for each registered head, the keys and values of every layer
(and the hidden states of the layers whose history the decoding state keeps), computed once by a
forward of the head alone. When a :class:`~latentguard.lm.DecodeState` starts a row whose prompt
begins with a registered head, it writes those columns into the row's cache and feeds the rest
only (:meth:`~latentguard.lm.DecodeState.feed`).

The head's keys carry the rotary positions 0..P-1 that the row's first P tokens have anyway, so
the row computes what a full prefill computes, up to float rounding in the head's own forward.
Only caches of full-attention layers take heads (:mod:`latentguard.lm.cache`); with others (sliding
windows) nothing is reused and the rows are fed whole, as before.

>>> from latentguard.lm import load_lm
>>> lm = load_lm("tiny")
>>> head = lm.prefixes.add(lm.chat_head_ids())     # one forward of the head, once
>>> state = lm.prefill(["How do I bake bread?", "Hi"])
>>> lm.prefixes.hits, lm.prefixes.tokens_saved == 2 * head.length   # neither row fed the head
(2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latentguard.lm.cache import GrowingLayer
from latentguard.lm.state import DecodeState, DecodingModel


def common_start(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The longest list both ``a`` and ``b`` start with: the head two unrelated prompts share."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return list(a[:n])


@dataclass(frozen=True)
class Prefix:
    """A head's tokens and what a forward computed for them."""

    ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]  # per layer: (1, kv_heads, P, head_dim)
    values: tuple[torch.Tensor, ...]  # per layer: (1, kv_heads, P, head_dim)
    hidden: dict[int, torch.Tensor]  # history layer -> (1, P, H)

    @property
    def length(self) -> int:
        """P, the head's tokens."""
        return len(self.ids)


class PrefixCache:
    """Registered heads of ``lm`` (at most ``max_entries``; adding one more drops the oldest).

    :param min_tokens: shorter heads are not worth a placement and are not kept.
    """

    def __init__(self, lm: DecodingModel, max_entries: int = 8, min_tokens: int = 4) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.lm = lm
        self.max_entries, self.min_tokens = max_entries, min_tokens
        self._entries: dict[tuple[int, ...], Prefix] = {}
        self.enabled = True
        self.hits = 0  # rows started from a head
        self.tokens_saved = 0  # prompt tokens those rows did not feed

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, ids: Sequence[int]) -> Prefix | None:
        """Register the head ``ids`` (one forward, the first time); ``None`` when it is too short to
        keep or this model's cache cannot take heads."""
        key = tuple(int(t) for t in ids)
        if len(key) < self.min_tokens:
            return None
        entry = self._entries.get(key)
        if entry is not None and set(self.lm.history_layers) <= set(entry.hidden):
            return entry
        entry = self._compute(key)
        if entry is None:
            return None
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]
        return entry

    def match(self, chunk: Sequence[int]) -> Prefix | None:
        """The longest registered head that ``chunk`` starts with and is longer than (a row needs one
        token of its own to have logits); ``None`` when there is none."""
        if not self.enabled or not self._entries:
            return None
        best: Prefix | None = None
        for key, entry in self._entries.items():
            n = len(key)
            if n < len(chunk) and (best is None or n > best.length) and tuple(chunk[:n]) == key:
                best = entry
        if best is not None and not set(self.lm.history_layers) <= set(best.hidden):
            best = self.add(best.ids)  # a layer's history was asked for since: compute it again
        return best

    def clear(self) -> None:
        """Forget every head."""
        self._entries.clear()

    def _compute(self, ids: tuple[int, ...]) -> Prefix | None:
        state = DecodeState(self.lm, 1)
        state.feed([list(ids)], restart=[0], prefixes=False)
        every = state.cache.layers if state.cache is not None else []
        layers = [layer for layer in every if isinstance(layer, GrowingLayer)]
        if not layers or len(layers) != len(every):
            return None
        keys = tuple(layer.kv()[0].clone() for layer in layers)  # (1, heads, P, head_dim) each
        values = tuple(layer.kv()[1].clone() for layer in layers)
        hidden = {layer: h[:, : len(ids)].clone() for layer, h in state._history.items()}  # (1, P, H)
        return Prefix(ids, keys, values, hidden)
