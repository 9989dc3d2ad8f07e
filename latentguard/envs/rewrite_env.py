"""The rewrite environments: CARE's rollback and introspection as actions of the token CMDP.

A face of the episode engine (:mod:`latentguard.episodes.engine`) with the release buffer of :mod:`latentguard.episodes.release`.
Actions ``0..top_k-1`` choose the next token as in the token env; three more rewrite the answer:

- ``RESAMPLE = top_k`` (alias ``ROLLBACK``): crop back to the released text (the KV cache is cut,
  not recomputed) and decode again from there;
- ``INTROSPECT = top_k + 1``: crop back and splice a self-critique written by the same model. The
  critique is decoded on a helper row of the engine, in the forwards of the other sub-envs' steps;
  until it is done (at most ``buffer`` tokens) the sub-env waits (``info["waiting"]``): only action
  0 is legal and it changes nothing;
- ``PHRASE = top_k + 2``: crop back and splice the critique's fixed opening alone.

The guard checks every ``check_every`` tokens (default b/2) and at the end; the newest ``buffer``
tokens are held back from the user (``info["released_text"]``).

- A flagged check sets ``info["flagged"]`` and :meth:`RewriteEpisodes.awaiting_rewrite`; the policy may
  rewrite or keep going (flagged text then reaches the user once it leaves the buffer:
  ``info["released_flagged"]``).
- A flagged final check does not end the episode while attempts remain: only the rewrite actions
  are legal then (``info["must_intervene"]``).
- After ``max_attempts`` interventions on one span the fallback is applied by the env: ``refuse``
  ends the episode with a refusal released, ``continue`` stops checking.
- Rewrite actions are legal only while the buffer holds something and attempts remain.
  :meth:`RewriteEpisodes.action_masks` says what is legal (for MaskablePPO); an action it forbids is
  not an error but is replaced, and ``info["illegal_action"]`` says so: a rewrite that is not
  allowed by the most likely token (action 0), a token where a rewrite is required by ``RESAMPLE``.
  An action outside ``0..top_k+2`` is an error.
- An episode is truncated after ``max_new_tokens * (max_attempts + 2)`` decoded tokens, whatever
  happens (a loop of flags and passes cannot run for ever); the unreleased buffer stays unreleased.
- ``info`` carries the counters: interventions, wait_tokens, guard_calls (this answer's checks),
  tokens_discarded, fallback.

:class:`RewriteVectorEnv` batches sub-envs (one forward per step for the rows fed one token, one
for the rows fed more: prompts, critique prompts, splices; one crop for all rollbacks);
:class:`RewriteEnv` is the single env. CARE's fixed rule
(:mod:`latentguard.agents.care`) is a policy over the vector env; an RL policy (MaskablePPO) can learn when to
intervene on either.
"""

from __future__ import annotations

from typing import Any

from latentguard.envs.token_env import TokenCMDPEnv
from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
from latentguard.episodes.rewrite_episodes import REWRITES, RewriteEpisodes, rewrite_config

__all__ = ["REWRITES", "RewriteEnv", "RewriteEpisodes", "RewriteVectorEnv"]


class RewriteVectorEnv(TokenCMDPVectorEnv):
    """``num_envs`` rewrite envs decoded as one batch (see the module docstring).

    Takes the arguments of :class:`~latentguard.envs.token_vector_env.TokenCMDPVectorEnv` (a guard is
    required) and the release buffer's: ``buffer`` (b), ``check_every`` (0 = b/2),
    ``max_attempts`` (N), ``fallback``, ``single``, ``show_critique``, ``critique_temperature``
    (:class:`latentguard.episodes.release.RewriteConfig`). The reset seed also seeds the critiques.
    """

    episodes: RewriteEpisodes

    def __init__(self, num_envs: int = 8, *, buffer: int = 40, check_every: int = 0, max_attempts: int = 5,
                 fallback: str = "refuse", single: bool = False, show_critique: bool = True,
                 critique_temperature: float = 1.1, **kwargs: Any) -> None:
        self.rewrite = rewrite_config(buffer, check_every, max_attempts, fallback, single, show_critique,
                                      critique_temperature)
        super().__init__(num_envs, **kwargs)
        self.RESAMPLE, self.INTROSPECT, self.PHRASE = self.episodes.rewrite_actions
        self.ROLLBACK = self.RESAMPLE

    def make_episodes(self) -> RewriteEpisodes:
        return RewriteEpisodes(self.lm, self.config, self.guard, self.reward_fn, self.num_envs, self.rewrite)


class RewriteEnv(TokenCMDPEnv):
    """One rewrite env: :class:`~latentguard.envs.token_env.TokenCMDPEnv`'s arguments (a guard is required)
    plus the release buffer's (see :class:`RewriteVectorEnv`)."""

    episodes: RewriteEpisodes

    def __init__(self, *, buffer: int = 40, check_every: int = 0, max_attempts: int = 5, fallback: str = "refuse",
                 single: bool = False, show_critique: bool = True, critique_temperature: float = 1.1,
                 **kwargs: Any) -> None:
        self.rewrite = rewrite_config(buffer, check_every, max_attempts, fallback, single, show_critique,
                                      critique_temperature)
        super().__init__(**kwargs)
        self.RESAMPLE, self.INTROSPECT, self.PHRASE = self.episodes.rewrite_actions
        self.ROLLBACK = self.RESAMPLE

    def make_episodes(self) -> RewriteEpisodes:
        return RewriteEpisodes(self.lm, self.config, self.guard, self.reward_fn, 1, self.rewrite)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        out = super().reset(seed=seed, options=options)
        self.episodes.seed = 0 if seed is None else int(seed)
        return out
