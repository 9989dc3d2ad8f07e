"""Baseline decoders: plain sampling, greedy, best-of-N and beam search.

Every method decodes prompts in batches on the episode engine (one forward per token for the
whole batch). Sampled answers use one seed per (run seed, prompt, sample), so no draw depends on
which other prompts share its batch (the logits do, in their last bits: a near-tie can go another
way in another batch), and resuming an evaluation reproduces an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latentguard.agents.base import Method, PromptFeed, Rollout, RunContext, chunks, prompt_seed, split_time, trim
from latentguard.episodes.engine import Engine
from latentguard.guards import violations
from latentguard.lm import GREEDY, SamplingConfig, row_generators


class Sampling(Method):
    """Answer each prompt once: sampled (``vanilla``) or greedy (``greedy``).

    :param greedy: argmax decoding instead of the run's sampling settings.
    :param batch_size: prompts decoded together.
    """

    def __init__(self, greedy: bool = False, batch_size: int = 32) -> None:
        self.greedy = greedy
        self.batch_size = int(batch_size)
        self.name = "greedy" if greedy else "vanilla"

    continuous = True

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        out = []
        sampling = GREEDY if self.greedy else ctx.sampling
        for offset in range(0, len(prompts), self.batch_size):
            batch = list(prompts[offset : offset + self.batch_size])
            start = time.perf_counter()
            ended = Counted(ctx.answered)
            release = released_as_drawn(ctx, offset) if ctx.streaming else None
            engine = sample_answers(ctx, batch, sampling, [prompt_seed(ctx.seed, p) for p in batch], ended, release)
            ctx.answered(len(batch) - ended.total)  # rows cut at max_new_tokens in the last step
            seconds = split_time(time.perf_counter() - start, len(batch))
            for row, prompt in enumerate(batch):
                tokens = engine.responses[row]
                released = trim(tokens, ctx.lm.eos_token_ids)
                out.append(Rollout(prompt, engine.text(row), len(tokens), len(released), seconds))
        return out


    def serve(self, feed: PromptFeed, ctx: RunContext) -> None:
        """Continuous batching: each step, new prompts start on free rows in the same forward as the
        other rows' next tokens; a row that ends or whose reader left is freed at once (and dropped
        from the cache unless a new prompt takes it). Each answer is seeded as in :meth:`run`."""
        sampling = GREEDY if self.greedy else ctx.sampling
        engine = Engine(ctx.lm, ctx.guard, max_new_tokens=ctx.max_new_tokens)
        slots: list[_Row | None] = []  # engine row -> the answer it decodes (None: free)
        while True:
            slots = [None if slot is None or feed.cancelled(slot.index) else slot for slot in slots]
            live = [r for r, slot in enumerate(slots) if slot is not None]  # rows whose logits are ready
            new = feed.take(feed.max_rows - len(live), idle=not live)
            if not live and not new:
                return
            if not live:  # nothing to keep: a fresh decoding state
                engine.start([prompt for _, prompt in new])
                slots = [None] * len(new)
                starts = dict(enumerate(new))
            else:
                free = [r for r, slot in enumerate(slots) if slot is None]
                if len(new) > len(free):  # grow by copies of row 0, restarted below
                    engine.fork(list(range(engine.n)) + [0] * (len(new) - len(free)))
                    free += list(range(len(slots), engine.n))
                    slots += [None] * (engine.n - len(slots))
                starts = dict(zip(free, new))
            for row, (index, prompt) in starts.items():
                generator = row_generators([prompt_seed(ctx.seed, prompt)], ctx.lm.device)[0]
                slots[row] = _Row(index, prompt, generator, time.perf_counter())
            if live:
                tokens = engine.sample(sampling, [slots[r].generator for r in live], live)  # type: ignore[union-attr]
                engine.step(tokens, live, restarts={row: (prompt, None) for row, (_, prompt) in starts.items()})
            for row in live:
                slot = slots[row]
                assert slot is not None  # live rows hold an answer
                ctx.released(slot.index, engine.text(row))
                if engine.ended([row])[0]:
                    response = engine.responses[row]
                    released = trim(response, ctx.lm.eos_token_ids)
                    feed.finish(slot.index, Rollout(slot.prompt, engine.text(row), len(response), len(released),
                                                    time.perf_counter() - slot.started))
                    ctx.answered()
                    slots[row] = None
            keep = [r for r, slot in enumerate(slots) if slot is not None]
            if keep and len(keep) < len(slots):  # drop the freed rows from the cache
                engine.fork(keep)
                slots = [slots[r] for r in keep]


@dataclass
class _Row:
    """An answer in flight on a row of :meth:`Sampling.serve`'s engine."""

    index: int
    prompt: str
    generator: torch.Generator
    started: float


