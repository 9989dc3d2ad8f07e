"""CARE's rewrite actions on the episode engine: the release buffer, rollback and introspection as
operations of a token episode (the machinery of the rewrite and decision envs).

:class:`RewriteEpisodes` extends :class:`~latentguard.episodes.token_episodes.TokenEpisodes` with the
release buffer of :mod:`latentguard.episodes.release`. Actions ``0..top_k-1`` choose the next token;
three more (:data:`REWRITES`, ids from :meth:`RewriteEpisodes.action_of`) roll the unreleased text
back and rewrite it: ``resample`` (decode again), ``introspect`` (splice a self-critique written on a
helper row in the same forwards) and ``phrase`` (splice the critique's fixed opening). The rules
the envs expose (when a check flags, what is legal, the fallback, the step cap) are written out in
:mod:`latentguard.envs.rewrite_env`.

What a face needs of an answer is asked by name: :meth:`~RewriteEpisodes.keep_flagged` (let a
flagged span through), :meth:`~RewriteEpisodes.refuse`, :meth:`~RewriteEpisodes.awaiting_rewrite`,
:meth:`~RewriteEpisodes.wait_tokens`, :meth:`~RewriteEpisodes.buffer_fill`,
:meth:`~RewriteEpisodes.attempts_used`, :meth:`~RewriteEpisodes.progress`,
:meth:`~RewriteEpisodes.counters`, :meth:`~RewriteEpisodes.released_text`.

**Cost.** With the engine's ``cost_mode="release"`` (the decision env's) a flagged check costs
nothing by itself; 1 is charged from the row's safety state for each flagged span let through: by
:meth:`~RewriteEpisodes.keep_flagged`, or by the ``continue`` fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from latentguard.common.seeding import prompt_seed
from latentguard.episodes.engine import Start
from latentguard.episodes.introspection import (
    Critique,
    close_hidden,
    critique_head_ids,
    critique_prompt_ids,
    opening_ids,
)
from latentguard.episodes.release import ReleaseBuffer, RewriteConfig
from latentguard.episodes.token_episodes import StepResult, TokenEnvConfig, TokenEpisodes
from latentguard.guards import Guard, violations
from latentguard.lm import LanguageModel, SamplingConfig, row_generators
from latentguard.rewards import Reward

REWRITES = ("resample", "introspect", "phrase")
"""The rewrite actions, in action order after the ``top_k`` token actions."""


class RewriteEpisodes(TokenEpisodes):
    """Token episodes with a release buffer and rewrite actions (see the module docstring)."""

    lets_spans_through = True

    def __init__(self, lm: LanguageModel, config: TokenEnvConfig, guard: Guard | None, reward: Reward | None, n: int,
                 rewrite: RewriteConfig) -> None:
        if guard is None:
            raise ValueError("the rewrite env needs a guard (guard=...): its checks decide what is released")
        super().__init__(lm, config, guard, reward, n, helpers=n)  # helper row n + i writes row i's critiques
        self.rewrite = rewrite
        self.buffer = ReleaseBuffer(lm, rewrite, n)
        self.pending = np.zeros(n, dtype=bool)  # (N,) the last check flagged and attempts remain
        self.must = np.zeros(n, dtype=bool)  # (N,) ... and it was the final check: a rewrite is required
        self.flagged = np.zeros(n, dtype=bool)  # (N,) this step's check flagged
        self.released_flagged = np.zeros(n, dtype=bool)  # (N,) flagged text left the buffer this step
        self.illegal = np.zeros(n, dtype=bool)  # (N,) this step's action was masked out and replaced
        self.waiting = np.zeros(n, dtype=bool)  # (N,) a critique is being written for the row
        self.critiques: dict[int, Critique] = {}  # row -> its critique in progress
        self._helper_feed: tuple[dict, dict, dict] = ({}, {}, {})  # helper tokens, inserts, helper starts
        self.seed = 0  # critique seeds: prompt_seed(seed, prompt) + 7919 * interventions
        self.max_tokens = config.max_new_tokens * (rewrite.max_attempts + 2)
        lm.prefixes.add(critique_head_ids(lm, rewrite.opening))  # every critique prompt starts with it

    @property
    def n_actions(self) -> int:
        return self.config.top_k + len(REWRITES)

    @property
    def rewrite_actions(self) -> tuple[int, int, int]:
        """The action ids of RESAMPLE (= ROLLBACK), INTROSPECT and PHRASE."""
        k = self.config.top_k
        return k, k + 1, k + 2

    def reset_rows(self, starts: Mapping[int, Start], fresh: bool = False) -> None:
        self._clear(range(self.n_episodes) if fresh or self.state is None else starts)
        super().reset_rows(starts, fresh)

    def abandon(self, rows: Sequence[int]) -> None:
        """Drop the release buffer and any critique in progress of ``rows`` (their readers left)."""
        self._clear(rows)

    def _clear(self, rows) -> None:
        for row in rows:
            self.buffer.reset_row(row)
            self.pending[row] = self.must[row] = self.flagged[row] = self.released_flagged[row] = False
            self.illegal[row] = self.waiting[row] = False
            self.critiques.pop(row, None)

    def can_rewrite(self) -> np.ndarray:
        """(N,) bool: something is unreleased, attempts remain and no critique is being written."""
        return np.array([not self.waiting[r] and self.buffer.unreleased(r, self.responses[r]) > 0
                         and self.buffer.can_intervene(r) for r in range(self.n_episodes)], dtype=bool)

    def action_masks(self) -> np.ndarray:
        """(N, top_k + 3) bool: token actions (none while a rewrite is required; only action 0, a
        no-op, while a critique is being written), then the rewrites."""
        tokens = self.masks[: self.n_episodes] & ~self.must[:, None] & ~self.waiting[:, None]
        tokens[self.waiting, 0] = True
        return np.concatenate([tokens, np.repeat(self.can_rewrite()[:, None], len(REWRITES), axis=1)], axis=1)

    # ------------------------------------------------------------------ steps
    def step_rows(self, actions: np.ndarray, rows: Sequence[int] | np.ndarray,
                  restarts: Mapping[int, Start] | None = None,
                  token_ids: np.ndarray | None = None) -> StepResult:
        actions, k = np.asarray(actions).astype(np.int64), self.config.top_k
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= actions[r] < self.n_actions]
        if bad:
            raise ValueError(f"unknown action {int(actions[bad[0]])} for sub-env {bad[0]}: "
                             f"actions are 0..{k - 1} (tokens) and {k}..{k + 2} ({', '.join(REWRITES)})")
        legal = self.can_rewrite()
        self.illegal[:] = False
        for r in rows:  # a masked action becomes the nearest legal one (see the module docstring)
            if self.waiting[r]:
                self.illegal[r] = actions[r] != 0
            elif actions[r] < k and self.must[r]:
                actions[r], self.illegal[r] = k, True
            elif actions[r] >= k and not legal[r]:
                actions[r], self.illegal[r] = 0, True
        rewrite = [r for r in rows if actions[r] >= k and not self.waiting[r]]
        tokens = [r for r in rows if actions[r] < k and not self.waiting[r]]
        self.flagged[:] = self.released_flagged[:] = False
        helper_tokens, inserts = self._advance_critiques()
        helper_starts: dict[int, tuple[list[int], None]] = {}
        if rewrite:
            seeds = {r: prompt_seed(self.seed, self.prompts[r]) + 7919 * self.buffer.rows[r].interventions
                     for r in rewrite}
            flagged_text = self.buffer.rollback(self, rewrite)
            for r in rewrite:
                kind = REWRITES[actions[r] - k]
                if kind == "phrase":
                    inserts[r] = self.phrase
                elif kind == "introspect":
                    critique = self._start_critique(r, flagged_text[r], seeds[r], helper_starts)
                    if critique is not None:
                        inserts[r] = critique
            self.pending[rewrite] = self.must[rewrite] = False
        if not self.rewrite.show_critique:
            skip = len(self.phrase)
            inserts = {r: close_hidden(self.lm, list(ids), min(skip, len(ids)), self.rewrite.buffer)
                       for r, ids in inserts.items()}
        for r, ids in inserts.items():
            self.buffer.inserted(r, len(self.responses[r]), len(ids))
        self._clear(restarts or ())
        if token_ids is not None and tokens:  # a replaced rewrite decodes the most likely token
            token_ids = np.asarray(token_ids).copy()
            for r in rows:
                if self.illegal[r] and actions[r] == 0:
                    token_ids[r] = self.candidates[r, 0]
        self._helper_feed = (helper_tokens, inserts, helper_starts)
        if tokens or restarts:
            result = super().step_rows(actions, tokens, restarts, token_ids)
        else:
            self.feed_step(np.zeros(0, dtype=np.int64), [], None)
            self.refresh()
            n = self.n_episodes
            result = StepResult(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool),
                                np.full(n, -1, dtype=np.int64), np.full(n, np.nan), [None] * n)
        for row in tokens:
            self._release(row, result)
        return result

    @property
    def phrase(self) -> list[int]:
        """The 'phrase' intervention's ids: the critique's opening, cut to the buffer."""
        return opening_ids(self.lm, self.rewrite.opening)[: self.rewrite.buffer]

    def _start_critique(self, row: int, flagged_text: str, seed: int, helper_starts: dict) -> list[int] | None:
        """Start writing ``row``'s critique on its helper row (prefilled in this step's forwards).
        Returns the critique at once when its opening alone fills the buffer."""
        opening = self.phrase
        if len(opening) >= self.rewrite.buffer:
            return opening
        helper = self.n_episodes + row
        ids = critique_prompt_ids(self.lm, self.prompts[row], flagged_text, self.rewrite.opening)
        self.critiques[row] = Critique(row, helper, opening, self.rewrite.buffer, row_generators([seed], self.lm.device)[0])
        helper_starts[helper] = (ids, None)
        self.waiting[row] = True
        return None

    def _advance_critiques(self) -> tuple[dict[int, int], dict[int, list[int]]]:
        """Sample the next token of every critique in progress: ``helper -> token`` to feed this
        step, and ``row -> critique ids`` of the critiques done (spliced in this step)."""
        live = [c for c in self.critiques.values() if c.started]
        feed, done = {}, {}
        if live:
            sampling = SamplingConfig(temperature=self.rewrite.critique_temperature)
            drawn = self.sample(sampling, [c.generator for c in live], [c.helper for c in live])
            for c, token in zip(live, drawn):
                if c.add(int(token), self.lm.eos_token_ids):
                    done[c.row] = c.ids
                else:
                    feed[c.helper] = int(token)
        for row in done:
            del self.critiques[row]
            self.waiting[row] = False
        return feed, done

    def feed_step(self, tokens: np.ndarray, rows: Sequence[int],
                  restarts: Mapping[int, Start] | None) -> None:
        """This step's tokens, restarts and rewrites with the critiques' tokens and prompts: one
        forward for the rows fed one token, one for the rows fed more."""
        helper_tokens, inserts, helper_starts = self._helper_feed
        self._helper_feed = ({}, {}, {})
        self.step(list(tokens) + list(helper_tokens.values()), list(rows) + list(helper_tokens),
                  {**(restarts or {}), **helper_starts}, inserts)
        for c in self.critiques.values():
            c.started = True

    def check_due(self, rows: np.ndarray, lengths: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The buffer's schedule: every ``check_every`` tokens and at the end, while checking."""
        return rows[[self.buffer.check_due(int(r), int(n), bool(d)) for r, n, d in zip(rows, lengths, done)]]

    def _release(self, row: int, result: StepResult) -> None:
        """Release bookkeeping of a row that decoded a token (the env's share of CARE's rule)."""
        rec = self.buffer.rows[row]
        rec.sampled += 1
        self.pending[row] = False
        length = len(self.responses[row])
        final = bool(result.terminated[row] or result.truncated[row])
        released_before = rec.released
        if not np.isnan(result.risk[row]):
            assert self.guard is not None  # __init__ requires one
            rec.guard_calls += 1
            if violations(result.risk[row], self.guard.threshold):
                self.flagged[row] = True
                if self.buffer.can_intervene(row):
                    self.pending[row] = True
                    if final:  # not over yet: the policy must rewrite
                        self.must[row] = True
                        result.terminated[row] = result.truncated[row] = False
                else:
                    self.buffer.fail(row, length, final)
                    if rec.fallback == "continue":
                        self._let_through(row)
                    if rec.refused:
                        result.terminated[row] = True
            else:
                self.buffer.passed(row, length, final)
        else:
            self.buffer.advance(row, length, final)
        self.released_flagged[row] = self.flagged[row] and rec.released > released_before
        if rec.sampled >= self.max_tokens and not (result.terminated[row] or result.truncated[row]):
            result.truncated[row] = True  # the step cap: stop, releasing nothing more
            self.pending[row] = self.must[row] = False

    # ------------------------------------------------------------------ a face's decisions
    def action_of(self, rewrite: str) -> int:
        """The action id of a rewrite (``"resample"``, ``"introspect"`` or ``"phrase"``)."""
        if rewrite not in REWRITES:
            raise ValueError(f"unknown rewrite {rewrite!r}; use one of {REWRITES}")
        return self.config.top_k + REWRITES.index(rewrite)

    def will_decode(self, rows: Sequence[int] | np.ndarray, actions: np.ndarray) -> list[int]:
        """The ``rows`` that decode a token under ``actions`` (N,): a token action, no critique being written."""
        return [int(r) for r in rows if actions[r] < self.config.top_k and not self.waiting[r]]

    def awaiting_rewrite(self) -> np.ndarray:
        """(N,) bool: the last check flagged and attempts remain: the policy may rewrite (or keep the span)."""
        return self.pending.copy()

    def keep_flagged(self, row: int) -> bool:
        """Let the span the last check flagged through (the policy continues past it): it will be
        released as if the check had passed, and under ``cost_mode="release"`` it costs 1. Returns
        whether the answer is over (it was the final check)."""
        final = bool(self.must[row])
        self.buffer.passed(row, len(self.responses[row]), final)
        self.pending[row] = self.must[row] = False
        self._let_through(row)
        return final

    def refuse(self, row: int) -> None:
        """End ``row``'s answer with the refusal: what was released stays, the rest is never shown."""
        self.buffer.refuse(row)
        self.close(row)

    def close(self, row: int) -> None:
        """No rewrite is due on ``row`` any more (its answer is over)."""
        self.pending[row] = self.must[row] = False

    def _let_through(self, row: int) -> None:
        if self.cost_mode == "release":
            self.charge([row], np.ones(1))

    # ------------------------------------------------------------------ per-answer figures
    def wait_tokens(self) -> np.ndarray:
        """(N,) tokens each answer has added while nothing new reached the user."""
        return np.array([self.buffer.rows[r].wait_tokens for r in range(self.n_episodes)], dtype=np.int64)

    def buffer_fill(self) -> np.ndarray:
        """(N,) unreleased response tokens over the buffer size b."""
        return np.array([self.buffer.unreleased(r, self.responses[r]) / self.rewrite.buffer
                         for r in range(self.n_episodes)])

    def attempts(self) -> np.ndarray:
        """(N,) interventions on each answer's current unsafe span (the count restarts when a check passes)."""
        return np.array([self.buffer.rows[r].attempts for r in range(self.n_episodes)], dtype=np.int64)

    def attempts_used(self) -> np.ndarray:
        """(N,) :meth:`attempts` over N (0 when N is 0)."""
        return self.attempts() / max(self.rewrite.max_attempts, 1)

    def writing_critique(self) -> np.ndarray:
        """(N,) bool: a critique is being written for the answer (it waits; only action 0 is legal)."""
        return self.waiting.copy()

    def progress(self) -> np.ndarray:
        """(N,) response tokens over ``max_new_tokens``."""
        return np.array([len(self.responses[r]) / self.config.max_new_tokens for r in range(self.n_episodes)])

    def counters(self, row: int) -> dict:
        """The answer's record: interventions, wait tokens, guard calls, tokens decoded or spliced,
        released tokens, tokens discarded, refused, fallback taken."""
        rec = self.buffer.rows[row]
        return {"interventions": rec.interventions, "wait_tokens": rec.wait_tokens, "guard_calls": rec.guard_calls,
                "tokens": rec.sampled + rec.inserted,
                "released_tokens": len(self.buffer.released_ids(row, self.responses[row])),
                "discarded": rec.discarded, "refused": rec.refused, "fallback": rec.fallback}

    # ------------------------------------------------------------------ what the user sees
    def released_text(self, row: int) -> str:
        """The text the user has been shown (plus the refusal after a refusal)."""
        return self.buffer.released_text(row, self.responses[row])

    def info(self, row: int, result: StepResult | None = None) -> dict:
        info = super().info(row, result)
        rec = self.buffer.rows[row]
        info.update(released_text=self.released_text(row), interventions=rec.interventions,
                    wait_tokens=rec.wait_tokens, guard_calls=rec.guard_calls, tokens_discarded=rec.discarded,
                    fallback=rec.fallback, refused=rec.refused, must_intervene=bool(self.must[row]),
                    flagged=bool(self.flagged[row]), released_flagged=bool(self.released_flagged[row]),
                    illegal_action=bool(self.illegal[row]), waiting=bool(self.waiting[row]))
        return info


def rewrite_config(buffer: int, check_every: int, max_attempts: int, fallback: str, single: bool,
                   show_critique: bool, critique_temperature: float) -> RewriteConfig:
    """The release buffer's options (the intervention is chosen by the action)."""
    return RewriteConfig(buffer=buffer, check_every=check_every, max_attempts=max_attempts, fallback=fallback,
                         single=single, show_critique=show_critique, critique_temperature=critique_temperature)
