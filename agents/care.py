"""The CARE agent: guard-driven rollback and introspection with a release buffer, batched.

The fixed rule of the paper: decode (sampled), let the guard check the query and the whole
response every ``check_every`` tokens and at the end; on a flag, roll back to the released text and
intervene, at most ``N`` times per unsafe span, then fall back (:mod:`envs.rewrite`). All prompts of
a batch share one decoding state: one forward per token for the batch, one batched guard call per
check, one batched critique generation per intervention round; finished answers leave the batch.

Registered as ``care`` (introspect, refuse fallback), ``care-resample`` and ``care-lite`` (one
rollback, then no more checks); options: ``b``, ``N``, ``intervention``, ``fallback``,
``check_every``, ``show_critique``, ``batch_size``, e.g. ``care:b=20:N=1:fallback=continue``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from agents.base import Method, Rollout, RunContext, chunks, prompt_seed, split_time
from envs.guards import checked_risk, violations
from envs.lm import row_generators, sample_tokens
from envs.rewrite import ReleaseBuffer, RewriteConfig


class Care(Method):
    """CARE with a release buffer of ``b`` tokens and ``N`` attempts (see the module docstring)."""

    uses_guard = True

    def __init__(self, b: int = 40, N: int = 5, intervention: str = "introspect", fallback: str = "refuse",
                 single: bool = False, check_every: int = 0, show_critique: bool = True, batch_size: int = 16,
                 name: str = "care") -> None:
        self.config = RewriteConfig(buffer=int(b), check_every=int(check_every), max_attempts=int(N),
                                    intervention=intervention, fallback=fallback, single=bool(single),
                                    show_critique=bool(show_critique))
        self.batch_size = int(batch_size)
        self.name = name

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        if ctx.guard is None:
            raise ValueError("CARE is driven by a guard: give the run a guard (--guard)")
        out = []
        for batch in chunks(list(prompts), self.batch_size):
            out += self._batch(list(batch), ctx)
        return out

    def _batch(self, prompts: list[str], ctx: RunContext) -> list[Rollout]:
        lm, guard, cfg = ctx.lm, ctx.guard, self.config
        start = time.perf_counter()
        n = len(prompts)
        buffer = ReleaseBuffer(lm, cfg, n)
        seeds = [prompt_seed(ctx.seed, p) for p in prompts]
        generators = row_generators(seeds, lm.device)
        responses: list[list[int]] = [[] for _ in range(n)]
        sampled = [0] * n
        state = lm.prefill(prompts)
        live = list(range(n))  # decoding-state row -> answer row
        cap = ctx.max_new_tokens * (cfg.max_attempts + 2)  # steps, whatever happens
        for _ in range(cap):
            if not live:
                break
            tokens = sample_tokens(state.logits, ctx.sampling, [generators[r] for r in live]).tolist()
            state.step(tokens)
            final = {}
            for row, token in zip(live, tokens):
                responses[row].append(token)
                sampled[row] += 1
                final[row] = token in lm.eos_token_ids or len(responses[row]) >= ctx.max_new_tokens
            due = [(srow, row) for srow, row in enumerate(live) if buffer.check_due(row, len(responses[row]), final[row])]
            risk = self._risk(lm, guard, prompts, responses, state, due, buffer) if due else {}
            done, rollback = [], []
            for srow, row in enumerate(live):
                length = len(responses[row])
                if row not in risk:
                    buffer.advance(row, length, final[row])
                elif not violations(risk[row], guard.threshold):
                    buffer.passed(row, length, final[row])
                elif buffer.can_intervene(row):
                    rollback.append((srow, row))
                    continue
                else:
                    buffer.fail(row, length, final[row])
                    if buffer.rows[row].refused:
                        done.append(srow)
                        continue
                if final[row]:
                    done.append(srow)
            if rollback:
                buffer.intervene(state, [s for s, _ in rollback], [r for _, r in rollback], responses, prompts,
                                 seeds=[seeds[r] + 7919 * buffer.rows[r].interventions for _, r in rollback])
            if done:
                finished = set(done)
                keep = [s for s in range(len(live)) if s not in finished]
                if keep:
                    state.select(keep)
                live = [live[s] for s in keep]
        seconds = time.perf_counter() - start
        out = []
        for row, prompt in enumerate(prompts):
            rec = buffer.rows[row]
            released = buffer.released_ids(row, responses[row])
            out.append(Rollout(
                prompt, buffer.released_text(row, responses[row]), sampled[row] + rec.inserted, len(released),
                split_time(seconds, n), wait_tokens=rec.wait_tokens, interventions=rec.interventions,
                guard_calls=rec.guard_calls,
                extra={"discarded": rec.discarded, "fallback": rec.fallback, "refused": rec.refused},
            ))
        return out

    @staticmethod
    def _risk(lm, guard, prompts, responses, state, due, buffer) -> dict[int, float]:
        """Batched guard call for the due rows, failing closed (:func:`envs.guards.checked_risk`)."""
        srows, rows = [s for s, _ in due], [r for _, r in due]
        for r in rows:
            buffer.rows[r].guard_calls += 1
        texts = [lm.decode(responses[r]) for r in rows]
        risk, _ = checked_risk(guard, [prompts[r] for r in rows], texts, state, srows)
        return dict(zip(rows, risk.tolist()))
