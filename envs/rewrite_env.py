"""RewriteWrapper: CARE's rollback and introspection as actions of the token environment.

Wraps a :class:`~envs.token_env.TokenCMDPEnv` (guard required). Actions ``0..top_k-1`` choose the
next token as before; ``ROLLBACK = top_k`` crops the answer back to the released text (the KV cache
is cut, not recomputed); ``INTROSPECT = top_k + 1`` rolls back and splices a self-critique written
by the same model (:mod:`envs.rewrite`). The guard checks every ``check_every`` tokens and at the
end (the wrapped env's checks: its ``guard_every`` is set to ``check_every``); the newest ``buffer``
tokens are held back from the user (``info["released_text"]``).

- A flagged check sets ``info["flagged"]``; the policy may intervene or keep going (flagged text
  then reaches the user once it leaves the buffer: ``info["released_flagged"]``).
- A flagged final check does not end the episode while attempts remain: only the two rewrite
  actions are legal then (:meth:`RewriteWrapper.action_masks`).
- After ``max_attempts`` interventions on one span the fallback is applied automatically:
  ``refuse`` ends the episode with a refusal released, ``continue`` stops checking.
- Rewrite actions are legal only while the buffer holds something and attempts remain.
- ``info`` also carries the counters: interventions, wait_tokens, guard_calls, tokens_discarded.

The CARE agent (``agents/care.py``) drives the same bookkeeping with a fixed rule, batched; an
RL policy (MaskablePPO) can learn when to intervene on this env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.guards import violations
from envs.rewrite import ReleaseBuffer, RewriteConfig


class RewriteWrapper(gym.Wrapper):
    """Release buffer + ROLLBACK / INTROSPECT actions (see the module docstring).

    :param env: a TokenCMDPEnv (optionally wrapped) with a guard.
    :param buffer, check_every, max_attempts, fallback, show_critique, critique_temperature,
        opening, refusal: see :class:`envs.rewrite.RewriteConfig` (the intervention is chosen by
        the action: ROLLBACK = resample, INTROSPECT = introspect).
    """

    def __init__(self, env: gym.Env, buffer: int = 40, check_every: int = 0, max_attempts: int = 5,
                 fallback: str = "refuse", show_critique: bool = True, critique_temperature: float = 1.1,
                 seed: int = 0) -> None:
        super().__init__(env)
        inner = env.unwrapped
        if getattr(inner, "guard", None) is None:
            raise ValueError("RewriteWrapper needs a token env with a guard (guard=...)")
        self.config = RewriteConfig(buffer=buffer, check_every=check_every, max_attempts=max_attempts,
                                    fallback=fallback, show_critique=show_critique,
                                    critique_temperature=critique_temperature)
        inner.config.guard_every = self.config.check_every  # the env's checks are the buffer's checks
        self.inner = inner
        self.top_k = inner.config.top_k
        self.ROLLBACK, self.INTROSPECT = self.top_k, self.top_k + 1
        self.action_space = gym.spaces.Discrete(self.top_k + 2)
        self.buffer = ReleaseBuffer(inner.lm, self.config, n=1)
        self.seed_base = seed
        self._must_intervene = False
        self._ended = False

    # ------------------------------------------------------------------ helpers
    @property
    def _response(self) -> list[int]:
        return self.inner.episodes.responses[0]

    def _info(self, info: dict) -> dict:
        rec = self.buffer.rows[0]
        info = dict(info)
        info.update(released_text=self.buffer.released_text(0, self._response), interventions=rec.interventions,
                    wait_tokens=rec.wait_tokens, guard_calls=rec.guard_calls, tokens_discarded=rec.discarded,
                    fallback=rec.fallback, must_intervene=self._must_intervene)
        return info

    def _can_rewrite(self) -> bool:
        return self.buffer.unreleased(0, self._response) > 0 and self.buffer.can_intervene(0)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.buffer.reset_row(0)
        self._must_intervene = self._ended = False
        return obs, self._info(info)

    def step(self, action):
        if self._ended:
            raise RuntimeError("the episode is over; call reset() first")
        action = int(action)
        if not self.action_masks()[action]:
            raise ValueError(f"action {action} is not legal now: see action_masks() "
                             f"(rewrite actions need an unreleased buffer and attempts left)")
        if action >= self.top_k:
            return self._rewrite(action)
        obs, reward, terminated, truncated, info = self.env.step(action)
        final = terminated or truncated
        length = len(self._response)
        rec = self.buffer.rows[0]
        released_before = rec.released
        info["flagged"] = False
        if "risk" in info and rec.checking:
            rec.guard_calls += 1
            if violations(info["risk"], self.inner.guard.threshold):
                info["flagged"] = True
                if self.buffer.can_intervene(0):
                    if final:  # not over yet: the policy must rewrite
                        self._must_intervene = True
                        terminated = truncated = False
                else:
                    self.buffer.fail(0, length, final)
                    if rec.refused:
                        terminated = True
            else:
                self.buffer.passed(0, length, final)
        else:
            self.buffer.advance(0, length, final)
        info["released_flagged"] = bool(info["flagged"] and rec.released > released_before)
        self._ended = terminated or truncated
        return obs, reward, terminated, truncated, self._info(info)

    def _rewrite(self, action: int):
        inner = self.inner
        rec = self.buffer.rows[0]
        self.buffer.config.intervention = "introspect" if action == self.INTROSPECT else "resample"
        self.buffer.intervene(inner.episodes.state, [0], [0], inner.episodes.responses, inner.episodes.prompts,
                              seeds=[self.seed_base + 7919 * rec.interventions])
        inner.episodes._refresh_candidates()
        inner._done = False  # the answer goes on from the released text
        self._must_intervene = False
        obs = inner.episodes.observations()[0]
        info = inner.episodes.info(0)
        info.update(cost=0.0, flagged=False, released_flagged=False, token_id=-1)
        return obs, 0.0, False, False, self._info(info)

    def action_masks(self) -> np.ndarray:
        """(top_k + 2,) bool: token actions (none while a rewrite is required), then ROLLBACK, INTROSPECT."""
        tokens = np.zeros(self.top_k, dtype=bool) if self._must_intervene else self.inner.action_masks()
        rewrite = self._can_rewrite()
        return np.concatenate([tokens, [rewrite, rewrite]])