def released_as_drawn(ctx: RunContext, offset: int) -> Callable[[Engine, list[int]], None]:
    """A sampling hook that releases every token as it is drawn (``ctx.released``); engine row ``r``
    answers prompt ``offset + r`` of the run."""

    def release(engine: Engine, rows: list[int]) -> None:
        for row in rows:
            ctx.released(offset + row, engine.text(row))

    return release


class Counted:
    """A progress hook that also counts what it was told (``total``)."""

    def __init__(self, hook: Callable[[int], None]) -> None:
        self.hook, self.total = hook, 0

    def __call__(self, n: int) -> None:
        self.total += n
        self.hook(n)


def sample_answers(ctx: RunContext, prompts: Sequence[str], sampling: SamplingConfig, seeds: Sequence[int],
                   on_end: Callable[[int], None] | None = None,
                   on_step: Callable[[Engine, list[int]], None] | None = None) -> Engine:
    """An engine holding one sampled answer per prompt (row ``i``: ``prompts[i]``, seeded by
    ``seeds[i]``); ``on_end(k)``: ``k`` answers have just ended; ``on_step(engine, rows)``: ``rows``
    have just taken a token."""
    engine = Engine(ctx.lm, ctx.guard, max_new_tokens=ctx.max_new_tokens)
    engine.start(list(prompts))
    engine.decode(sampling, dict(enumerate(row_generators(seeds, ctx.lm.device))), on_end=on_end,
                  on_step=None if on_step is None else (lambda rows: on_step(engine, rows)))
    return engine


class BestOfN(Method):
    """Sample ``n`` answers per prompt; release the one the guard finds safest, then the best reward.

    Answers under the guard's threshold are preferred; among them the highest task reward wins
    (the first one when there is no reward function); if all are flagged, the lowest risk wins.
    The user waits for all ``n`` answers (``wait_tokens`` = the longest one).

    :param n: answers per prompt.
    :param batch_size: prompts decoded together (``n`` rows each).
    """

    uses_guard = True

    def __init__(self, n: int = 4, batch_size: int = 4) -> None:
        if int(n) < 1:
            raise ValueError(f"best-of-n needs n >= 1, got {n}")
        self.n, self.batch_size = int(n), int(batch_size)
        self.name = f"best-of-{self.n}"

    def choose(self, risk: np.ndarray, reward: np.ndarray, threshold: float) -> int:
        """Index of the released sample among the n."""
        safe = ~violations(risk, threshold)
        return int(np.argmax(np.where(safe, reward, -np.inf))) if safe.any() else int(np.argmin(risk))

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        if ctx.guard is None:
            raise ValueError("best-of-n selects by guard risk: give the run a guard (--guard)")
        out = []
        for batch in chunks(list(prompts), self.batch_size):
            rows = [p for p in batch for _ in range(self.n)]
            seeds = [prompt_seed(ctx.seed, p, j) for p in batch for j in range(self.n)]
            start = time.perf_counter()
            engine = sample_answers(ctx, rows, ctx.sampling, seeds)
            texts = [engine.text(r) for r in range(len(rows))]
            risk = engine.check(range(len(rows))).risk.reshape(len(batch), self.n)  # fails closed
            reward = np.asarray(ctx.reward(rows, texts)).reshape(len(batch), self.n) if ctx.reward else np.zeros_like(risk)
            seconds = time.perf_counter() - start
            for i, prompt in enumerate(batch):
                safe = ~violations(risk[i], ctx.guard.threshold)
                pick = self.choose(risk[i], reward[i], ctx.guard.threshold)
                samples = engine.responses[i * self.n : (i + 1) * self.n]
                out.append(Rollout(
                    prompt, texts[i * self.n + pick], sum(len(t) for t in samples),
                    len(trim(samples[pick], ctx.lm.eos_token_ids)), split_time(seconds, len(batch)),
                    wait_tokens=max(len(t) for t in samples), guard_calls=self.n,
                    extra={"chosen": pick, "risks": risk[i].round(4).tolist(), "all_flagged": bool(not safe.any())},
                ))
            ctx.answered(len(batch))
        return out


