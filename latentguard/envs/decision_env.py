"""The decision env: CARE's choices as a constrained MDP over release points, for a learned policy.

The agent acts only where CARE's fixed rule acts: when an answer starts and after every guard
check (every ``check_every`` tokens, b/2 by default, and at the end). In between, the policy model
decodes with its own sampler (one seeded generator per episode, as every decoding method), all
sub-envs in one forward per token, on the rewrite env's engine face
(:class:`latentguard.episodes.rewrite_episodes.RewriteEpisodes`: release buffer, rollback, critiques on
helper rows).

**Actions** (:data:`ACTIONS`):

- 0 ``continue``: decode on. After a flagged check this keeps the flagged span, to be released:
  the episode's cost rises by 1 (also when the env's ``continue`` fallback does it). The cost is the
  decision's, not the release's: a later rewrite that discards the span before it reaches the user
  does not refund it (the agent accepted the flag);
- 1 ``resample``: roll back to the released text and decode again;
- 2 ``introspect``: roll back and splice the model's self-critique (written in the same forwards);
- 3 ``refuse``: end the answer: the text released so far, then the refusal.

Resample and introspect are legal only after a flagged check (as in CARE: text that passed is not
rewritten) while attempts remain: ``max_attempts`` (N) per unsafe span, the count restarting when a
check passes; after N attempts a flagged check takes the fallback, as in CARE. Continue and refuse
are always legal, so the agent can refuse before anything is flagged. A masked action is replaced
by ``continue`` and ``info["illegal_action"]`` says so.

**Observation** (float32): the policy's latent of the answer so far (``pooling`` of
``latent_layer``, standardised over its own entries, so no statistics travel with a policy), then
:data:`STATE_FIELDS`: the Saute safety state ``z``, the guard's last risk, buffer fill (unreleased
tokens / b), attempts used / N, answer progress (tokens / max_new_tokens), last check flagged.

**Reward** (Saute, :mod:`latentguard.episodes.safety_state`): each step pays ``-wait_price`` per wait token it added
(tokens decoded or spliced while nothing new reached the user) beyond the answer's first ``buffer``
(the fill every guarded answer waits for; ``price_fill`` prices it too); the step that ends an answer also
pays the task reward of the released text (``reward``, default relevance + coherence; '' = none,
as when a trained policy only answers); once ``z <= 0`` a step pays ``unsafe_reward`` instead
(``info["original_reward"]`` keeps the other).
``z0`` is drawn in ``[z0_min, z0_max]`` in train mode and is ``z0`` in test mode;
``z <- z - cost / budget``. The safety state is the engine's
(:attr:`~latentguard.episodes.engine.Engine.safety`, cost rule ``"release"``): the env keeps no
copy of its own.

:class:`DecisionVectorEnv` auto-resets an answer in the step it ends (``"SameStep"``: what
Stable-Baselines3 expects through :class:`latentguard.training.sb3.SB3VecEnv`); :class:`DecisionEnv` is one episode
at a time, for Gymnasium's and SB3's checkers. ``completed`` keeps every finished answer's record
(released text and counters) with ``prompt_order="once"`` (:meth:`DecisionVectorEnv.answer_all`);
the other orders keep none (a training run would grow it without end).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from latentguard.common.seeding import prompt_seed
from latentguard.envs.token_env import check_prompts, check_sub_envs, resolve_lm
from latentguard.episodes.rewrite_episodes import RewriteEpisodes, rewrite_config
from latentguard.episodes.safety_state import StartBudget, check_budget
from latentguard.episodes.token_episodes import TokenEnvConfig
from latentguard.guards import make_guard
from latentguard.lm import DEFAULT_MODEL, FEATURE_POOLINGS, LanguageModel, SamplingConfig, feature_width, row_generators
from latentguard.rewards import make_reward

ACTIONS = ("continue", "resample", "introspect", "refuse")
"""The decision env's actions, in order."""
CONTINUE, RESAMPLE, INTROSPECT, REFUSE = range(len(ACTIONS))
STATE_FIELDS = ("z", "risk", "buffer_fill", "attempts", "progress", "flagged")
"""The entries after the latent in an observation."""


