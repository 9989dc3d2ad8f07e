"""Block-wise search over the Saute-augmented state (InferenceGuard) and its comparison points.

Per prompt, ``k`` beams are kept. Every round each beam is forked into ``n / k`` candidates that
sample a block of ``block`` tokens (all candidates of all prompts of a batch are rows of one episode
engine: one forward per token). Each candidate's safety state is updated by the engine's guard
check of its text (``z <- z - cost / budget``, cost 1 when the guard flags; a candidate whose beam
has ended adds no text and is not checked again), then it is scored:

- ``critic-search``: unsafe if ``z <= 0`` or the critic's P(ends within budget) < ``safe_threshold``;
  ranked by the critic's value (expected task reward);
- ``beam-saute`` (no critic): unsafe if ``z <= 0``; ranked by the task reward of the text so far.

Unsafe candidates rank last; the top ``k`` become the beams. When every candidate of a prompt is
unsafe, the first tokens of that round's blocks are banned for those beams and the round is
sampled again, at most ``m`` times over the whole answer. The batch moves in passes of one block,
and each prompt goes on by itself after each pass, so a prompt's retry is decoded beside the other
prompts' next rounds instead of holding them up. Then the ``fallback``: ``refuse`` releases a
refusal, ``best`` keeps the best-scored candidates anyway. A prompt is answered when its best
candidate has ended (end-of-sequence) or the length limit is reached.

With ``confident`` above 0 (critic search: 0.9), a prompt whose best candidate the critic gives
P(safe) >= ``confident`` continues on that one beam with one candidate in the next round: the
search spends its width where the critic is unsure.

With ``narrow_start`` (critic search: on), a prompt's first round draws one candidate, as if the
critic were confident, and the search widens to ``n`` candidates where it is not: after a safe but
unsure draw, as above (with ``confident`` 0, after any draw), and for the retry of a round whose one
candidate was unsafe.

With ``degenerate`` above 0 (critic search: 0.3), a candidate whose text so far the degenerate-text
rule (:class:`latentguard.guards.degenerate.DegenerateGuard`: symbol runs and loops) scores at or
above it counts as unsafe in its round: ranked last, drawn again when every candidate is, and never
released unless the fallback is ``best``. Its safety state is untouched: it is not a guard cost.

Critic search reads a prompt's forced assistant words (a prefill, e.g. the attack's "Sure, here is")
as part of the request when it scores candidates (``prefill_as_answer=false``, the default): the
critic pools only what was decoded after them, as for an unprefilled prompt; true reads them as
answer, as the guard does. Unprefilled prompts are scored the same either way.

With ``give_up`` above 0 (off by default), a round whose candidates are all unsafe and whose best
one the critic gives P(safe) < ``give_up`` takes the fallback at once instead of drawing again (the
critic sees no safe way on); each answer's record keeps the best P(safe) of every all-unsafe round
(``all_unsafe_p_safe``).

With ``gate`` p above 0 (off by default), a prompt to which the ``learned-care`` policy (its default
one, or ``gate_policy=FOLDER``) gives refusal a probability of at least p at its first decision, before
any token, is refused at once and takes no rows: the learned policy's request-level judgment in front of
the search (:meth:`latentguard.agents.learned_care.LearnedCare.first_refusal`; one prefill forward per
joining batch, counted in the search's time). Calibrate p on dev look-alikes as a classifier's
threshold; 0.85 refuses 2.9% of them. With ``gate=request`` the request gate
(:mod:`latentguard.guards.request_gate`, ``train.py gate``) decides instead, at its own threshold (set
to refuse at most 3% of dev look-alikes): a probe trained on the requests alone, which tells held-out
harmful requests from look-alikes better than the policy's first decision. A gated answer's record
has ``gated: true``.

Every candidate is seeded by its prompt, the round, the draw and its place among its prompt's
candidates, so no draw depends on the batch it shares (the logits still do, in their last bits: a
near-tie can go another way in another batch).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from latentguard.agents.base import Method, PromptFeed, Rollout, RunContext, prompt_seed, resolve_budget, split_time
from latentguard.episodes.engine import Engine
from latentguard.episodes.release import REFUSAL
from latentguard.episodes.safety_state import BudgetConvention, within_budget
from latentguard.guards.degenerate import DegenerateGuard
from latentguard.guards.request_gate import RequestGate, load_request_gate
from latentguard.lm import DecodeState

if TYPE_CHECKING:
    from latentguard.agents.learned_care import LearnedCare
    from latentguard.critics.critic import LatentCritic

FALLBACKS = ("refuse", "best")


@dataclass
class PromptSearch:
    """Search bookkeeping of one prompt (its beams are engine rows)."""

    prompt: str
    index: int  # the caller's name for the prompt (its place in the run, or the feed's index)
    started: float = 0.0  # when it joined the search (perf_counter)
    beams: list[int] = field(default_factory=list)  # engine rows of the kept beams, best first
    rows: list[int] = field(default_factory=list)  # engine rows of this pass's candidates
    parents: list[int] = field(default_factory=list)  # the beam each candidate continues
    base: list[int] = field(default_factory=list)  # each candidate's tokens at its block's start
    start_z: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each candidate's z at its block's start
    start_cost: np.ndarray = field(default_factory=lambda: np.zeros(0))  # and its cost spent
    round: int = 0
    retrying: bool = False  # every candidate was unsafe: the next pass draws the block again
    banned: dict[int, set[int]] = field(default_factory=dict)  # beam -> first tokens banned this round
    answer: list[int] | None = None
    refused: bool = False
    tokens: int = 0
    retries: int = 0
    guard_calls: int = 0
    steps: int = 0
    sure: bool = False  # the critic is confident in the best beam: the next round samples one candidate
    unsafe_rounds: list[float] = field(default_factory=list)  # best P(safe) of each round whose candidates were all unsafe
    gated: bool = False  # refused by the gate before any token


def _probability(value: str | float) -> float | None:
    """``value`` as a float, or None where it is no number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class BlockSearch(Method):
    """Shared machinery of ``critic-search`` and ``beam-saute`` (see the module docstring)."""

    uses_guard = True
    uses_budget = True
    continuous = True

    def __init__(self, n: int = 4, k: int = 2, block: int = 16, m: int = 2, fallback: str = "refuse",
                 budget: float | None = None, z0: float = 1.0, batch_size: int = 32,
                 confident: float = 0.0, give_up: float = 0.0, narrow_start: bool = False,
                 degenerate: float = 0.0, gate: str | float = "", gate_policy: str = "") -> None:
        n, k, block, m = int(n), int(k), int(block), int(m)
        self.gate_request = str(gate).strip() == "request"
        p = 0.0 if self.gate_request or str(gate).strip() == "" else _probability(gate)
        if p is None or not 0 <= p < 1:
            raise ValueError(f"gate must be 'request' (the request gate at its own threshold) or a probability in "
                             f"[0, 1) (empty or 0: off; 0.85: refuse where the learned-care policy gives refusal at "
                             f"least 0.85 before any token), got {gate!r}")
        if gate_policy and not p:
            raise ValueError(f"gate_policy={gate_policy!r} names the policy of a policy gate: give gate=p too "
                             f"(gate=request reads the request gate, train.py gate)")
        self.gate, self.gate_policy = p, str(gate_policy)
        self.gate_method: LearnedCare | RequestGate | None = None
        if not 0 <= float(confident) <= 1:
            raise ValueError(f"confident must be a probability in [0, 1] (0: never narrow), got {confident}")
        if not 0 <= float(give_up) <= 1:
            raise ValueError(f"give_up must be a probability in [0, 1] (0: always draw again), got {give_up}")
        self.confident, self.give_up = float(confident), float(give_up)
        self.narrow_start = bool(narrow_start)
        if not 0 <= float(degenerate) <= 1:
            raise ValueError(f"degenerate must be a risk in [0, 1] (0: off; 0.3 flags symbol runs and loops), got {degenerate}")
        self.degenerate = float(degenerate)
        self.degenerate_rule = DegenerateGuard()
        if k < 1 or n < 1:
            raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
        if k > n:
            raise ValueError(f"k (beams kept) must be <= n (candidates), got k={k} > n={n}")
        if block < 1 or m < 0:
            raise ValueError(f"need block >= 1 and m >= 0, got block={block}, m={m}")
        if (budget is not None and not budget > 0) or not z0 > 0:
            raise ValueError(f"budget and z0 must be > 0, got budget={budget}, z0={z0}")
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {fallback!r}; use one of {FALLBACKS}")
        self.n, self.k, self.block, self.m, self.fallback = n, k, block, m, fallback
        self.joins_every = block  # a prompt joins at a pass's start
        self.budget_option = None if budget is None else float(budget)
        self.budget, self.z0, self.batch_size = self.budget_option or 1.0, float(z0), int(batch_size)

    # ------------------------------------------------------------------ scoring (subclasses)
    def prepare(self, ctx: RunContext) -> None:
        """The run's budget (the method's option, else the run's) and the gate's policy; a subclass
        also loads what it reads."""
        self.budget = resolve_budget(self.name, self.budget_option, ctx.budget)
        if self.gate_request and self.gate_method is None:
            self.gate_method = load_request_gate(ctx.lm.model_id)
            self.gate = self.gate_method.threshold
        elif self.gate and self.gate_method is None:
            from latentguard.agents.learned_care import LearnedCare

            self.gate_method = LearnedCare(path=self.gate_policy, batch_size=self.batch_size)
        if self.gate_method is not None and not isinstance(self.gate_method, RequestGate):
            self.gate_method.prepare(ctx)  # refuses a policy trained for another model or guard

    def gated(self, ctx: RunContext, prompts: list[str]) -> np.ndarray:
        """(len(prompts),) bool: the prompts the gate refuses before any token (none with the gate off)."""
        if self.gate_method is None or not prompts:
            return np.zeros(len(prompts), dtype=bool)
        return self.gate_method.first_refusal(prompts, ctx) >= self.gate

    @abc.abstractmethod
    def score(self, ctx: RunContext, state: DecodeState, prompts: list[str], texts: list[str],
              z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every state row: (unsafe, rank score, P(safe) or NaN)."""

    # ------------------------------------------------------------------ search
    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        """Search every prompt, ``batch_size`` at a time: a prompt that is answered frees its rows
        for the next one at the next pass (a rolling window, not batches waiting for their slowest)."""
        if ctx.guard is None:
            raise ValueError(f"{self.name} updates the safety state with the guard's cost: give the run a guard")
        self.prepare(ctx)
        waiting = list(enumerate(prompts))[::-1]
        done: dict[int, PromptSearch] = {}

        def take(n: int) -> list[tuple[int, str]]:
            return [waiting.pop() for _ in range(min(n, len(waiting)))]

        start = time.perf_counter()
        self._search(ctx, self.batch_size, take, lambda index: False, lambda s: done.__setitem__(s.index, s))
        seconds = split_time(time.perf_counter() - start, len(prompts))
        return [self._rollout(ctx, done[i], seconds) for i in range(len(prompts))]

    def serve(self, feed: PromptFeed, ctx: RunContext) -> None:
        """Continuous batching: a request joins the search at the next pass and an answered one, or
        one whose reader left, frees its rows at once (:class:`~latentguard.agents.base.PromptFeed`).

        A pass that answered a prompt lets the feed wait a little before the next one starts, as when
        idle: a client that sends its next request on receiving an answer (an agent, an evaluation
        loop) would otherwise miss the pass by milliseconds and wait a whole block for a row."""
        if ctx.guard is None:
            raise ValueError(f"{self.name} updates the safety state with the guard's cost: give the run a guard")
        self.prepare(ctx)
        idle, answered = [True], [False]

        def take(n: int) -> list[tuple[int, str]]:
            wait, answered[0] = idle[0] or (answered[0] and n > 0), False
            return feed.take(n, idle=wait)

        def finish(s: PromptSearch) -> None:
            answered[0] = True
            feed.finish(s.index, self._rollout(ctx, s, time.perf_counter() - s.started))

        self._search(ctx, feed.max_rows, take, feed.cancelled, finish, idle)

    def _rollout(self, ctx: RunContext, s: PromptSearch, seconds: float) -> Rollout:
        text = REFUSAL if s.refused else ctx.lm.decode(s.answer or [])
        return Rollout(s.prompt, text, s.tokens, 0 if s.refused else len(s.answer or []), seconds,
                       wait_tokens=s.steps, interventions=s.retries, guard_calls=s.guard_calls,
                       extra={"refused": s.refused, "fallback": "refuse" if s.refused else None, "gated": s.gated,
                              "all_unsafe_p_safe": [round(p, 4) for p in s.unsafe_rounds]})

    def _search(self, ctx: RunContext, window: int, take: Callable[[int], list[tuple[int, str]]],
                cancelled: Callable[[int], bool], finish: Callable[[PromptSearch], None],
                idle: list[bool] | None = None) -> None:
        """The search loop of :meth:`run` and :meth:`serve`: at most ``window`` prompts at a time,
        new ones from ``take(n)``, each answered one handed to ``finish`` (``idle[0]`` is kept true
        while no prompt is searched, for a feed that waits then).

        The prompts move in passes of one block: every prompt's candidates decode together, then each
        prompt goes on by itself: one that must draw its block again does so in the next pass, beside
        the other prompts' next rounds, so a retry holds no one up; an answered prompt's rows take
        the next prompt. An answer is released whole once its best candidate has ended (beams may
        still change their text until then), or the refusal."""
        lm, eos = ctx.lm, ctx.lm.eos_token_ids
        engine = Engine(lm, ctx.guard, max_new_tokens=ctx.max_new_tokens, budget=self.budget)
        search: list[PromptSearch] = []  # the prompts being searched, in row order
        while True:
            search = [s for s in search if not cancelled(s.index)]  # a reader who left: rows freed below
            if idle is not None:
                idle[0] = not search
            joining: list[PromptSearch] = []
            while True:  # one take per pass, and another while the gate refuses what was taken
                new = [PromptSearch(prompt, index, time.perf_counter())
                       for index, prompt in take(window - len(search) - len(joining))]
                for s, refuse in zip(new, self.gated(ctx, [s.prompt for s in new])):
                    if refuse:  # the gate refuses it before any token: it takes no rows, the next prompt may
                        s.refused = s.gated = True
                        ctx.released(s.index, REFUSAL)
                        ctx.answered()
                        finish(s)
                joining += [s for s in new if not s.refused]
                if not any(s.gated for s in new) or len(search) + len(joining) >= window:
                    break
                if idle is not None:
                    idle[0] = not search and not joining
            if not search and not joining:
                return
            # this pass's rows: a retrying prompt's candidates rolled back to their block's start, the
            # other prompts' beams spread into their next round's candidates, and n rows per new prompt
            owners = self._owners(search, engine.n)
            if any(s.retrying for s in search):
                engine.crop([len(engine.responses[c]) - search[i].base[j] if i >= 0 and search[i].retrying else 0
                             for c, (i, j) in enumerate(owners)])
            sources: list[int] = []
            for s in search:
                if s.retrying and len(s.rows) < self.n and self.narrow_start:
                    # a narrow round's one draw was unsafe: the retry draws n from that candidate's start
                    s.parents, s.base = [s.parents[0]] * self.n, [s.base[0]] * self.n
                    s.start_z, s.start_cost = np.repeat(s.start_z[:1], self.n), np.repeat(s.start_cost[:1], self.n)
                    s.sure = False
                    rows = [s.rows[0]] * self.n
                elif s.retrying:
                    rows = s.rows
                else:
                    s.parents = self._spread(len(s.beams), s.sure)
                    rows = [s.beams[j] for j in s.parents]
                    s.base = [len(engine.responses[r]) for r in rows]
                    s.round += 1
                    s.start_z, s.start_cost = engine.safety.z[rows].copy(), engine.safety.cost[rows].copy()
                s.rows = list(range(len(sources), len(sources) + len(rows)))
                sources += rows
            starts: dict[int, tuple[str, None, float]] = {}
            for s in joining:
                width = 1 if self.narrow_start else self.n
                s.sure = self.narrow_start
                s.parents, s.base = [0] * width, [0] * width
                s.start_z, s.start_cost = np.full(width, self.z0), np.zeros(width)
                s.rows = list(range(len(sources) + len(starts), len(sources) + len(starts) + width))
                starts.update((row, (s.prompt, None, self.z0)) for row in s.rows)
            if sources:
                engine.fork(sources + [0] * len(starts))  # new prompts' rows: copies of row 0, restarted
                if starts:
                    engine.restart(starts)
            else:  # nothing to keep: a fresh decoding state
                engine.start([p for p, _, _ in starts.values()], z0=self.z0)
            for s in search:  # a new draw starts from its beam's safety state
                engine.safety.z[s.rows], engine.safety.cost[s.rows] = s.start_z, s.start_cost
            search += joining
            rows = list(range(engine.n))
            gens = {c: torch.Generator(device=lm.device).manual_seed(
                prompt_seed(ctx.seed, s.prompt, f"search|{s.round}|{s.retries}|{j}"))
                for s in search for j, c in enumerate(s.rows)}
            banned = {c: s.banned.get(s.parents[j], set()) for s in search for j, c in enumerate(s.rows)}
            added = engine.decode(ctx.sampling, gens, rows, self.block, banned)  # (C,)
            fresh = [c for c in rows if added[c]]  # a finished beam adds no text and no cost
            if fresh:
                engine.check(fresh)  # fails closed; z <- z - cost / budget
            texts = [engine.text(c) for c in rows]
            unsafe, score, p_safe = self.score(ctx, engine.live_state, list(engine.prompts), texts,
                                               engine.safety.z.copy())
            if self.degenerate > 0:  # symbol runs and loops are not answers: draw again, as for unsafe text
                unsafe = unsafe | (self.degenerate_rule.score(list(engine.prompts), texts) >= self.degenerate)
            for s in search:
                cands = s.rows
                s.tokens += int(added[cands].sum())
                s.steps += int(added[cands].max())
                s.guard_calls += sum(1 for c in cands if added[c])
                all_unsafe = all(unsafe[c] for c in cands)
                best_p = max((float(p_safe[c]) for c in cands), default=float("nan"))  # NaN without a critic
                if all_unsafe:
                    s.unsafe_rounds.append(best_p)
                given_up = all_unsafe and best_p < self.give_up  # the critic sees no safe way on from here
                s.retrying = all_unsafe and s.retries < self.m and not given_up
                if s.retrying:  # ban this draw's first tokens for their beams and draw again
                    for j, c in enumerate(cands):
                        if added[c]:
                            s.banned.setdefault(s.parents[j], set()).add(engine.responses[c][s.base[j]])
                    s.retries += 1
                    continue
                s.banned.clear()
                if all(unsafe[c] for c in cands) and self.fallback == "refuse":
                    s.refused = True
                    ctx.released(s.index, REFUSAL)
                else:
                    order = sorted(cands, key=lambda c: (bool(unsafe[c]), -float(score[c])))[: self.k]
                    s.sure = self.confident > 0 and not unsafe[order[0]] and p_safe[order[0]] >= self.confident
                    s.beams = order[:1] if s.sure else order
                    if not engine.ended([order[0]])[0]:
                        continue
                    s.answer = [t for t in engine.responses[order[0]] if t not in eos]  # the best candidate ended
                    ctx.released(s.index, lm.decode(s.answer))
                ctx.answered()
                finish(s)
            search = [s for s in search if s.answer is None and not s.refused]

    @staticmethod
    def _owners(search: list[PromptSearch], n: int) -> list[tuple[int, int]]:
        """(prompt, candidate index) of each of the engine's ``n`` rows; (-1, -1) for a row no prompt
        being searched holds (the rows of a prompt just answered, or whose reader left)."""
        owners = [(-1, -1)] * n
        for i, s in enumerate(search):
            for j, c in enumerate(s.rows):
                owners[c] = (i, j)
        return owners

    def _spread(self, beams: int, sure: bool = False) -> list[int]:
        """Which beam each of the n candidates continues: as evenly as possible, best beams first;
        one candidate of the best beam when the critic was confident in it (``confident``)."""
        return [0] if sure else [c % beams for c in range(self.n)]


class CriticSearch(BlockSearch):
    """InferenceGuard: candidates scored by a latent critic (``critic=PATH`` or the default one)."""

    def __init__(self, critic: str = "", safe_threshold: float = 0.5, confident: float = 0.9,
                 narrow_start: bool = True, degenerate: float = 0.3, prefill_as_answer: bool = False,
                 **kwargs) -> None:
        super().__init__(confident=confident, narrow_start=narrow_start, degenerate=degenerate, **kwargs)
        if not 0 <= safe_threshold <= 1:
            raise ValueError(f"safe_threshold must be in [0, 1], got {safe_threshold}")
        self.prefill_as_answer = bool(prefill_as_answer)
        self.critic_path, self.safe_threshold = critic, float(safe_threshold)
        self.critic: LatentCritic | None = None
        self.name = "critic-search"

    def critic_folder(self, model_id: str) -> Path:
        """Where this search's critic is read from: ``critic=PATH``, else the default for ``model_id``
        (the user cache's, else the one shipped in the package: :func:`latentguard.critics.pretrained.resolve_critic_dir`)."""
        from latentguard.critics.pretrained import resolve_critic_dir

        return Path(self.critic_path) if self.critic_path else resolve_critic_dir(model_id)

    def prepare(self, ctx: RunContext) -> None:
        from latentguard.critics.critic import LatentCritic

        super().prepare(ctx)
        if self.critic is None:
            folder = self.critic_folder(ctx.lm.model_id)
            try:
                self.critic = LatentCritic.load(folder)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"critic-search needs a trained critic and found none in {folder}. Build the default one with:\n"
                    f"    python train.py collect --model {ctx.lm.model_id}\n"
                    f"    python train.py critic --model {ctx.lm.model_id}\n"
                    "or pass one: critic-search:critic=PATH") from err
        critic = self._loaded_critic()
        critic.check(ctx.lm)
        self.check_convention(ctx)
        ctx.lm.capture_layer(critic.config.layer, history=critic.config.pooling != "last")

    def _loaded_critic(self) -> LatentCritic:
        """The critic :meth:`prepare` loaded (an error before that)."""
        if self.critic is None:
            raise RuntimeError(f"{self.name} has no critic yet: call prepare(ctx) first")
        return self.critic

    def check_convention(self, ctx: RunContext) -> None:
        """Refuse a critic whose safety head predicts under another guard, budget or cost rule than
        this search's: its P(safe) would answer another question."""
        cfg = self._loaded_critic().config
        trained = BudgetConvention.from_record(cfg.convention, cfg.budget)
        guard = ctx.guard_spec or (ctx.guard.name if ctx.guard is not None else "")
        if not guard:
            raise ValueError(f"{self.name} scores under the run's guard: give the run a guard")
        run = BudgetConvention(self.budget, 1.0, "flag", guard)
        problems = trained.mismatch(run)
        if problems:
            raise ValueError(f"the critic was trained with {'; '.join(problems)}: train a critic for this run "
                             "(python train.py collect --guard ... && python train.py critic) or match it")

    def score(self, ctx, state, prompts, texts, z):
        critic = self._loaded_critic()
        cfg = critic.config
        h = state.features(cfg.layer, cfg.pooling, forced_as_answer=self.prefill_as_answer)  # (B, H), or (B, 2H)
        p_safe_t, value_t = critic.predict(h, torch.as_tensor(z, dtype=torch.float32))
        p_safe, value = p_safe_t.cpu().numpy(), value_t.cpu().numpy()
        return ~within_budget(z) | (p_safe < self.safe_threshold), value, p_safe


class BeamSaute(BlockSearch):
    """Beam search scored by the guard (safety state) and the task reward, no critic."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.name = "beam-saute"

    def score(self, ctx, state, prompts, texts, z):
        if ctx.reward is None:
            raise ValueError("beam-saute ranks by the task reward: give the run a reward function")
        reward = np.asarray(ctx.reward(prompts, texts), dtype=np.float64)
        return ~within_budget(z), reward, np.full(len(z), np.nan)
