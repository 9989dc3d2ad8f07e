"""The CARE agent: the paper's fixed rule as a policy over the vector rewrite env.

Decode (sampled from the run's sampling settings, one seed per prompt); the env's guard checks the
query and the whole response every ``check_every`` tokens and at the end; whenever a check flags and
attempts remain, the rule takes the rewrite action of its ``intervention`` (roll back to the released
text and resample, introspect or splice the phrase; or a schedule over the attempts on one span,
e.g. ``resample+introspect``); after ``N`` attempts on one span the env
applies the fallback (:mod:`latentguard.envs.rewrite_env`). The prompts run through
:class:`~latentguard.envs.rewrite_env.RewriteVectorEnv` with ``batch_size`` sub-envs, each prompt once: one
forward per token for all of them, one batched guard call per check, critiques decoded in the same
forwards while their sub-envs wait; a sub-env that finishes takes the next prompt in the same step.

Registered as ``care`` (introspect, refuse fallback), ``care-resample`` and ``care-lite`` (one
rollback, then no more checks); options: ``b``, ``N``, ``intervention``, ``fallback``,
``check_every``, ``show_critique``, ``batch_size``, e.g. ``care:b=20:N=1:fallback=continue``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from latentguard.agents.base import FeedPlaces, Method, PromptFeed, Rollout, RunContext, prompt_seed
from latentguard.envs.rewrite_env import RewriteEpisodes, RewriteVectorEnv
from latentguard.episodes.release import RewriteConfig
from latentguard.lm import row_generators


class Care(Method):
    """CARE with a release buffer of ``b`` tokens and ``N`` attempts (see the module docstring)."""

    uses_guard = True

    def __init__(self, b: int = 40, N: int = 5, intervention: str = "introspect", fallback: str = "refuse",
                 single: bool = False, check_every: int = 0, show_critique: bool = True, batch_size: int = 16,
                 name: str = "care") -> None:
        self.config = RewriteConfig(buffer=int(b), check_every=int(check_every), max_attempts=int(N),
                                    intervention=intervention, fallback=fallback, single=bool(single),
                                    show_critique=bool(show_critique))
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.name = name

    continuous = True

    def env(self, prompts: Sequence[str], ctx: RunContext, num_envs: int | None = None) -> RewriteVectorEnv:
        """The vector rewrite env this rule acts on: one sub-env per prompt of a batch (or
        ``num_envs``), each prompt once."""
        cfg = self.config
        return RewriteVectorEnv(num_envs or min(self.batch_size, len(prompts)), model=ctx.lm, prompts=list(prompts),
                                guard=ctx.guard, top_k=1, max_new_tokens=ctx.max_new_tokens, prompt_order="once",
                                buffer=cfg.buffer, check_every=cfg.check_every, max_attempts=cfg.max_attempts,
                                fallback=cfg.fallback, single=cfg.single, show_critique=cfg.show_critique,
                                critique_temperature=cfg.critique_temperature)

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        if ctx.guard is None:
            raise ValueError("CARE is driven by a guard: give the run a guard (--guard)")
        if not prompts:
            return []
        start = time.perf_counter()
        done: dict[int, dict] = {}
        rule = _Rule(self, self.env(prompts, ctx), ctx, lambda i, record: done.__setitem__(i, record))
        while not rule.vec.finished:
            rule.step()
        seconds = (time.perf_counter() - start) / len(prompts)
        return [Rollout(p, wall_time=seconds, **done[i]) for i, p in enumerate(prompts)]

    def serve(self, feed: PromptFeed, ctx: RunContext) -> None:
        """Continuous batching on ``min(batch_size, feed.max_rows)`` sub-envs: a sub-env whose answer
        ended, or whose reader left (its buffer and critique dropped), takes the next prompt at its
        next step; new prompts wake idle sub-envs."""
        if ctx.guard is None:
            raise ValueError("CARE is driven by a guard: give the run a guard (--guard)")
        num_envs = max(1, min(self.batch_size, feed.max_rows))
        first = feed.take(num_envs, idle=True)
        if not first:
            return
        places = FeedPlaces(feed)

        def finish(position: int, record: dict) -> None:
            index, seconds = places.pop(position)
            feed.finish(index, Rollout(vec.prompts[position], wall_time=seconds, **record))

        vec = self.env(places.admit(first, 0), ctx, num_envs)
        rule = _Rule(self, vec, ctx, finish, released_index=places.index.__getitem__)
        while True:
            live = np.flatnonzero(~vec.idle & ~vec.restarting)
            busy = len(live) - places.leave(vec, live)
            pending = len(vec.prompts) - vec.prompts_started
            new = feed.take(num_envs - busy - pending, idle=vec.finished)
            if new:
                vec.add_prompts(places.admit(new, len(vec.prompts)))
            elif vec.finished:
                return
            rule.step()

    @staticmethod
    def _record(ep: RewriteEpisodes, row: int) -> dict:
        c = ep.counters(row)
        return dict(text=ep.released_text(row), tokens=c["tokens"], released_tokens=c["released_tokens"],
                    wait_tokens=c["wait_tokens"], interventions=c["interventions"], guard_calls=c["guard_calls"],
                    extra={"discarded": c["discarded"], "fallback": c["fallback"], "refused": c["refused"]})


class _Rule:
    """CARE's rule stepping a vector rewrite env; ``on_done(position, record)`` for each answer that
    ends (``position``: its place in the env's prompt list)."""

    def __init__(self, care: Care, vec: RewriteVectorEnv, ctx: RunContext, on_done: Callable[[int, dict], None],
                 released_index: Callable[[int], int] = int) -> None:
        self.care, self.vec, self.ctx, self.on_done, self.released_index = care, vec, ctx, on_done, released_index
        self.generators: dict[int, torch.Generator] = {}
        vec.reset(seed=ctx.seed)
        self.new_generators(np.flatnonzero(~vec.idle))

    def new_generators(self, rows: np.ndarray) -> None:
        for row in rows:
            prompt = self.vec.prompts[self.vec.episode_index[row]]
            self.generators[int(row)] = row_generators([prompt_seed(self.ctx.seed, prompt)], self.ctx.lm.device)[0]

    def step(self) -> None:
        """One step of every sub-env: the rule's rewrites on flags, sampled tokens elsewhere."""
        vec, ep, ctx = self.vec, self.vec.episodes, self.ctx
        restarting = vec.restarting & ~vec.idle
        rewriting = ep.awaiting_rewrite() & ~restarting & ~vec.idle  # the rule: intervene on every flag while attempts remain
        decoding = np.flatnonzero(~rewriting & ~restarting & ~vec.idle & ~ep.writing_critique())
        actions = np.zeros(vec.num_envs, dtype=np.int64)
        attempts = ep.attempts()
        for row in np.flatnonzero(rewriting):  # the schedule's intervention for this span's attempt
            actions[row] = ep.action_of(self.care.config.intervention_at(attempts[row]))
        tokens = np.zeros(vec.num_envs, dtype=np.int64)
        if decoding.size:
            tokens[decoding] = ep.sample(ctx.sampling, [self.generators[int(r)] for r in decoding], decoding)
        _, _, terminated, truncated, _ = vec.step_tokens(tokens, actions)
        if ctx.streaming:  # what left the buffer (the restarts come at the next step)
            for row in np.flatnonzero(~vec.idle & ~restarting):
                ctx.released(self.released_index(int(vec.episode_index[row])), ep.released_text(int(row)))
        for row in np.flatnonzero(terminated | truncated):
            self.on_done(int(vec.episode_index[row]), Care._record(ep, int(row)))
            ctx.answered()
        self.new_generators(np.flatnonzero(restarting & ~vec.idle))
