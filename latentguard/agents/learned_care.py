"""``learned-care``: the intervention policy ``train.py policy`` learned, as a decoding method.

The policy (an SB3 MaskablePPO zip with its card, :func:`latentguard.agents.policy_io.policy_card`) acts on
:class:`latentguard.envs.decision_env.DecisionVectorEnv` in test mode (z0 fixed), deterministically, each
prompt once, ``batch_size`` answers decoded together; the env's release buffer, guard checks and
fallback are the ones it was trained with. Every answer's record is the one every method gives:
released text, tokens, wait tokens, interventions, guard calls, wall time.

Options: ``path`` (a folder with ``policy.zip`` and ``policy.json``; default: the one ``train.py
policy`` wrote for the run's model, else the one shipped for it, :mod:`latentguard.agents.pretrained`),
``batch_size``, ``deterministic`` (false: actions sampled from the policy, as in training, from a
torch stream seeded by the run's seed), ``budget`` (flagged spans an answer may let through, in the
units of the budget the policy was trained under: ``z0 = budget / d``; default: the run's
``--budget``, else the card's ``z0``), ``refuse_confidence`` (0: the policy's own choice; p in (0, 1):
where no check has flagged, refuse only if the policy gives refusal a probability of at least p, else
continue: a threshold to calibrate on dev look-alikes as one calibrates a classifier's, which trades
over-refusal for answers decoded under the guard; after a flagged check the policy's own choice
stands; deterministic policies only), ``prefill_as_answer`` (default: as the policy was trained,
else false: the policy reads forced assistant words, a prefill, as part of the request, not of the
answer; true reads them as answer, as the guard does:
:attr:`latentguard.envs.decision_env.DecisionConfig.prefill_as_answer`), ``gate`` ('' : off;
``request``: the request gate, :mod:`latentguard.guards.request_gate`, decides the refusal of the
request at the first decision, read from the latents the env's prefill already holds (no forward),
and a refusal the policy gives where no check has flagged becomes a continue; after a flagged check
the policy's choice stands), ``rewrite`` ('' : the policy's own rollbacks; ``resample``, ``introspect`` or
``refuse``: what the policy's rollbacks become. On the default model, the answer decoded after a hidden
critique read incoherent or harmful in most rolled-back answers, on dev as held out, and ``refuse`` ends
them with the refusal instead: results/issue25/learned-care-rewrite/). A policy trained for another
model, guard or action set is refused with the command that trains the right one.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from latentguard.agents.base import FeedPlaces, Method, PromptFeed, Rollout, RunContext, resolve_budget
from latentguard.agents.policy_io import card_convention, card_env, check_card, load_policy
from latentguard.agents.pretrained import resolve_policy_dir
from latentguard.common.storage import read_json_file
from latentguard.envs.decision_env import (
    CONTINUE,
    INTROSPECT,
    REFUSE,
    RESAMPLE,
    STATE_FIELDS,
    DecisionConfig,
    DecisionVectorEnv,
)
from latentguard.guards.request_gate import RequestGate, load_request_gate

if TYPE_CHECKING:
    from sb3_contrib import MaskablePPO

FLAGGED = STATE_FIELDS.index("flagged") - len(STATE_FIELDS)
"""Where an observation holds the ``flagged`` state field (counted from its end)."""
REWRITES = {"resample": RESAMPLE, "introspect": INTROSPECT, "refuse": REFUSE}
"""What the ``rewrite`` option may turn the policy's rollbacks into."""


