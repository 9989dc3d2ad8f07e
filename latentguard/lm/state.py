"""A batch of sequences being decoded, with the KV cache inside.

:class:`DecodeState` is what the episode engine (:mod:`latentguard.episodes.engine`) drives: it steps it one token
per row, selects and repeats its rows for beams and candidates, crops it back to the released text
and splices an introspection into it. Every operation is one batched forward at most.

Layout: the cache, ``ids`` and ``mask`` share one time axis of width ``T``. Prompts are left-padded
(``mask == 0`` on the left). Tokens cropped from some rows but not others are masked out in place
(``mask == 0`` in the middle); trailing columns masked in every row are physically cropped from the
cache, and a cache grown twice as wide as its longest row (restarted rows) is repacked. Positions (for RoPE) are counted over real tokens only, so a masked slot changes nothing:
stepping after a crop gives the same logits as a fresh prefill of the shorter text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicCache

from latentguard.lm.cache import GrowingLayer, forward_rows, use_growing_layers

if TYPE_CHECKING:
    from transformers import PreTrainedConfig


class DecodingModel(Protocol):
    """What a :class:`DecodeState` needs of its model (:class:`latentguard.lm.LanguageModel` has it all)."""

    tokenizer: Any
    pad_token_id: int
    eos_token_ids: frozenset[int]  # read by the sampling loop (latentguard.lm.generate.sample_steps)
    context_length: int
    latent_layer: int
    history_layers: set[int]

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def device(self) -> torch.device: ...

    def normalise_layer(self, layer: int) -> int: ...

    def forced_length(self, ids: Sequence[int]) -> int: ...  # forced assistant tokens the prompt ``ids`` ends with

    def capture_layer(self, layer: int, history: bool = False) -> int: ...

    def pop_captured(self) -> dict[int, torch.Tensor]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


FEATURE_POOLINGS = ("mean", "last", "request", "mean+request")
"""How a reader pools a layer's latents (:meth:`DecodeState.features`): the mean over the response
so far, its last token, the request's last prompt token (computed at prefill), or the response mean
and the request side by side."""


def feature_width(pooling: str, hidden_size: int) -> int:
    """Width of :meth:`DecodeState.features` for ``pooling``."""
    return hidden_size * (2 if pooling == "mean+request" else 1)


class DecodeState:
    """A batch of ``B`` rows: prompt + response so far, next-token logits and latents per row.

    Build one with :meth:`latentguard.lm.LanguageModel.prefill`. Attributes (read-only for callers):

    - ``ids`` (B, T) int64 and ``mask`` (B, T) int64: tokens aligned with the KV cache;
    - ``lengths`` (B,): real tokens per row; ``prompt_lengths`` (B,): of which the prompt;
    - ``request_lengths`` (B,): of the prompt, the request before any forced assistant text (the
      prefill attack's "Sure, here is"). Readers (probes, critics) take the request latent at its
      last token and count the forced text as answer, as they read the answer text a reader sees;
    - ``logits`` (B, V): next-token logits after each row's last real token;
    - ``tokens_fed``: how many tokens went through the model (all rows, pads excluded);
    - ``positions_run``: how many positions the forwards computed (pads included): the cost.
    """

    def __init__(self, lm: DecodingModel, batch_size: int) -> None:
        self.lm = lm
        device = lm.device
        self.ids = torch.zeros((batch_size, 0), dtype=torch.long, device=device)  # (B, T)
        self.mask = torch.zeros((batch_size, 0), dtype=torch.long, device=device)  # (B, T)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.prompt_lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.forced_lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,) prompt's forced tail
        self._logits: torch.Tensor | None = None  # (B, V), set by the first forward
        self.cache: Cache | None = None  # transformers Cache, created by the first forward
        self._latents: dict[int, torch.Tensor] = {}  # layer -> (B, H)
        self._history: dict[int, torch.Tensor] = {}  # layer -> (B, capacity >= T, H), opt-in
        self.tokens_fed = 0
        self.positions_run = 0

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        """Number of rows."""
        return self.ids.shape[0]

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) tokens after the prompt in each row (generated or appended)."""
        return self.lengths - self.prompt_lengths

    @property
    def request_lengths(self) -> torch.Tensor:
        """(B,) prompt tokens before the forced assistant text each prompt ends with (the prefill
        attack's "Sure, here is"; none normally): readers take the request latent at the last of them
        and read the forced text as answer."""
        return self.prompt_lengths - self.forced_lengths

    @property
    def logits(self) -> torch.Tensor:
        """(B, V) next-token logits after each row's last real token (set by the first forward)."""
        if self._logits is None:
            raise RuntimeError("this DecodeState has no logits yet: feed it a prompt first (LanguageModel.prefill)")
        return self._logits

    # ------------------------------------------------------------------ forward
    def step(self, tokens: torch.Tensor | Sequence[int]) -> None:
        """Append one token to every row with a single forward; updates logits and latents."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.ids.device)
        if tokens.shape != (self.batch_size,):
            raise ValueError(f"step needs one token per row: shape ({self.batch_size},), got {tuple(tokens.shape)}")
        self._check_context(1)
        self._forward(tokens[:, None], torch.ones_like(tokens)[:, None], n_real=self.batch_size, all_fed=True)

    def feed(self, chunks: Sequence[Sequence[int]], restart: Sequence[int] = (), prefixes: bool = True) -> None:
        """Append a token list to each row (an empty list leaves the row as it is), one forward.

        Chunks are right-aligned (left-padded), so every fed row ends on the last column; rows
        with nothing to feed keep their logits and latents. Rows listed in ``restart`` forget
        everything they held and take their chunk as a new prompt (an environment reset that
        shares the forward with the other rows' steps); their old cache slots are masked out and
        the cache is repacked (:meth:`compact`) once it is twice as wide as the longest row.
        A restarted prompt that begins with a head in the model's prefix cache
        (:mod:`latentguard.lm.prefix`; ``prefixes=False`` skips it) gets the head's columns written
        in and feeds the rest only.
        """
        if len(chunks) != self.batch_size:
            raise ValueError(f"feed needs one token list per row ({self.batch_size}), got {len(chunks)}")
        restart = sorted(set(int(r) for r in restart))
        for row in restart:
            if not chunks[row]:
                raise ValueError(f"row {row} is restarted with an empty prompt; give it at least one token")
        width = max((len(c) for c in chunks), default=0)
        if width == 0:
            return
        if restart:
            rows = torch.as_tensor(restart, device=self.ids.device)
            self.mask = self.mask.index_fill(0, rows, 0)
            self.lengths = self.lengths.index_fill(0, rows, 0)
        self._check_context(width)
        fed = self._place_heads(chunks, restart) if restart and prefixes else chunks
        for group in self._groups([len(c) for c in fed]):
            self._feed_rows(group, [fed[r] for r in group])
        if restart:
            self.prompt_lengths = self.prompt_lengths.index_copy(0, rows, self.lengths[rows])
            forced = [self.lm.forced_length(chunks[r]) for r in restart]
            self.forced_lengths = self.forced_lengths.index_copy(0, rows, torch.as_tensor(forced, device=rows.device))
            if self.ids.shape[1] > 2 * int(self.lengths.max()):
                self.compact()

    def _place_heads(self, chunks: Sequence[Sequence[int]], restart: Sequence[int]) -> Sequence[Sequence[int]]:
        """Write the cached heads of the restarted rows whose prompt begins with one (one block of
        columns, each head right-aligned in it, no forward); returns the chunks left to feed."""
        store = getattr(self.lm, "prefixes", None)
        heads = {r: store.match(chunks[r]) for r in restart} if store is not None else {}
        heads = {r: h for r, h in heads.items() if h is not None}
        cache = self.cache if self.cache is not None else self._new_cache()  # a fresh state: the heads make it
        if not heads or not use_growing_layers(cache):  # full-attention layers only (no sliding windows)
            return chunks
        assert store is not None
        rows = sorted(heads)
        width = max(h.length for h in heads.values())
        device = self.ids.device
        index = torch.as_tensor(rows, dtype=torch.long, device=device)  # (R,)
        ids = torch.full((self.batch_size, width), self.lm.pad_token_id, dtype=torch.long, device=device)  # (B, P)
        mask = torch.zeros((self.batch_size, width), dtype=torch.long, device=device)  # (B, P)
        first = next(iter(heads.values()))
        blocks = [(k.new_zeros((len(rows), k.shape[1], width, k.shape[3])),  # per layer: (R, heads, P, head_dim)
                   v.new_zeros((len(rows), v.shape[1], width, v.shape[3]))) for k, v in zip(first.keys, first.values)]
        hidden = {layer: first.hidden[layer].new_zeros((len(rows), width, first.hidden[layer].shape[2]))
                  for layer in self.lm.history_layers}  # (R, P, H)
        for j, row in enumerate(rows):
            head = heads[row]
            cols = slice(width - head.length, width)
            ids[row, cols] = torch.as_tensor(head.ids, device=device)
            mask[row, cols] = 1
            for (kb, vb), k, v in zip(blocks, head.keys, head.values):
                kb[j, :, cols], vb[j, :, cols] = k[0], v[0]
            for layer, h in hidden.items():
                h[j, cols] = head.hidden[layer][0]
            store.hits += 1
            store.tokens_saved += head.length
        self.cache = cache
        with torch.inference_mode():
            for cache_layer, (kb, vb) in zip(cache.layers, blocks):
                assert isinstance(cache_layer, GrowingLayer)  # use_growing_layers made them so
                if cache_layer.is_initialized:
                    cache_layer.append(kb, vb, rows=index)
                else:  # the first columns of a fresh cache: rows without a head get zeros
                    keys = kb.new_zeros((self.batch_size, *kb.shape[1:]))
                    values = vb.new_zeros((self.batch_size, *vb.shape[1:]))
                    keys[index], values[index] = kb, vb
                    cache_layer.update(keys, values)
        self._record_history(hidden, index)
        self.ids = torch.cat([self.ids, ids], dim=-1)
        self.mask = torch.cat([self.mask, mask], dim=-1)
        self.lengths = self.lengths + mask.sum(-1)
        return [chunks[r][heads[r].length:] if r in heads else chunks[r] for r in range(self.batch_size)]

    def _new_cache(self) -> Cache:
        """An empty cache of the kind the model makes."""
        return DynamicCache(config=cast("PreTrainedConfig", self.lm.model.config))

    def append_text(self, texts: Sequence[str | None]) -> None:
        """Tokenize and append ``texts[i]`` to row ``i`` (``None``/``""`` skips the row)."""
        if len(texts) != self.batch_size:
            raise ValueError(f"append_text needs one text per row ({self.batch_size}), got {len(texts)}")
        tok = self.lm.tokenizer
        self.feed([tok(t, add_special_tokens=False).input_ids if t else [] for t in texts])

    def _groups(self, lengths: Sequence[int]) -> list[list[int]]:
        """Rows to feed, in forwards: one padded forward over all rows, or, once the cache can be
        split by row (growing layers, :mod:`latentguard.lm.cache`), one forward for the rows fed one token
        (steps) and one for the rows fed more (prompts, splices), each over those rows only.
        Padding a step row to a 40-token splice, or feeding a row that is fed nothing, costs a full
        forward per padded position; the split costs one more pass of the model's weights."""
        fed = [r for r, n in enumerate(lengths) if n]
        if self.cache is None or not use_growing_layers(self.cache):
            return [list(range(self.batch_size))]
        groups = [[r for r in fed if lengths[r] == 1], [r for r in fed if lengths[r] > 1]]
        return [g for g in groups if g]

    def _feed_rows(self, rows: list[int], chunks: Sequence[Sequence[int]]) -> None:
        """One forward that appends ``chunks[j]`` to row ``rows[j]``; the other rows get masked
        columns and keep their logits and latents."""
        width = max(len(c) for c in chunks)
        ids = torch.full((len(rows), width), self.lm.pad_token_id, dtype=torch.long)  # (R, L)
        new_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (R, L)
        for j, chunk in enumerate(chunks):
            if len(chunk):
                ids[j, width - len(chunk) :] = torch.as_tensor(list(chunk), dtype=torch.long)
                new_mask[j, width - len(chunk) :] = 1
        device = self.ids.device
        ids, new_mask = ids.to(device), new_mask.to(device)
        n_real = sum(len(c) for c in chunks)
        if len(rows) == self.batch_size:
            self._forward(ids, new_mask, n_real=n_real, all_fed=all(len(c) for c in chunks))
            return
        index = torch.as_tensor(rows, dtype=torch.long, device=device)  # (R,)
        full_ids = torch.full((self.batch_size, width), self.lm.pad_token_id, dtype=torch.long, device=device)
        full_mask = torch.zeros((self.batch_size, width), dtype=torch.long, device=device)  # (B, L)
        full_ids[index], full_mask[index] = ids, new_mask
        positions = (self.lengths[index, None] + new_mask.cumsum(-1) - 1).clamp_min(0)  # (R, L)
        mask = torch.cat([self.mask, full_mask], dim=-1)  # (B, T + L)
        out, hidden = self._run(ids, mask[index], positions, index)
        self._record_history(hidden, index)
        self._logits = self.logits.index_copy(0, index, out.logits[:, -1, :].to(self.logits.dtype))
        self._latents = {k: self._latents[k].index_copy(0, index, v[:, -1, :].to(self._latents[k].dtype))
                         for k, v in hidden.items()}
        self.ids = torch.cat([self.ids, full_ids], dim=-1)
        self.mask = mask
        self.lengths = self.lengths + full_mask.sum(-1)
        self.tokens_fed += n_real
        self.positions_run += ids.numel()

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, index: torch.Tensor):
        """The model's forward over rows ``index`` of the cache only (:func:`latentguard.lm.cache.forward_rows`)."""
        out = forward_rows(self.lm.model, self.cache, index, input_ids=ids, attention_mask=mask,
                           position_ids=positions, logits_to_keep=1)
        return out, self.lm.pop_captured()

    def _forward(self, ids: torch.Tensor, new_mask: torch.Tensor, n_real: int, all_fed: bool) -> None:
        # ids, new_mask: (B, L); positions count real tokens only.
        positions = (self.lengths[:, None] + new_mask.cumsum(-1) - 1).clamp_min(0)  # (B, L)
        mask = torch.cat([self.mask, new_mask], dim=-1)  # (B, T + L)
        with torch.inference_mode():
            out = self.lm.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1, :]  # (B, V)
        hidden = self.lm.pop_captured()  # layer -> (B, L, H)
        self._record_history(hidden)
        latents = {k: v[:, -1, :] for k, v in hidden.items()}  # layer -> (B, H)
        if not all_fed:  # rows that were fed nothing keep what they had
            fed = new_mask[:, -1].bool()  # (B,)
            logits = torch.where(fed[:, None], logits, self.logits)
            latents = {k: torch.where(fed[:, None], v, self._latents[k]) for k, v in latents.items()}
        self.cache = out.past_key_values
        use_growing_layers(self.cache)  # later appends write in place
        self.ids = torch.cat([self.ids, ids], dim=-1)
        self.mask = mask
        self.lengths = self.lengths + new_mask.sum(-1)
        self._logits = logits
        self._latents = latents
        self.tokens_fed += n_real
        self.positions_run += ids.numel()

    def _record_history(self, hidden: dict[int, torch.Tensor], index: torch.Tensor | None = None) -> None:
        """Write the new columns of history layers at [T, T + L) of all rows, or of rows ``index``
        (capacity doubles as needed)."""
        start = self.ids.shape[1]
        for layer in self.lm.history_layers:
            chunk = hidden[layer]  # (B, L, H), or (R, L, H) with index
            buf = self._history.get(layer)
            end = start + chunk.shape[1]
            if buf is None or buf.shape[1] < end:
                grown = chunk.new_zeros((self.batch_size, max(2 * end, 64), chunk.shape[2]))
                if buf is not None:
                    grown[:, :start] = buf[:, :start]
                self._history[layer] = buf = grown
            if index is None:
                buf[:, start:end] = chunk
            else:
                buf[index, start:end] = chunk

    def _check_context(self, extra: int) -> None:
        limit = self.lm.context_length
        if self.ids.shape[1] + extra <= limit:  # cheap bound: physical width >= any row's length
            return
        longest = int(self.lengths.max()) + extra
        if longest > limit:
            raise ValueError(
                f"a row would reach {longest} tokens, over the model's context window of {limit}; "
                "use fewer new tokens, a shorter prompt, or a model with a longer context"
            )

    # ------------------------------------------------------------------ rows and rollback
    def select(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Keep/reorder/repeat rows (beams): row ``j`` becomes old row ``rows[j]``."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.ids.device)
        if rows.ndim != 1 or rows.numel() == 0:
            raise ValueError(f"select needs a non-empty 1-D list of row indices, got shape {tuple(rows.shape)}")
        if int(rows.min()) < 0 or int(rows.max()) >= self.batch_size:
            raise IndexError(f"row indices must be in [0, {self.batch_size}), got {rows.tolist()}")
        self.ids, self.mask = self.ids[rows], self.mask[rows]
        self.lengths, self.prompt_lengths = self.lengths[rows], self.prompt_lengths[rows]
        self.forced_lengths = self.forced_lengths[rows]
        self._logits = self.logits[rows]
        self._latents = {k: v[rows] for k, v in self._latents.items()}
        self._history = {k: v[rows] for k, v in self._history.items()}
        if self.cache is not None:
            self.cache.batch_select_indices(rows)

    def crop(self, n: int | Sequence[int]) -> None:
        """Remove the last ``n`` response tokens (one count for all rows, or one per row).

        The KV cache is cut, not recomputed: the last kept token of each cropped row is fed again
        (one batched forward) to recover its next-token logits and latents.
        """
        counts = [int(n)] * self.batch_size if isinstance(n, (int, np.integer)) else [int(x) for x in n]
        if len(counts) != self.batch_size:
            raise ValueError(f"crop needs one count per row ({self.batch_size}), got {len(counts)}")
        available = self.response_lengths.tolist()
        for row, (c, have) in enumerate(zip(counts, available)):
            if c < 0 or c > have:
                raise ValueError(
                    f"cannot crop {c} tokens from row {row}: it has {have} response tokens "
                    f"(crop between 0 and {have})"
                )
        if not any(counts):
            return
        refeed: list[list[int]] = []
        mask = self.mask.clone()
        for row, c in enumerate(counts):
            if c == 0:
                refeed.append([])
                continue
            real = mask[row].nonzero().squeeze(-1)  # (len,) columns of real tokens
            dropped = real[-(c + 1) :]
            mask[row, dropped] = 0
            refeed.append([int(self.ids[row, dropped[0]])])
        self.mask = mask
        self.lengths = self.lengths - torch.as_tensor([c + 1 if c else 0 for c in counts], device=mask.device)
        self._trim_tail()
        self.feed(refeed)

    def compact(self) -> None:
        """Repack the cache: each row's real tokens moved right-aligned, in order, into a width of
        ``max(lengths)``; the masked slots left by crops and restarts are dropped.

        Keys already carry their rotary positions and positions are counted over real tokens, so
        moving a token to another column changes nothing it computes. Works on full-attention
        layers (:mod:`latentguard.lm.cache`); other cache kinds keep their slots (correct, only larger).
        """
        if self.cache is None or not use_growing_layers(self.cache):
            return
        live = self.mask.bool()  # (B, T)
        width = int(live.sum(-1).max())
        if width == self.ids.shape[1]:
            return
        # a stable sort on the live flag puts each row's masked columns first, its tokens last, in order
        order = torch.sort(live.to(torch.int8), dim=-1, stable=True).indices[:, -width:]  # (B, W)
        for layer in self.cache.layers:  # keys/values: (B, heads, T, head_dim)
            assert isinstance(layer, GrowingLayer)  # use_growing_layers made them so
            keys, values = layer.kv()
            index = order[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
            layer.keys = keys.gather(2, index)
            layer.values = values.gather(2, index)
        self.ids, self.mask = self.ids.gather(1, order), self.mask.gather(1, order)
        self._history = {k: v.gather(1, order[:, :, None].expand(-1, -1, v.shape[-1])) for k, v in self._history.items()}

    def _trim_tail(self) -> None:
        """Physically crop trailing columns that no row uses."""
        used = self.mask.any(0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 0
        extra = self.ids.shape[1] - width
        if extra > 0:
            assert self.cache is not None  # the columns were made by a forward, which made the cache
            self.cache.crop(-extra)
            self.ids, self.mask = self.ids[:, :width], self.mask[:, :width]

    # ------------------------------------------------------------------ reading
    def latent_tensor(self, layer: int | None = None) -> torch.Tensor:
        """(B, H) hidden state of ``layer`` at each row's last token, on the model's device."""
        layer = self.lm.latent_layer if layer is None else self.lm.normalise_layer(layer)
        if layer not in self._latents:
            raise KeyError(
                f"layer {layer} is not captured; captured: {sorted(self._latents)}. "
                "Pass it in LanguageModel(latent_layers=...) or call lm.capture_layer() before prefill"
            )
        return self._latents[layer]

    def _history_rows(self, layer: int, rows: Sequence[int] | None) -> tuple[int, torch.Tensor]:
        """The normalised layer (which must keep a history) and the (R,) row index tensor."""
        layer = self.lm.normalise_layer(layer)
        if layer not in self._history:
            raise KeyError(
                f"layer {layer} has no history; call lm.capture_layer({layer}, history=True) before prefill"
            )
        idx = torch.arange(self.batch_size, device=self.ids.device) if rows is None else torch.as_tensor(
            list(rows), dtype=torch.long, device=self.ids.device
        )
        return layer, idx

    def prompt_latent(self, layer: int, rows: Sequence[int] | None = None) -> torch.Tensor:
        """(R, H) hidden state of ``layer`` at each row's last request token (before any forced
        assistant text): what the policy computed for the request at prefill. Needs
        ``lm.capture_layer(layer, history=True)`` before the prefill."""
        layer, idx = self._history_rows(layer, rows)
        mask = self.mask[idx]  # (R, T)
        rank = mask.cumsum(-1) - 1  # index of each real token within its row
        last = (mask == 1) & (rank == self.request_lengths[idx, None] - 1)  # (R, T), one column per row
        column = last.int().argmax(-1)  # (R,)
        return self._history[layer][idx, column]

    def pooled_latent(self, layer: int, rows: Sequence[int] | None = None, forced_as_answer: bool = True) -> torch.Tensor:
        """(R, H) mean of ``layer``'s hidden states over each row's response tokens.

        Needs ``lm.capture_layer(layer, history=True)`` before the prefill. A row with no response
        token yet gets its last-token latent. ``rows`` selects rows (default: all).
        ``forced_as_answer=False`` leaves a prompt's forced assistant text (a prefill) out of the
        response, as if it were part of the request: the mean runs over the tokens decoded after it,
        and a row with none gets its request latent (:meth:`prompt_latent`), so a prefilled row
        reads as its unprefilled twin until it decodes.
        """
        states, response = self.response_states(layer, rows, forced_as_answer)
        weights = response.to(states.dtype).unsqueeze(-1)  # (R, T, 1)
        total = (states * weights).sum(1)  # (R, H)
        count = weights.sum(1)  # (R, 1)
        pooled = total / count.clamp_min(1)
        layer, idx = self._history_rows(layer, rows)
        empty = self._latents[layer][idx] if forced_as_answer else self.prompt_latent(layer, rows)
        return torch.where(count > 0, pooled, empty)

    def response_states(self, layer: int, rows: Sequence[int] | None = None,
                        forced_as_answer: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer``'s hidden states over whole rows, (R, T, H), and which positions are response
        tokens, (R, T) bool: what a probe over the response's tokens learns from (forced assistant
        text included: it is part of the answer a reader sees; ``forced_as_answer=False``: not). Needs
        ``lm.capture_layer(layer, history=True)`` before the prefill."""
        layer, idx = self._history_rows(layer, rows)
        mask = self.mask[idx]  # (R, T)
        rank = mask.cumsum(-1) - 1
        start = self.request_lengths if forced_as_answer else self.prompt_lengths  # (B,)
        response = (mask == 1) & (rank >= start[idx, None])  # (R, T)
        return self._history[layer][idx, : self.ids.shape[1]], response

    def attention_pooled(self, layer: int, query: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """(R, H) ``layer``'s hidden states over each row's response tokens, weighted by a softmax of
        their scores against ``query`` (H,): ``sum_i softmax_i(h_i . query) h_i``.

        The attention-pooled probe's feature (a zero query is the mean). It reads the same history as
        :meth:`pooled_latent`, at the same cost per check: one pass over the row's response tokens.
        A row with no response token yet gets its last-token latent.
        """
        states, response = self.response_states(layer, rows)
        hidden = states.float()  # (R, T, H)
        scores = (hidden @ query.to(hidden.device).float()).masked_fill(~response, float("-inf"))  # (R, T)
        any_token = response.any(-1, keepdim=True)  # (R, 1)
        weights = torch.softmax(torch.where(any_token, scores, torch.zeros_like(scores)), dim=-1) * response  # (R, T)
        pooled = (weights.unsqueeze(-1) * hidden).sum(1).to(states.dtype)  # (R, H)
        layer, idx = self._history_rows(layer, rows)
        return torch.where(any_token, pooled, self._latents[layer][idx])

    def features(self, layer: int, pooling: str, rows: Sequence[int] | None = None,
                 forced_as_answer: bool = True) -> torch.Tensor:
        """(R, H) what a reader (probe, critic) sees of ``rows``, with no forward: ``layer`` pooled by
        ``pooling`` (one of :data:`FEATURE_POOLINGS`); (R, 2H) for ``mean+request``. The poolings
        other than ``last`` need ``lm.capture_layer(layer, history=True)`` before the prefill.
        ``forced_as_answer=False``: a prefill is read as request, not answer (:meth:`pooled_latent`)."""
        if pooling == "mean":
            return self.pooled_latent(layer, rows, forced_as_answer)
        if pooling == "request":
            return self.prompt_latent(layer, rows)
        if pooling == "mean+request":
            return torch.cat([self.pooled_latent(layer, rows, forced_as_answer), self.prompt_latent(layer, rows)], dim=-1)
        if pooling == "last":
            last = self.latent_tensor(layer)
            return last if rows is None else last[torch.as_tensor(list(rows), device=last.device)]
        raise ValueError(f"unknown pooling {pooling!r}; use one of {FEATURE_POOLINGS}")

    def latent(self, layer: int | None = None) -> np.ndarray:
        """(B, H) float32 numpy latent of ``layer`` (default: the model's latent layer)."""
        return self.latent_tensor(layer).float().cpu().numpy()

    def topk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k) log-probabilities and token ids of each row's ``k`` most likely next tokens."""
        logprobs = self.logits.float().log_softmax(-1)  # (B, V)
        return torch.topk(logprobs, k, dim=-1)

    def token_ids(self, row: int) -> list[int]:
        """All real tokens of ``row`` (prompt + response)."""
        return self.ids[row][self.mask[row].bool()].tolist()

    def response_ids(self, row: int) -> list[int]:
        """The tokens after the prompt in ``row``."""
        return self.token_ids(row)[int(self.prompt_lengths[row]) :]

    def response_text(self, row: int) -> str:
        """The decoded response of ``row`` (special tokens skipped)."""
        return self.lm.decode(self.response_ids(row))