@dataclass
class DecisionConfig:
    """Options of the decision env. Defaults: CARE's (b = 40, N = 5, refuse fallback) on the
    default model's 64-token answers, sampled as every method samples."""

    buffer: int = 40
    """b: response tokens held back from the user (CARE's default)."""
    check_every: int = 0
    """Tokens between guard checks, i.e. between decisions; 0 = b // 2 (every token is checked
    before it leaves the buffer)."""
    max_attempts: int = 5
    """N: resamples / introspections per unsafe span before the fallback."""
    fallback: str = "refuse"
    """What a flagged check does after N attempts: 'refuse' (fail closed) or 'continue'."""
    show_critique: bool = False
    """Release an introspection's critique to the user (off: the released text reads as an answer,
    not as an apology followed by one)."""
    critique_temperature: float = 1.1
    """Sampling temperature of the critique."""
    max_new_tokens: int = 64
    """Answer length (the methods' default)."""
    temperature: float = 0.7
    """Sampling temperature of the answer (the methods' default)."""
    top_p: float = 0.9
    """Nucleus mass of the answer (the methods' default)."""
    latent_layer: int | None = None
    """Layer of the policy's latent in the observation (None = the model's latent layer)."""
    pooling: str = "mean+request"
    """How that layer is pooled (:data:`latentguard.lm.FEATURE_POOLINGS`); the default is what the shipped
    probe and critic read: the answer's mean beside the request's last token."""
    prefill_as_answer: bool = False
    """Read a prompt's forced assistant words (a prefill, e.g. the attack's "Sure, here is") as part
    of the answer in the observation's latent, as the guard reads them (true), or as part of the
    request (false, the default): the latent then pools only what the model decoded after them, and a
    prefilled request looks to the policy as it would unprefilled, so whoever writes the start of the
    answer does not choose what the policy sees at its first decision (read as answer, the shipped
    policy refused 0 of 217 prefilled held-out harmful requests there, against 169 unprefilled).
    Prompts without a prefill are read the same either way."""
    reward: str = "relevance+coherence"
    """Task reward of the released answer: on topic (MiniLM cosine) and language, not a loop
    ('' = none: rewards are then the wait bill and the budget's alone)."""
    wait_price: float = 0.03
    """Reward lost per priced wait token. At 0.03 a resample (20 to 40 tokens decoded again) costs
    0.6 to 1.2, more than an answer loses in relevance and coherence by being a refusal; much lower
    prices make retrying look free (results/issue14/tries.md)."""
    price_fill: bool = False
    """Price the buffer's first fill too (the b wait tokens every guarded answer pays before its
    first release). Off: only the wait beyond it is priced, the wait the agent's interventions add.
    On, every answer starts in debt while a refusal at the first decision owes nothing, which teaches
    refusing."""
    budget: float = 1.0
    """Saute's d: cost units per unit of z (cost = 1 per flagged span released)."""
    unsafe_reward: float = -1.0
    """Reward of every step once z <= 0 (below any task reward, which lies in [-2, 1])."""
    z0_min: float = 0.5
    """Lower end of z0 in train mode: below 1, no flagged span may be released."""
    z0_max: float = 2.0
    """Upper end of z0 in train mode: above 1, one may (the policy learns to read z)."""
    z0: float = 1.0
    """z0 in test mode: no flagged span may be released."""
    mode: str = "train"
    """'train' (z0 drawn per episode) or 'test' (z0 fixed)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.wait_price > 0:
            raise ValueError(f"wait_price must be > 0 (a wait token costs something), got {self.wait_price}")
        check_budget(self.budget)
        self.start_budget = StartBudget(self.z0, self.z0_min, self.z0_max, self.mode)  # validates z0, its range, mode
        if self.pooling not in FEATURE_POOLINGS:
            raise ValueError(f"pooling must be one of {FEATURE_POOLINGS}, got {self.pooling!r}")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        self.rewrite = rewrite_config(self.buffer, self.check_every, self.max_attempts, self.fallback, False,
                                      self.show_critique, self.critique_temperature)  # validates b, N, fallback


class DecisionVectorEnv(VectorEnv):
    """``num_envs`` decision envs decoded as one batch (see the module docstring).

    :param model: a :class:`LanguageModel` or a model spec (loaded on ``device``).
    :param prompts: the requests (``None``: the built-in ones).
    :param guard: the guard whose checks decide (required).
    :param config: a :class:`DecisionConfig`; keyword arguments override its fields.
    :param prompt_order: ``"random"`` (drawn with the env's RNG), ``"cycle"`` or ``"once"`` (each
        prompt once; a sub-env with none left goes idle and :attr:`finished` says when all are).
    :param autoreset: start the next answer in the step one ends (``False``: :class:`DecisionEnv`).
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.SAME_STEP}
    single_observation_space: gym.spaces.Box
    completed: list[dict]
    """With ``prompt_order="once"``: the record of every answer that ended (released text, counters),
    in order of ending."""

    def __init__(self, num_envs: int = 8, *, model: str | LanguageModel = DEFAULT_MODEL,
                 prompts: Sequence[str] | None = None, guard: Any = None, config: DecisionConfig | None = None,
                 prompt_order: str = "random", autoreset: bool = True, device: str | None = None,
                 dtype: str | None = None, **overrides: Any) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if guard is None:
            raise ValueError("the decision env needs a guard (guard=...): its checks are the decision points")
        if prompt_order not in ("random", "cycle", "once"):
            raise ValueError(f"prompt_order must be 'random', 'cycle' or 'once', got {prompt_order!r}")
        config = config or DecisionConfig()
        if overrides:
            unknown = sorted(set(overrides) - set(DecisionConfig.__dataclass_fields__))
            if unknown:
                raise TypeError(f"unknown decision env option {unknown[0]!r}; see DecisionConfig")
            config = dataclasses.replace(config, **overrides)
        self.config, self.prompt_order, self.autoreset = config, prompt_order, autoreset
        self.prompts = check_prompts(prompts)
        self.lm = resolve_lm(model, device, dtype)
        self.guard = make_guard(guard)
        self.task_reward = make_reward(config.reward) if config.reward else None
        self.layer = config.latent_layer if config.latent_layer is not None else self.lm.latent_layer
        self.lm.capture_layer(self.layer, history=config.pooling != "last")
        token_config = TokenEnvConfig(top_k=1, max_new_tokens=config.max_new_tokens, guard_every=config.rewrite.check_every,
                                      cost_mode="release", budget=config.budget)
        self.episodes = RewriteEpisodes(self.lm, token_config, self.guard, None, num_envs, config.rewrite)
        self.sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p)
        self.num_envs = num_envs
        width = feature_width(config.pooling, self.lm.hidden_size) + len(STATE_FIELDS)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(width,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(len(ACTIONS))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        n = num_envs
        self.episode_return = np.zeros(n)  # (N,) undiscounted sum of this answer's rewards
        self.risk = np.zeros(n)  # (N,) the guard's last risk
        self.flagged = np.zeros(n, dtype=bool)  # (N,) the last check flagged
        self.done = np.zeros(n, dtype=bool)  # (N,) the answer is over
        self.idle = np.zeros(n, dtype=bool)  # (N,) 'once': no prompt left
        self.episode_index = np.full(n, -1, dtype=np.int64)  # (N,) position of the prompt in the list
        self.decisions = np.zeros(n, dtype=np.int64)  # (N,) decisions taken in this answer
        self.completed: list[dict] = []  # records of the answers that ended, in order of ending
        self.generators: dict[int, Any] = {}
        self.seed = 0
        self._starts = 0
        self._draws: dict[str, int] = {}
        self._started = False

    # ------------------------------------------------------------------ episodes
    @property
    def finished(self) -> bool:
        """``prompt_order="once"``: every prompt has been answered."""
        return bool(self.idle.all())

    def _start(self, rows: Sequence[int] | np.ndarray) -> None:
        """New answers on ``rows`` (one forward); rows with no prompt left go idle."""
        starts = {}
        for row in rows:
            if self.prompt_order == "once" and self._starts >= len(self.prompts):
                self.idle[row] = True
                continue
            index = self._starts % len(self.prompts) if self.prompt_order != "random" \
                else int(self.np_random.integers(len(self.prompts)))
            self._starts += 1
            prompt = self.prompts[index]
            draw = self._draws.get(prompt, 0)  # the n-th answer to this prompt has its own seed
            self._draws[prompt] = draw + 1
            self.generators[row] = row_generators([prompt_seed(self.seed, prompt, draw)], self.lm.device)[0]
            self.episode_index[row] = index
            z0 = self.config.start_budget.draw(self.np_random)
            self.episode_return[row] = self.risk[row] = 0.0
            self.flagged[row] = self.done[row] = False
            self.decisions[row] = 0
            starts[row] = (prompt, None, z0)
        if starts:  # the first start makes the rows without a prompt copies of one that has one
            self.episodes.reset_rows(starts)

    def add_prompts(self, prompts: Sequence[str]) -> None:
        """``prompt_order="once"``: append prompts while the env runs (a server's new requests). Idle
        sub-envs start them now (one forward; their next observation is the new answer's first), the
        others take the rest as their answers end."""
        if self.prompt_order != "once":
            raise ValueError(f"add_prompts needs prompt_order='once', this env draws prompts {self.prompt_order!r}")
        if not self._started:
            raise RuntimeError("call reset() before add_prompts()")
        self.prompts.extend(check_prompts(prompts))
        waking = np.flatnonzero(self.idle)[: len(self.prompts) - self._starts]
        self.idle[waking] = False
        self._start(waking)

    def abandon(self, rows: Sequence[int]) -> None:
        """End the answers of sub-envs ``rows`` now, unanswered (their readers left; no record in
        :attr:`completed`): each starts the next prompt, or goes idle when none is left (``"once"``)."""
        rows = check_sub_envs(rows, self.num_envs)
        self.episodes.abandon(rows)
        self.done[rows] = True
        if self.autoreset:
            self._start(rows)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start every sub-env; ``seed`` seeds the prompt draws, the z0 draws and the samplers."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"the decision env takes no reset options, got {sorted(options)}")
        self.seed = 0 if seed is None else int(seed)
        self.episodes.seed = self.seed
        self._starts, self._draws = 0, {}
        self.idle[:] = False
        self.completed = []
        self._start(range(self.num_envs))
        self._started = True
        return self.observations(), self._infos({})

    # ------------------------------------------------------------------ observations
    @property
    def z(self) -> np.ndarray:
        """(num_envs,) the Saute safety state of every answer (the engine's, read-only)."""
        return self.episodes.safety.z[: self.num_envs].copy()

    @property
    def episode_cost(self) -> np.ndarray:
        """(num_envs,) flagged spans let through in every answer (the engine's safety state)."""
        return self.episodes.safety.cost[: self.num_envs].copy()

    def action_masks(self) -> np.ndarray:
        """(num_envs, 4) bool: the legal actions (continue and refuse always; the rewrites after a
        flagged check while attempts remain)."""
        masks = np.ones((self.num_envs, len(ACTIONS)), dtype=bool)
        can = self.flagged & self.episodes.can_rewrite()
        masks[:, RESAMPLE] = masks[:, INTROSPECT] = can
        return masks

    def state_features(self) -> np.ndarray:
        """(num_envs, 6) float32: :data:`STATE_FIELDS` of every sub-env."""
        ep = self.episodes
        return np.stack([self.z, self.risk, ep.buffer_fill(), ep.attempts_used(), ep.progress(), self.flagged],
                        axis=1).astype(np.float32)

    def observations(self) -> np.ndarray:
        """(num_envs, F + 6) float32: standardised latent features, then the state fields."""
        x = self.episodes.live_state.features(self.layer, self.config.pooling, range(self.num_envs),
                                              self.config.prefill_as_answer).float()  # (N, F)
        x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)
        return np.concatenate([x.cpu().numpy(), self.state_features()], axis=1).astype(np.float32)

    # ------------------------------------------------------------------ steps
    def step(self, actions):
        """Act at every sub-env's decision point, decode all to their next one (or the end)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions).astype(np.int64).reshape(-1)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {np.asarray(actions).shape}")
        if ((actions < 0) | (actions >= len(ACTIONS))).any():
            bad = int(np.flatnonzero((actions < 0) | (actions >= len(ACTIONS)))[0])
            raise ValueError(f"unknown action {int(actions[bad])} for sub-env {bad}: use 0..3 {ACTIONS}")
        live = ~self.idle & ~self.done
        if not self.autoreset and not live.any():
            raise RuntimeError("the episode is over; call reset() first")
        ep, n = self.episodes, self.num_envs
        wait_before, cost_before = ep.wait_tokens(), self.episode_cost
        illegal = live & ~self.action_masks()[np.arange(n), actions]
        actions = np.where(illegal, CONTINUE, actions)
        inner = np.zeros(n, dtype=np.int64)  # the rewrite episodes' actions of the first forward
        for row in np.flatnonzero(live).tolist():
            self.decisions[row] += 1
            act = actions[row]
            if act == REFUSE:
                ep.refuse(row)
                self.done[row] = True
            elif act in (RESAMPLE, INTROSPECT):
                inner[row] = ep.action_of(ACTIONS[act])
            elif self.flagged[row] and ep.keep_flagged(row):  # continue past a final flag: the answer is over
                self._end(row)
            self.flagged[row] = False
        self._decode(inner)
        cost = self.episode_cost - cost_before  # (N,) flagged spans let through this step
        free = 0 if self.config.price_fill else self.config.buffer  # the first fill's wait, unpriced
        wait_after = ep.wait_tokens()
        priced = np.maximum(wait_after - free, 0) - np.maximum(wait_before - free, 0)
        original = -self.config.wait_price * priced
        ended = np.flatnonzero(live & self.done)
        if ended.size and self.task_reward is not None:
            prompts = [ep.prompts[r] for r in ended]
            texts = [ep.released_text(int(r)) for r in ended]
            original[ended] += np.asarray(self.task_reward(prompts, texts), dtype=np.float64)
        reward = ep.safety.shape(original, self.config.unsafe_reward, range(n))
        reward = np.where(live, reward, 0.0)
        self.episode_return += reward
        step_info = {int(r): {"cost": float(cost[r]), "original_reward": float(original[r]),
                              "illegal_action": bool(illegal[r])} for r in np.flatnonzero(live)}
        terminated = live & self.done
        obs = self.observations()
        infos: dict[str, Any] = {}
        final = {int(r): self._row_info(int(r), step_info.get(int(r), {})) for r in ended}
        if self.prompt_order == "once":
            self.completed.extend(final.values())
        if self.autoreset and ended.size:
            for row in ended:  # the ended answer's last info goes in final_info; the row's own is the new answer's
                infos = self._add_info(infos, {"final_obs": obs[row], "final_info": final[int(row)]}, int(row))
                step_info.pop(int(row), None)
            self._start(ended)
            obs = self.observations()
        return obs, reward.astype(np.float64), terminated, np.zeros(n, dtype=bool), self._infos(step_info, infos)

    def refuse_at_start(self, obs: np.ndarray, act: Callable[[np.ndarray, np.ndarray], np.ndarray]
                        ) -> tuple[np.ndarray, np.ndarray, int]:
        """``prompt_order="once"``: ask ``act(obs, masks) -> actions`` for every sub-env's next action;
        the answers it refuses before any token end now, and their sub-envs take the next prompts and
        are asked again, until it refuses none at an answer's start or no prompt is left.

        A refusal at the start decodes nothing, so the answer need not hold its sub-env through the
        next :meth:`step`, whose forwards run until every other answer reaches its next decision
        (``check_every`` tokens): without this, each refused request leaves a row of the batch idle
        for a whole decision block, and on harmful requests, most of which are refused at once, the
        batch decodes mostly empty. The answers and their records are those :meth:`step` gives
        (each answer has its own seeded sampler; the batch's other rows are not touched), and no
        reward is returned for them (the test-mode use: methods and servers, not training).

        :returns: (the observations, the actions for :meth:`step`, how many answers ended here).
        """
        if self.prompt_order != "once" or not self.autoreset:
            raise ValueError(f"refuse_at_start needs prompt_order='once' and autoreset, this env draws prompts "
                             f"{self.prompt_order!r} with autoreset={self.autoreset}")
        actions = np.asarray(act(obs, self.action_masks())).astype(np.int64).reshape(-1)  # (N,)
        ended = 0
        while True:
            rows = np.flatnonzero(~self.idle & ~self.done & (self.decisions == 0) & (actions == REFUSE))
            if not rows.size:
                return obs, actions, ended
            for row in rows.tolist():
                self.decisions[row] += 1
                self.episodes.refuse(row)
                self.done[row] = True
            original = np.zeros(len(rows))
            if self.task_reward is not None:
                original += np.asarray(self.task_reward([self.episodes.prompts[r] for r in rows],
                                                        [self.episodes.released_text(int(r)) for r in rows]))
            self.completed.extend(self._row_info(int(r), {"cost": 0.0, "original_reward": float(o),
                                                           "illegal_action": False}) for r, o in zip(rows, original))
            ended += len(rows)
            self._start(rows)  # the next prompts, or idle
            obs = self.observations()
            again = np.asarray(act(obs, self.action_masks())).astype(np.int64).reshape(-1)
            actions[rows] = again[rows]  # the other sub-envs keep the actions they were given

    def answer_all(self, act: Callable[[np.ndarray, np.ndarray], np.ndarray], seed: int = 0,
                   on_end: Callable[[int], None] | None = None,
                   on_release: Callable[[int, str], None] | None = None) -> list[dict]:
        """Answer every prompt once (``prompt_order="once"``) with ``act(obs, masks) -> actions``;
        the answers' records (:attr:`completed`) in prompt order. ``on_end(k)``: ``k`` answers have
        just ended (a progress hook); ``on_release(index, text)``: after each decision step, the text
        released so far of every answer in flight and of those just ended (a streaming hook)."""
        if self.prompt_order != "once":
            raise ValueError(f"answer_all needs prompt_order='once', this env draws prompts {self.prompt_order!r}")
        obs, _ = self.reset(seed=seed)
        while not self.finished:
            before = len(self.completed)
            obs, actions, _ = self.refuse_at_start(obs, act)
            obs, *_ = self.step(actions)
            if on_release is not None:
                for record in self.completed[before:]:
                    on_release(record["episode_index"], record["released_text"])
                for row in np.flatnonzero(~self.idle & ~self.done):
                    on_release(int(self.episode_index[row]), self.episodes.released_text(int(row)))
            if on_end is not None and len(self.completed) > before:
                on_end(len(self.completed) - before)
        return sorted(self.completed, key=lambda r: r["episode_index"])

    def _end(self, row: int) -> None:
        self.done[row] = True
        self.episodes.close(row)

    def _decode(self, inner: np.ndarray) -> None:
        """Decode every live sub-env to its next decision point or its end; rows given a rewrite
        action in ``inner`` take it in the first forward. Answers that end with no decision left
        (a passing final check) are over; answers restarted in between are not (SameStep starts
        them after). A ``continue`` fallback that lets a flagged span through is charged by the
        episodes (cost rule ``"release"``)."""
        ep, n = self.episodes, self.num_envs
        moving = ~self.idle & ~self.done
        first = True
        while moving.any():
            rows = np.flatnonzero(moving)
            actions = inner if first else np.zeros(n, dtype=np.int64)
            decoding = ep.will_decode(rows, actions)
            tokens = np.zeros(n, dtype=np.int64)
            if decoding:
                tokens[decoding] = ep.sample(self.sampling, [self.generators[r] for r in decoding], decoding)
            result = ep.step_rows(actions, rows, None, tokens)
            first = False
            due = ep.awaiting_rewrite()
            for row in decoding:
                checked = not np.isnan(result.risk[row])
                if checked:
                    self.risk[row] = result.risk[row]
                    self.flagged[row] = bool(due[row])  # flagged, and a decision is due
                if result.terminated[row] or result.truncated[row]:
                    self._end(row)
                moving[row] = not (self.done[row] or checked)

    # ------------------------------------------------------------------ infos
    def _row_info(self, row: int, step: dict) -> dict:
        ep = self.episodes
        return {**step, "prompt": ep.prompts[row], "episode_index": int(self.episode_index[row]),
                "released_text": ep.released_text(row), "safety_state": float(ep.safety.z[row]),
                "episode_cost": float(ep.safety.cost[row]), "episode_return": float(self.episode_return[row]),
                "risk": float(self.risk[row]), "decisions": int(self.decisions[row]), **ep.counters(row)}

    def _infos(self, step_info: dict[int, dict], infos: dict | None = None) -> dict:
        infos = infos or {}
        for row in range(self.num_envs):
            if not self.idle[row]:
                infos = self._add_info(infos, self._row_info(row, step_info.get(row, {})), row)
        return infos

    def render(self):
        return tuple(f"{self.episodes.prompts[r]}\n--> {self.episodes.released_text(r)}" for r in range(self.num_envs))


class DecisionEnv(gym.Env):
    """One decision episode at a time (the vector env with one sub-env and no auto-reset); takes
    :class:`DecisionVectorEnv`'s arguments except ``num_envs`` and ``autoreset``."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, **kwargs: Any) -> None:
        self.vec = DecisionVectorEnv(1, autoreset=False, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.config = self.vec.config

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=seed, options=options)
        return obs[0], self.vec._row_info(0, {})

    def step(self, action):
        obs, reward, terminated, truncated, infos = self.vec.step(np.array([int(action)]))
        info = self.vec._row_info(0, {k: infos[k][0] for k in ("cost", "original_reward", "illegal_action") if k in infos})
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def action_masks(self) -> np.ndarray:
        """(4,) bool: the legal actions now."""
        return self.vec.action_masks()[0]

    def render(self):
        return self.vec.render()[0]


ENV_FIELDS = tuple(f.name for f in dataclasses.fields(DecisionConfig))
"""The fields of :class:`DecisionConfig` (a subclass config, e.g. the trainer's, carries them too)."""


def decision_config(config: DecisionConfig, **overrides: Any) -> DecisionConfig:
    """The :class:`DecisionConfig` part of ``config`` (which may be a subclass), with ``overrides``."""
    return DecisionConfig(**{**{name: getattr(config, name) for name in ENV_FIELDS}, **overrides})