class BestOfNLagrangian(BestOfN):
    """Best-of-N by ``reward - lam * risk`` (the Lagrangian relaxation InferenceGuard compares with).

    :param lam: price of the guard's risk in reward units.
    """

    def __init__(self, n: int = 4, lam: float = 1.0, batch_size: int = 4) -> None:
        super().__init__(n, batch_size)
        self.lam = float(lam)
        self.name = f"best-of-{self.n}-lagrangian"

    def choose(self, risk: np.ndarray, reward: np.ndarray, threshold: float) -> int:
        return int(np.argmax(reward - self.lam * risk))


class BeamSearch(Method):
    """Beam search on log-probability (no guard), ``k`` beams per prompt, length-normalised.

    A finished hypothesis (end-of-sequence) scores its summed log-probability divided by its
    length; the best finished or surviving hypothesis is released. All prompts of a batch share one
    decoding state of ``batch * k`` rows; beams are kept with ``DecodeState.select``.

    :param k: beams per prompt.
    :param batch_size: prompts decoded together.
    """

    def __init__(self, k: int = 4, batch_size: int = 4) -> None:
        if int(k) < 1:
            raise ValueError(f"beam needs k >= 1, got {k}")
        self.k, self.batch_size = int(k), int(batch_size)
        self.name = f"beam-{self.k}"

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        out = []
        for batch in chunks(list(prompts), self.batch_size):
            start = time.perf_counter()
            best, steps = self._search(batch, ctx)
            seconds = time.perf_counter() - start
            for prompt, tokens in zip(batch, best):
                out.append(Rollout(prompt, ctx.lm.decode(tokens), self.k * steps, len(tokens),
                                   split_time(seconds, len(batch)), wait_tokens=steps))
            ctx.answered(len(batch))
        return out

    def _search(self, batch: Sequence[str], ctx: RunContext) -> tuple[list[list[int]], int]:
        lm, k, b = ctx.lm, self.k, len(batch)
        eos = lm.eos_token_ids
        engine = Engine(lm, max_new_tokens=ctx.max_new_tokens)
        engine.start(list(batch))
        engine.fork([i for i in range(b) for _ in range(k)])  # (b*k) rows, beams of a prompt together
        state = engine.live_state
        scores = torch.full((b, k), float("-inf"), device=lm.device)
        scores[:, 0] = 0.0  # the k copies start identical: let only one of them expand at step 1
        seqs: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(b)]
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        steps = 0
        for steps in range(1, ctx.max_new_tokens + 1):
            logprobs = state.logits.float().log_softmax(-1).view(b, k, -1)  # (b, k, V)
            total = (scores[:, :, None] + logprobs).view(b, -1)  # (b, k*V)
            top, idx = torch.topk(total, 2 * k, dim=-1)  # (b, 2k): room for finished ones
            vocab = logprobs.shape[-1]
            rows, tokens = [], []
            new_scores = torch.full((b, k), float("-inf"), device=lm.device)
            new_seqs: list[list[list[int]]] = []
            for i in range(b):
                kept: list[list[int]] = []
                for score, flat in zip(top[i].tolist(), idx[i].tolist()):
                    beam, token = divmod(flat, vocab)
                    if score == float("-inf"):
                        break
                    seq = seqs[i][beam] + [token]
                    if token in eos:
                        finished[i].append((score / len(seq), seq[:-1]))
                        continue
                    if len(kept) < k:
                        new_scores[i, len(kept)] = score
                        rows.append(i * k + beam)
                        tokens.append(token)
                        kept.append(seq)
                while len(kept) < k:  # pad with a dead copy (score -inf) to keep b*k rows
                    rows.append(i * k)
                    tokens.append(lm.pad_token_id)
                    kept.append(list(seqs[i][0]))
                new_seqs.append(kept)
            seqs, scores = new_seqs, new_scores
            if all(len(f) >= k for f in finished) or steps == ctx.max_new_tokens:
                break
            engine.fork(rows)
            engine.step(tokens)
            state = engine.live_state
        best = []
        for i in range(b):
            alive = [(float(scores[i, j]) / max(len(seqs[i][j]), 1), seqs[i][j]) for j in range(k)
                     if scores[i, j] > float("-inf")]
            pool = finished[i] + alive
            best.append(max(pool, key=lambda x: x[0])[1] if pool else [])
        return best, steps
