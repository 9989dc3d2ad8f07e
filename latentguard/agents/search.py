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
sampled again, at most ``m`` times; then the ``fallback``: ``refuse`` releases a refusal, ``best``
keeps the best-scored candidates anyway. A prompt is answered when its best candidate has
ended (end-of-sequence) or the length limit is reached.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from latentguard.agents.base import Method, Rollout, RunContext, chunks, prompt_seed, resolve_budget, split_time
from latentguard.episodes.engine import Engine
from latentguard.episodes.release import REFUSAL
from latentguard.episodes.safety_state import BudgetConvention, within_budget
from latentguard.lm import DecodeState

if TYPE_CHECKING:
    from latentguard.critics.critic import LatentCritic

FALLBACKS = ("refuse", "best")


@dataclass
class PromptSearch:
    """Search bookkeeping of one prompt (its beams are engine rows)."""

    beams: list[int]  # engine rows of the kept beams, best first
    answer: list[int] | None = None
    refused: bool = False
    tokens: int = 0
    retries: int = 0
    guard_calls: int = 0
    steps: int = 0
    banned: dict[int, set[int]] = field(default_factory=dict)  # beam index -> first tokens banned this round


class BlockSearch(Method):
    """Shared machinery of ``critic-search`` and ``beam-saute`` (see the module docstring)."""

    uses_guard = True
    uses_budget = True

    def __init__(self, n: int = 4, k: int = 2, block: int = 16, m: int = 2, fallback: str = "refuse",
                 budget: float | None = None, z0: float = 1.0, batch_size: int = 8) -> None:
        n, k, block, m = int(n), int(k), int(block), int(m)
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
        self.budget_option = None if budget is None else float(budget)
        self.budget, self.z0, self.batch_size = self.budget_option or 1.0, float(z0), int(batch_size)

    # ------------------------------------------------------------------ scoring (subclasses)
    def prepare(self, ctx: RunContext) -> None:
        """The run's budget (the method's option, else the run's); a subclass also loads what it reads."""
        self.budget = resolve_budget(self.name, self.budget_option, ctx.budget)

    @abc.abstractmethod
    def score(self, ctx: RunContext, state: DecodeState, prompts: list[str], texts: list[str],
              z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every state row: (unsafe, rank score, P(safe) or NaN)."""

    # ------------------------------------------------------------------ search
    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        if ctx.guard is None:
            raise ValueError(f"{self.name} updates the safety state with the guard's cost: give the run a guard")
        self.prepare(ctx)
        out: list[Rollout] = []
        for batch in chunks(list(prompts), self.batch_size):
            out += self._batch(list(batch), ctx, offset=len(out))
        return out

    def _batch(self, prompts: list[str], ctx: RunContext, offset: int = 0) -> list[Rollout]:
        """Search a batch; ``offset``: the index of its first prompt in the run (for ``ctx.released``).
        An answer is released whole once its best candidate has ended (beams may still change
        their text until then), or the refusal."""
        lm, eos = ctx.lm, ctx.lm.eos_token_ids
        start = time.perf_counter()
        engine = Engine(lm, ctx.guard, max_new_tokens=ctx.max_new_tokens, budget=self.budget)
        engine.start(prompts, z0=self.z0)
        search = [PromptSearch([i]) for i in range(len(prompts))]
        rnd = 0
        while any(s.answer is None and not s.refused for s in search):
            active = [i for i, s in enumerate(search) if s.answer is None and not s.refused]
            # expand every active prompt's beams into n candidates: engine row c is candidate c
            parent = [(i, j) for i in active for j in self._spread(len(search[i].beams))]
            engine.fork([search[i].beams[j] for i, j in parent])
            base = [len(r) for r in engine.responses]  # (C,) tokens of each candidate's beam
            beams_state = engine.safety.snapshot()  # each candidate's beam's z and cost
            todo = list(range(len(parent)))
            while True:
                gens = {c: torch.Generator(device=lm.device).manual_seed(
                    prompt_seed(ctx.seed, f"{parent[c]}|{rnd}|{search[parent[c][0]].retries}", c)) for c in todo}
                banned = {c: search[parent[c][0]].banned.get(parent[c][1], set()) for c in todo}
                added = dict(zip(todo, engine.decode(ctx.sampling, gens, todo, self.block, banned).tolist()))
                for i in {parent[c][0] for c in todo}:  # tokens and decoding steps this attempt took, per prompt
                    search[i].tokens += sum(added[c] for c in todo if parent[c][0] == i)
                    search[i].steps += max(added[c] for c in todo if parent[c][0] == i)
                fresh = [c for c in todo if added[c]]  # a finished beam adds no text and no cost
                if fresh:
                    engine.check(fresh)  # fails closed; z <- z - cost / budget
                    for c in fresh:
                        search[parent[c][0]].guard_calls += 1
                texts = [engine.text(c) for c in range(len(parent))]
                unsafe, score, _ = self.score(ctx, engine.live_state, list(engine.prompts), texts,
                                              engine.safety.z.copy())
                retry = [i for i in active if self._all_unsafe(i, parent, unsafe) and search[i].retries < self.m]
                if not retry:
                    break
                todo = [c for c, (i, _) in enumerate(parent) if i in retry]
                for c in todo:  # ban this round's first tokens for the beam, roll the block back
                    i, j = parent[c]
                    if added[c]:
                        search[i].banned.setdefault(j, set()).add(engine.responses[c][base[c]])
                for i in retry:
                    search[i].retries += 1
                redraw = set(todo)
                engine.crop([len(engine.responses[c]) - base[c] if c in redraw else 0 for c in range(len(parent))])
                engine.safety.restore(todo, beams_state)  # the new draw starts from its beam's safety state
            for s in search:
                s.banned.clear()
            kept_rows: list[int] = []
            for i in active:
                s = search[i]
                cands = [c for c, (pi, _) in enumerate(parent) if pi == i]
                if all(unsafe[c] for c in cands) and self.fallback == "refuse":
                    s.refused = True
                    ctx.released(offset + i, REFUSAL)
                    ctx.answered()
                    continue
                order = sorted(cands, key=lambda c: (bool(unsafe[c]), -float(score[c])))[: self.k]
                if engine.ended([order[0]])[0]:  # the best candidate has ended: answer with it
                    s.answer = [t for t in engine.responses[order[0]] if t not in eos]
                    ctx.released(offset + i, lm.decode(s.answer))
                    ctx.answered()
                    continue
                s.beams = list(range(len(kept_rows), len(kept_rows) + len(order)))
                kept_rows += order
            if kept_rows:
                engine.fork(kept_rows)
            rnd += 1
        seconds = time.perf_counter() - start
        out = []
        for prompt, s in zip(prompts, search):
            text = REFUSAL if s.refused else lm.decode(s.answer or [])
            out.append(Rollout(prompt, text, s.tokens, 0 if s.refused else len(s.answer or []),
                               split_time(seconds, len(prompts)), wait_tokens=s.steps, interventions=s.retries,
                               guard_calls=s.guard_calls,
                               extra={"refused": s.refused, "fallback": "refuse" if s.refused else None}))
        return out

    def _spread(self, beams: int) -> list[int]:
        """Which beam each of the n candidates continues: as evenly as possible, best beams first."""
        return [c % beams for c in range(self.n)]

    @staticmethod
    def _all_unsafe(i: int, parent, unsafe) -> bool:
        return all(unsafe[c] for c, (pi, _) in enumerate(parent) if pi == i)


class CriticSearch(BlockSearch):
    """InferenceGuard: candidates scored by a latent critic (``critic=PATH`` or the default one)."""

    def __init__(self, critic: str = "", safe_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= safe_threshold <= 1:
            raise ValueError(f"safe_threshold must be in [0, 1], got {safe_threshold}")
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
        h = state.features(cfg.layer, cfg.pooling)  # (B, H), or (B, 2H) for mean+request
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