class LearnedCare(Method):
    """A learned policy over CARE's decisions (see the module docstring)."""

    uses_guard = True
    uses_budget = True
    continuous = True

    def __init__(self, path: str = "", batch_size: int = 32, deterministic: bool = True,
                 budget: float | None = None, refuse_confidence: float = 0.0,
                 prefill_as_answer: bool | None = None, gate: str = "", rewrite: str = "") -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if budget is not None and not float(budget) > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        if not 0 <= float(refuse_confidence) < 1:
            raise ValueError(f"refuse_confidence must be a probability in [0, 1) (0: the policy's own choice), "
                             f"got {refuse_confidence}")
        if float(refuse_confidence) > 0 and not deterministic:
            raise ValueError("refuse_confidence thresholds the deterministic policy's refusals; with "
                             "deterministic=false the policy samples its actions: drop one of the two options")
        if prefill_as_answer is not None and not isinstance(prefill_as_answer, bool):
            raise ValueError(f"prefill_as_answer must be true or false, got {prefill_as_answer!r}")
        if gate not in ("", "request"):
            raise ValueError(f"gate must be 'request' (the request gate refuses at the first decision) or empty "
                             f"(off), got {gate!r}")
        if gate and float(refuse_confidence):
            raise ValueError("gate=request owns the refusal of requests no check has flagged, refuse_confidence "
                             "thresholds the policy's: give one of the two")
        if gate and not deterministic:
            raise ValueError("gate=request replaces the deterministic policy's unflagged refusals; with "
                             "deterministic=false the policy samples its actions: drop one of the two options")
        if rewrite not in ("", *REWRITES):
            raise ValueError(f"rewrite must be one of {', '.join(REWRITES)} (what the policy's rollbacks become) or "
                             f"empty (the policy's own), got {rewrite!r}")
        self.gate = str(gate)
        self.rewrite = str(rewrite)
        self.request_gate: RequestGate | None = None
        self.budget_option = None if budget is None else float(budget)
        self.refuse_confidence = float(refuse_confidence)
        self.prefill_as_answer = prefill_as_answer
        self.path, self.batch_size, self.deterministic = str(path), int(batch_size), bool(deterministic)
        self.name = "learned-care"
        self.model: MaskablePPO | None = None
        self.card: dict = {}
        self.folder_read: Path | None = None

    def folder(self, model_id: str) -> Path:
        """Where the policy is read from: ``path``, else the user cache's for ``model_id``, else the
        shipped one (:mod:`latentguard.agents.pretrained`)."""
        return Path(self.path) if self.path else resolve_policy_dir(model_id)

    def prepare(self, ctx: RunContext) -> None:
        """Read the policy (once) and refuse one trained for another model, guard or action set."""
        if ctx.guard is None:
            raise ValueError("learned-care decides at the guard's checks: give the run a guard (--guard)")
        if self.model is None:
            self.load(ctx)
        check_card(self.card, ctx.lm.model_id, ctx.guard_spec or ctx.guard.name, str(self.folder_read))
        if self.gate and self.request_gate is None:
            self.request_gate = load_request_gate(ctx.lm.model_id)
        if self.request_gate is not None:
            ctx.lm.capture_layer(self.request_gate.layer, history=True)  # read from the env's prefill

    def load(self, ctx: RunContext) -> None:
        """Read the policy and its card; refuse one trained for another model, guard or action set."""
        folder = self.folder(ctx.lm.model_id)
        if not (folder / "policy.zip").exists() or not (folder / "policy.json").exists():
            raise FileNotFoundError(f"learned-care needs a trained policy and found none in {folder} (policy.zip and "
                                    f"policy.json); train the default one with: python train.py policy --model "
                                    f"{ctx.lm.model_id}, or pass one: learned-care:path=FOLDER")
        fix = "retrain it (python train.py policy) or pass a good one: learned-care:path=FOLDER"
        report = read_json_file(folder / "policy.json", "policy card", fix)
        if not isinstance(report, dict) or not isinstance(report.get("card"), dict):
            raise ValueError(f"the policy file {str(folder / 'policy.json')!r} has no 'card'; {fix}")
        self.card = report["card"]
        self.folder_read = folder
        try:
            self.model = load_policy(folder / "policy.zip", keep_random_state=True, device="cpu")
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as err:
            raise ValueError(f"cannot read the policy {str(folder / 'policy.zip')!r} ({err}): it is not an SB3 "
                             f"policy zip or it is damaged; {fix}") from err

    def env(self, prompts: Sequence[str], ctx: RunContext, num_envs: int | None = None) -> DecisionVectorEnv:
        """The decision env the policy acts on, as it was trained (its card) but in test mode and with
        the run's length, sampling and budget: ``num_envs`` sub-envs (default: ``batch_size``, at most
        one per prompt), each prompt once."""
        env = card_env(self.card)
        budget = None if self.budget_option is None and ctx.budget is None else \
            resolve_budget(self.name, self.budget_option, ctx.budget)
        if budget is not None:  # a budget of B flagged spans: z0 = B / d under the budget d it was trained with
            env["z0"] = budget / card_convention(self.card).budget
        if self.prefill_as_answer is not None:
            env["prefill_as_answer"] = self.prefill_as_answer
        config = DecisionConfig(**{**env, "mode": "test", "max_new_tokens": ctx.max_new_tokens,
                                   "temperature": ctx.sampling.temperature, "top_p": ctx.sampling.top_p,
                                   "reward": ""})  # the evaluator scores the answers, not the env
        return DecisionVectorEnv(num_envs or min(self.batch_size, len(prompts)), model=ctx.lm, prompts=list(prompts),
                                 guard=ctx.guard, config=config, prompt_order="once")

    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        if ctx.guard is None:
            raise ValueError("learned-care decides at the guard's checks: give the run a guard (--guard)")
        if not prompts:
            return []
        self.prepare(ctx)
        start = time.perf_counter()
        vec = self.env(prompts, ctx)
        with torch.random.fork_rng():  # sampled actions draw from torch's global stream: seed it, restore it after
            torch.manual_seed(ctx.seed)
            records = vec.answer_all(lambda obs, masks: self.act(obs, masks, vec), seed=ctx.seed, on_end=ctx.answered,
                                     on_release=ctx.released if ctx.streaming else None)
        seconds = (time.perf_counter() - start) / len(prompts)
        return [self._rollout(p, r, seconds) for p, r in zip(prompts, records)]

    def serve(self, feed: PromptFeed, ctx: RunContext) -> None:
        """Continuous batching on ``min(batch_size, feed.max_rows)`` sub-envs: a new request starts on
        an idle sub-env before the next decision step (one forward), and a sub-env whose answer ended,
        or whose reader left, takes the next request at that step. Each answer is seeded as in
        :meth:`run` (its prompt's own sampler), so with the deterministic policy it is drawn as the
        batch API draws it (the logits still differ in their last bits between batch shapes:
        :mod:`latentguard.episodes.engine`)."""
        self.prepare(ctx)
        num_envs = max(1, min(self.batch_size, feed.max_rows))
        first = feed.take(num_envs, idle=True)
        if not first:
            return
        places = FeedPlaces(feed)
        vec = self.env(places.admit(first, 0), ctx, num_envs)
        with torch.random.fork_rng():  # as in run
            torch.manual_seed(ctx.seed)
            vec.reset(seed=ctx.seed)
            while True:
                before = len(vec.completed)
                actions = self._admit(vec, feed, places, num_envs)
                if actions is not None:
                    vec.step(actions)
                elif len(vec.completed) == before:
                    return  # the feed has ended and no row is held
                for record in vec.completed[before:]:
                    position = record["episode_index"]
                    index, seconds = places.pop(position)
                    feed.finish(index, self._rollout(vec.prompts[position], record, seconds))
                    ctx.answered()
                if ctx.streaming:
                    for row in np.flatnonzero(~vec.idle & ~vec.done):
                        ctx.released(places.index[int(vec.episode_index[row])], vec.episodes.released_text(int(row)))

    def _admit(self, vec: DecisionVectorEnv, feed: PromptFeed, places: FeedPlaces, num_envs: int) -> np.ndarray | None:
        """Free the sub-envs whose readers left, start new requests on the idle ones, and end the
        answers the policy refuses at their start there and then (:meth:`DecisionVectorEnv.refuse_at_start`),
        their sub-envs taking more requests; the actions for the next step, or ``None`` when every
        sub-env is idle and the feed gave nothing."""
        answered = False
        while True:
            places.leave(vec, np.flatnonzero(~vec.idle))  # each left sub-env takes the next prompt, or goes idle
            new = feed.take(num_envs - int((~vec.idle).sum()), idle=vec.finished and not answered)
            if new:
                vec.add_prompts(places.admit(new, len(vec.prompts)))
            elif vec.finished:
                return None
            _, actions, refused = vec.refuse_at_start(vec.observations(), lambda obs, masks: self.act(obs, masks, vec))
            answered = answered or refused > 0
            if not refused or not vec.idle.any():
                return actions

    @staticmethod
    def _rollout(prompt: str, record: dict, seconds: float) -> Rollout:
        """The rollout of one ended answer's record (:attr:`DecisionVectorEnv.completed`)."""
        return Rollout(prompt, text=record["released_text"], tokens=record["tokens"],
                       released_tokens=record["released_tokens"], wall_time=seconds, wait_tokens=record["wait_tokens"],
                       interventions=record["interventions"], guard_calls=record["guard_calls"],
                       extra={k: record[k] for k in ("decisions", "refused", "fallback", "discarded", "episode_cost")})

    @property
    def joins_every(self) -> int:  # type: ignore[override]
        """Tokens between the policy's decisions, where new prompts join (its guard checks: every
        ``check_every`` tokens, else every buffer's worth; 1 before a policy is read)."""
        env = card_env(self.card) if self.card else {}
        return int(env.get("check_every") or env.get("buffer") or 1)

    def first_refusal(self, prompts: Sequence[str], ctx: RunContext) -> np.ndarray:
        """P(refuse) (len(prompts),) the policy gives each prompt at its first decision, before any
        token is decoded (one prefill forward per ``batch_size`` prompts): a request-level refusal
        score that other methods can gate on (``critic-search:gate=p``)."""
        if self.model is None:
            raise RuntimeError("learned-care has no policy yet: call prepare(ctx) first")
        out = []
        for i in range(0, len(prompts), self.batch_size):
            vec = self.env(prompts[i:i + self.batch_size], ctx)
            obs, _ = vec.reset(seed=ctx.seed)
            out.append(self.action_probs(obs, vec.action_masks())[:, REFUSE])  # (n,)
        return np.concatenate(out) if out else np.zeros(0)

    def action_probs(self, obs, masks) -> np.ndarray:
        """The policy's action probabilities (N, 4) for observations (N, F) under action masks
        (N, 4), zero where masked."""
        if self.model is None:
            raise RuntimeError("learned-care has no policy yet: call prepare(ctx) first")
        with torch.no_grad():
            dist = self.model.policy.get_distribution(torch.as_tensor(obs), action_masks=masks)
        categorical = dist.distribution  # one Categorical over the 4 actions
        if not isinstance(categorical, torch.distributions.Categorical):
            raise TypeError(f"learned-care reads a policy over one discrete action, got {type(categorical).__name__}")
        return categorical.probs.cpu().numpy()

    def act(self, obs, masks, vec: DecisionVectorEnv | None = None):
        """The policy's actions (N,) for observations (N, F) under action masks (N, 4) of the env
        ``vec``; with ``refuse_confidence`` p, a refusal the policy gives less than p where no check
        has flagged becomes a continue; with the request gate, every refusal where no check has
        flagged becomes a continue and the gate refuses at the first decision; with ``rewrite``, the
        policy's resamples and introspections become that action."""
        actions = self._policy_act(obs, masks, vec)
        if self.rewrite:
            actions = np.where((actions == RESAMPLE) | (actions == INTROSPECT), REWRITES[self.rewrite], actions)
        return actions

    def _policy_act(self, obs, masks, vec: DecisionVectorEnv | None = None):
        """:meth:`act` before ``rewrite``."""
        if self.model is None:
            raise RuntimeError("learned-care has no policy yet: call prepare(ctx) first")
        if not self.refuse_confidence and self.request_gate is None:
            return self.model.predict(obs, action_masks=masks, deterministic=self.deterministic)[0]
        probs = self.action_probs(obs, masks)  # (N, 4), zero where masked
        flagged = np.asarray(obs)[:, FLAGGED] > 0.5  # (N,) the last check flagged
        if self.request_gate is None:
            return confident_refusals(probs, masks, self.refuse_confidence, flagged)
        if vec is None:
            raise ValueError("learned-care's request gate reads the env's prefill: pass the env to act(obs, masks, vec)")
        actions = confident_refusals(probs, masks, np.inf, flagged)  # no refusal where no check has flagged
        first = np.flatnonzero((vec.decisions == 0) & ~vec.done & ~vec.idle)  # (R,) before any token
        if first.size:
            risk = self.request_gate.risk_of(vec.episodes.live_state, first)  # (R,)
            actions[first[risk >= self.request_gate.threshold]] = REFUSE
        return actions


def confident_refusals(probs: np.ndarray, masks: np.ndarray, confidence: float, flagged: np.ndarray) -> np.ndarray:
    """The likeliest legal action (N,) of each row of ``probs`` (N, 4), except that where the last
    check did not flag (``flagged`` (N,) false), a refusal given less than ``confidence`` becomes a
    continue (the only other legal action there)."""
    actions = np.where(masks, probs, -1.0).argmax(1)
    unsure = (actions == REFUSE) & (probs[:, REFUSE] < confidence) & ~np.asarray(flagged, dtype=bool)
    return np.where(unsure, CONTINUE, actions)
