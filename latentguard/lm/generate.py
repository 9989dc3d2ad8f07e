"""A plain decoding loop over :class:`~latentguard.lm.state.DecodeState`: the reference every method is
measured against (and what the demo and ``bench/decode.py`` run).

It does what ``transformers``' ``generate`` does, token for token: one prefill, then one batched
forward per new token; finished rows are fed the pad token until every row is done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latentguard.lm.model import LanguageModel, Prompt
from latentguard.lm.sampling import GREEDY, SamplingConfig, row_generators, sample_tokens
from latentguard.lm.state import DecodeState


@dataclass
class Completion:
    """One answer."""

    text: str
    """The decoded answer (special tokens removed)."""
    token_ids: list[int]
    """Generated tokens, the end-of-sequence token included if one was produced."""
    finished: bool
    """True if the answer ended with an end-of-sequence token (not cut at ``max_new_tokens``)."""


@dataclass
class Generation:
    """Answers to a batch of prompts and how long they took."""

    completions: list[Completion]
    seconds: float
    """Wall time from prefill to the last token."""

    @property
    def new_tokens(self) -> int:
        """Tokens generated over all rows."""
        return sum(len(c.token_ids) for c in self.completions)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time."""
        return self.new_tokens / max(self.seconds, 1e-9)


def generate(
    lm: LanguageModel,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 64,
    sampling: SamplingConfig = GREEDY,
    seed: int | Sequence[int] = 0,
    min_new_tokens: int = 0,
) -> Generation:
    """Answer ``prompts`` in one batch; the same ``seed`` gives the same text.

    :param seed: one seed for the batch, or one per prompt (then each answer depends only on its
        own prompt and seed, not on what else is in the batch).
    :param min_new_tokens: end-of-sequence tokens are forbidden before this many new tokens
        (as ``generate(min_new_tokens=...)``; the benchmark uses it to compare equal lengths).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    start = time.perf_counter()
    state = lm.prefill(prompts)
    generator: torch.Generator | list[torch.Generator]
    if isinstance(seed, int):
        generator = torch.Generator(device=lm.device).manual_seed(seed)
    else:
        generator = row_generators(seed, lm.device)
    steps = sample_steps(state, max_new_tokens, sampling, generator, min_new_tokens)
    seconds = time.perf_counter() - start
    return Generation(_completions(lm, steps.tolist()), seconds)


def sample_steps(
    state: DecodeState,
    max_steps: int,
    sampling: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator],
    min_new_tokens: int = 0,
) -> torch.Tensor:
    """(B, T <= max_steps) tokens chosen for each row of ``state``, one batched forward per step.

    A row that emits an end-of-sequence token gets the pad token from then on; the loop stops when
    every row has ended or after ``max_steps`` tokens (the last one is chosen, not fed). End-of-
    sequence tokens are forbidden before ``min_new_tokens``. The one sampling loop of the plain
    decoders (:func:`generate`, CARE's introspection).
    """
    lm = state.lm
    eos = torch.tensor(sorted(lm.eos_token_ids), device=lm.device)
    done = torch.zeros(state.batch_size, dtype=torch.bool, device=lm.device)  # (B,)
    steps: list[torch.Tensor] = []
    for t in range(max_steps):
        logits = state.logits  # (B, V)
        if t < min_new_tokens:
            logits = logits.index_fill(-1, eos, float("-inf"))
        tokens = sample_tokens(logits, sampling, generator)  # (B,)
        tokens = torch.where(done, lm.pad_token_id, tokens)
        steps.append(tokens)
        done = done | torch.isin(tokens, eos)
        if t == max_steps - 1 or bool(done.all()):
            break
        state.step(tokens)
    return torch.stack(steps, dim=1)


def _completions(lm: LanguageModel, rows: list[list[int]]) -> list[Completion]:
    out = []
    for row in rows:
        end = next((i for i, tok in enumerate(row) if tok in lm.eos_token_ids), None)
        ids = row if end is None else row[: end + 1]
        out.append(Completion(lm.decode(ids), ids, end is not None))
    return out
