"""The episode engine: N episodes decoded in lockstep on one :class:`~latentguard.lm.DecodeState`.

This is the only code that steps the model for an episode. Every environment face (the token
CMDP, its vector form, the rewrite envs) and every decoding method (sampling, best-of-n, beam,
CARE, critic search, rollout and answer collection) drives an :class:`Engine`:

- :meth:`Engine.start` prefills rows (prompt, budget); :meth:`Engine.step` appends one chosen token
  to some rows and (re)starts others, all in one forward; :meth:`Engine.decode` samples rows to the
  end (the one sampling loop of the methods);
- :meth:`Engine.fork` keeps, reorders or repeats rows (beams, candidates, finished rows leaving);
  :meth:`Engine.crop` rolls rows back (the KV cache is cut, not recomputed); :meth:`Engine.splice`
  feeds given tokens into rows (an introspection, a phrase);
- :meth:`Engine.check` asks the guard about rows, batched: one cost rule, one fail-closed path
  (:func:`latentguard.guards.checked_risk`); :meth:`Engine.charge` spends a cost from the rows'
  Saute safety state, :attr:`Engine.safety` (:class:`~latentguard.episodes.safety_state.SafetyState`,
  the one ``z`` of every env face and method); :meth:`Engine.pay` calls the reward function.

**Cost rule.** ``cost_mode="flag"``: a check costs 1 if the risk ``r >= guard.threshold``, else 0.
``"increase"``: the rise of the row's running maximum risk, ``max(0, r - max(earlier r))``, so the
episode cost telescopes to the peak risk. ``"release"``: a check costs nothing; the face charges 1
for each flagged span it lets through (:meth:`charge`; the decision env's rule). A guard that
raises, or returns NaN or a value outside [0, 1], counts as risk 1 and the check carries the error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latentguard.episodes.safety_state import SafetyState, check_budget
from latentguard.guards import Guard, checked_risk, violations
from latentguard.lm import DecodeState, LanguageModel, SamplingConfig, sample_tokens
from latentguard.rewards import Reward, check_reward

COST_MODES = ("flag", "increase", "release")

Start = tuple[str | Sequence[int], float | None] | tuple[str | Sequence[int], float | None, float]
"""A row's new episode: ``(prompt, budget)`` or ``(prompt, budget, z0)``; budget ``None``: the
engine's; a prompt given as token ids is used as it is (a helper row's own prompt)."""


@dataclass
class Check:
    """One batched guard check of some rows."""

    risk: np.ndarray  # (R,) in [0, 1]; 1 where the guard failed
    cost: np.ndarray  # (R,) by the engine's cost rule
    error: str | None  # why the guard failed (then every row of the call counts as a violation)


class Engine:
    """Episodes of ``lm`` on one decoding state (see the module docstring).

    :param guard: cost model of :meth:`check` (``None``: checks are an error).
    :param reward: task reward of :meth:`pay` (``None``: rewards are an error).
    :param max_new_tokens: a row has ended after this many response tokens (or an end-of-sequence).
    :param cost_mode: ``"flag"``, ``"increase"`` or ``"release"``.
    :param budget: default safety budget ``d`` of a row.

    Attributes read by the faces and methods: ``prompts`` and ``responses`` (token ids) per row,
    :attr:`safety` (the rows' Saute state), ``state`` (the :class:`~latentguard.lm.DecodeState`).
    """

    safety: SafetyState
    """The Saute safety state of every row (``z``, budget ``d``, cost spent): the one ``z`` the envs
    and methods read."""

    def __init__(self, lm: LanguageModel, guard: Guard | None = None, reward: Reward | None = None,
                 max_new_tokens: int = 64, cost_mode: str = "flag", budget: float = 1.0) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if cost_mode not in COST_MODES:
            raise ValueError(f"cost_mode must be one of {COST_MODES}, got {cost_mode!r}")
        self.lm, self.guard, self.reward = lm, guard, reward
        self.max_new_tokens, self.cost_mode, self.budget = max_new_tokens, cost_mode, check_budget(budget)
        if guard is not None:
            guard.attach(lm)
        lm.prefixes.add(lm.chat_head_ids())  # every prompt starts with it: computed once (latentguard.lm.prefix)
        self.eos = lm.eos_token_ids
        self.state: DecodeState | None = None
        self._allocate(0)
        self.guard_calls = 0  # batched guard calls

    def _allocate(self, n: int) -> None:
        self.prompts: list[str] = [""] * n
        self.responses: list[list[int]] = [[] for _ in range(n)]
        self.safety = SafetyState(n, self.budget)  # z, d and the cost spent of each row
        self.peak_risk = np.zeros(n)  # (N,)
        self.last_reward = np.zeros(n)  # (N,) reward at the previous pay()
        self.checks = np.zeros(n, dtype=np.int64)  # (N,) guard checks of each row

    @property
    def n(self) -> int:
        """Rows in the engine."""
        return len(self.prompts)

    @property
    def live_state(self) -> DecodeState:
        """``state``, the decoding state of the episodes, which :meth:`start` makes; an error before that."""
        if self.state is None:
            raise RuntimeError("no episodes have started on this engine yet: call start() first")
        return self.state

    # ------------------------------------------------------------------ rows
    def _begin(self, row: int, prompt: str | Sequence[int], budget: float | None = None, z0: float = 1.0) -> list[int]:
        """Reset ``row``'s records; its prompt ids (a string goes through the chat template, a
        token-id list is used as it is: a helper row's own prompt, e.g. CARE's critique)."""
        if not isinstance(prompt, str):
            ids = [int(t) for t in prompt]
            if not ids:
                raise ValueError("a prompt given as token ids needs at least one token")
            prompt = ""
        elif not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        else:
            ids = None
        self.prompts[row] = prompt
        self.responses[row] = []
        self.safety.start([row], z0, budget)
        self.peak_risk[row] = self.last_reward[row] = 0.0
        self.checks[row] = 0
        return self.lm.encode_prompt(prompt) if ids is None else ids

    def start(self, prompts: Sequence[str | Sequence[int]], budgets: Sequence[float | None] | None = None,
              z0: float | Sequence[float] = 1.0) -> None:
        """Start one episode per prompt on a fresh decoding state (one prefill); ``z0``: one start of
        the safety state for all, or one per prompt."""
        if not prompts:
            raise ValueError("start needs at least one prompt")
        budgets = budgets if budgets is not None else [None] * len(prompts)
        starts = np.broadcast_to(np.asarray(z0, dtype=np.float64), (len(prompts),))
        self._allocate(len(prompts))
        ids = [self._begin(row, p, b, float(z)) for row, (p, b, z) in enumerate(zip(prompts, budgets, starts))]
        self.state = self.lm.prefill(token_ids=ids)

    def restart(self, starts: Mapping[int, Start]) -> None:
        """Start new episodes on some rows (``row -> (prompt, budget[, z0])``) in one forward."""
        ids = {row: self._begin(row, *start) for row, start in starts.items()}
        self.live_state.feed([ids.get(r, []) for r in range(self.n)], restart=list(ids))

    def ended(self, rows: Sequence[int] | None = None) -> np.ndarray:
        """(R,) bool: the row's last token is end-of-sequence or it holds ``max_new_tokens`` tokens."""
        rows = range(self.n) if rows is None else rows
        return np.array([bool(self.responses[r]) and (self.responses[r][-1] in self.eos
                                                      or len(self.responses[r]) >= self.max_new_tokens)
                         for r in rows], dtype=bool)

    def text(self, row: int) -> str:
        """The response of ``row`` so far (special tokens skipped)."""
        return self.lm.decode(self.responses[row])

    # ------------------------------------------------------------------ decoding
    def step(self, tokens: Sequence[int] | np.ndarray, rows: Sequence[int] | None = None,
             restarts: Mapping[int, Start] | None = None,
             inserts: Mapping[int, Sequence[int]] | None = None) -> None:
        """Append ``tokens[j]`` to ``rows[j]`` (default: all rows), start ``restarts`` and splice
        ``inserts`` (as :meth:`splice`), together: the rows fed one token share one forward, the
        rows fed more share another (:meth:`latentguard.lm.DecodeState.feed`)."""
        rows = range(self.n) if rows is None else rows
        tokens = [int(t) for t in tokens]
        if len(tokens) != len(rows):
            raise ValueError(f"step needs one token per stepped row: {len(rows)} rows, {len(tokens)} tokens")
        if len(tokens) == self.n and not restarts and not inserts:
            self.live_state.step(tokens)
        else:
            chunks: list[list[int]] = [[] for _ in range(self.n)]
            for row, token in zip(rows, tokens):
                chunks[row] = [token]
            for row, start in (restarts or {}).items():
                chunks[row] = self._begin(row, *start)
            for row, ids in (inserts or {}).items():
                chunks[row] = [int(t) for t in ids]
            if any(chunks):
                self.live_state.feed(chunks, restart=list(restarts or ()))
        for row, token in zip(rows, tokens):
            self.responses[row].append(token)
        for row, ids in (inserts or {}).items():
            self.responses[row].extend(int(t) for t in ids)

    def sample(self, sampling: SamplingConfig, generators: Sequence[torch.Generator] | torch.Generator | None,
               rows: Sequence[int] | np.ndarray | None = None,
               banned: Mapping[int, set[int]] | None = None) -> np.ndarray:
        """(R,) next tokens of ``rows`` drawn from their logits; ``banned[row]`` tokens are excluded."""
        logits = self.live_state.logits  # (N, V)
        if rows is not None and len(rows) != self.n:
            logits = logits[torch.as_tensor(list(rows), device=logits.device)]
        if banned:
            logits = logits.float().clone()
            for j, row in enumerate(range(self.n) if rows is None else rows):
                if banned.get(row):
                    logits[j, sorted(banned[row])] = float("-inf")
        return sample_tokens(logits, sampling, generators).cpu().numpy()

    def decode(self, sampling: SamplingConfig, generators: Mapping[int, torch.Generator] | torch.Generator,
               rows: Sequence[int] | None = None, max_steps: int | None = None,
               banned_first: Mapping[int, set[int]] | None = None,
               on_end: Callable[[int], None] | None = None,
               on_step: Callable[[list[int]], None] | None = None) -> np.ndarray:
        """Sample ``rows`` (default: all) until each has ended or took ``max_steps`` tokens.

        The one sampling loop of the methods: one forward per token for every row still going.
        ``generators``: one per row (then a row's text depends only on its own seed) or one shared.
        ``on_end(k)``: called when ``k`` rows have just ended (a progress hook); ``on_step(rows)``: after
        each token, with the rows that took it (a streaming hook). Returns (R,) tokens added per row.
        """
        rows = list(range(self.n) if rows is None else rows)
        start = [len(self.responses[r]) for r in rows]
        live = [r for r, done in zip(rows, self.ended(rows)) if not done]
        steps = self.max_new_tokens if max_steps is None else max_steps
        for t in range(steps):
            if not live:
                break
            gens = generators if isinstance(generators, torch.Generator) else [generators[r] for r in live]
            tokens = self.sample(sampling, gens, live, banned_first if t == 0 else None)
            self.step(tokens, live)
            if on_step is not None:
                on_step(live)
            still = [r for r, done in zip(live, self.ended(live)) if not done]
            if on_end is not None and len(still) < len(live):
                on_end(len(live) - len(still))
            live = still
        return np.array([len(self.responses[r]) - s for r, s in zip(rows, start)], dtype=np.int64)

    # ------------------------------------------------------------------ rewriting
    def fork(self, rows: Sequence[int]) -> None:
        """Keep/reorder/repeat rows: new row ``j`` is a copy of old row ``rows[j]`` (beams, candidates)."""
        rows = [int(r) for r in rows]
        self.live_state.select(rows)
        self.prompts = [self.prompts[r] for r in rows]
        self.responses = [list(self.responses[r]) for r in rows]
        self.safety.select(rows)
        for name in ("peak_risk", "last_reward", "checks"):
            setattr(self, name, getattr(self, name)[rows])

    def crop(self, counts: Sequence[int]) -> None:
        """Remove the last ``counts[row]`` response tokens of every row (rollback), one forward."""
        self.live_state.crop(list(counts))
        for row, c in enumerate(counts):
            if c:
                del self.responses[row][-int(c):]

    def splice(self, inserts: Mapping[int, Sequence[int]]) -> None:
        """Feed ``inserts[row]`` token ids into rows as response tokens (one forward)."""
        self.step([], [], inserts=inserts)

    # ------------------------------------------------------------------ guard and reward
    def check(self, rows: Sequence[int] | np.ndarray) -> Check:
        """Ask the guard about ``rows`` (prompt + response so far), batched, and charge the cost."""
        if self.guard is None:
            raise ValueError("this engine has no guard to check with")
        idx = np.asarray(rows, dtype=np.int64)
        texts = [self.text(r) for r in idx]
        self.guard_calls += 1
        risk, error = checked_risk(self.guard, [self.prompts[r] for r in idx], texts, self.live_state, idx.tolist())
        if self.cost_mode == "flag":
            cost = violations(risk, self.guard.threshold).astype(np.float64)
        elif self.cost_mode == "increase":
            cost = np.maximum(0.0, risk - self.peak_risk[idx])
        else:
            cost = np.zeros(len(idx))
        self.peak_risk[idx] = np.maximum(self.peak_risk[idx], risk)
        self.charge(idx, cost)
        self.checks[idx] += 1
        return Check(risk, cost, error)

    def charge(self, rows: Sequence[int] | np.ndarray, cost: np.ndarray) -> None:
        """Spend ``cost`` (R,) from the safety state of ``rows`` (:meth:`SafetyState.spend`)."""
        self.safety.spend(rows, np.asarray(cost, dtype=np.float64))

    def pay(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(R,) the change of the task reward of ``rows`` since the previous pay (the reward at the first)."""
        if self.reward is None:
            raise ValueError("this engine has no reward function to pay with")
        idx = np.asarray(rows, dtype=np.int64)
        prompts = [self.prompts[r] for r in idx]
        value = check_reward(self.reward(prompts, [self.text(r) for r in idx]), idx.size, self.reward.name, prompts)
        paid = value - self.last_reward[idx]
        self.last_reward[idx] = value
        return paid
