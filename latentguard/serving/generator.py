"""One loaded model, guard and reward that answers prompts with any method, in batch or streamed.

The object a notebook, a script or the server (:mod:`latentguard.serving.server`) holds: the model is
loaded once, each method once per spec (its critic or policy read by ``prepare``), and every call
builds the :class:`~latentguard.agents.base.RunContext` the evaluator would build for the same
settings, so ``generate`` gives the answers ``evaluate.py`` gives.

>>> from latentguard.serving import Generator
>>> gen = Generator(model="tiny", guard="keyword")
>>> [r.released_tokens for r in gen.generate(["Hi", "Name a fruit."], "vanilla", max_new_tokens=3)]
[3, 3]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

from latentguard.agents.base import Method, PromptFeed, Rollout, RunContext
from latentguard.agents.registry import make_method
from latentguard.common.threads import in_passing_thread
from latentguard.guards import Guard, make_guard
from latentguard.lm import DEFAULT_MODEL, LanguageModel, SamplingConfig, load_lm
from latentguard.rewards import Reward, make_reward
from latentguard.serving.stream import StreamEvent, stream_answers


class Generator:
    """Guarded answers from one model (see the module docstring).

    :param model: a model spec for :func:`~latentguard.lm.load_lm`, or a loaded
        :class:`~latentguard.lm.LanguageModel`.
    :param guard: a guard spec for :func:`~latentguard.guards.make_guard` (``""``: none; the methods
        that need one then refuse to run), or a guard.
    :param reward: a reward spec for :func:`~latentguard.rewards.make_reward` (critic search ranks by
        it; ``""``: none), or a reward.
    :param seed: the run seed: each answer is seeded by it and its prompt, as in ``evaluate.py``.
    :param system_prompt: the system message of every prompt (``None``: the chat template's default);
        its tokens are computed once and reused by every answer (:mod:`latentguard.lm.prefix`). The
        shipped probe and critic were trained under the default one.
    :param dtype: the dtype a model loaded by name gets (:func:`~latentguard.lm.load_lm`; ``None``:
        ``"auto"``, float32 on the CPU). ``"bfloat16"`` decodes 1.1-1.7x as fast on a CPU with AMX (``bench/dtype.py``).
    """

    def __init__(self, model: str | LanguageModel = DEFAULT_MODEL, guard: str | Guard = "latent-probe",
                 reward: str | Reward | None = "relevance", seed: int = 0, device: str | None = None,
                 system_prompt: str | None = None, dtype: str | None = None) -> None:
        if system_prompt is not None and not system_prompt.strip():
            raise ValueError("system_prompt is empty; give a non-empty system message, or None for the template's default")
        self.guard_spec = guard if isinstance(guard, str) else guard.name
        # built on a thread that ends with it: the thread that decodes keeps the only OpenMP pool
        self.lm, self.guard, self.reward = in_passing_thread(lambda: self._load(model, guard, reward, device, system_prompt, dtype))
        self.seed = int(seed)
        self._methods: dict[str, Method] = {}
        self.lock = threading.Lock()
        """Held while a method decodes: one batch at a time uses the model (its captured layers are shared)."""

    @staticmethod
    def _load(model: str | LanguageModel, guard: str | Guard, reward: str | Reward | None, device: str | None,
              system_prompt: str | None, dtype: str | None) -> tuple[LanguageModel, Guard | None, Reward | None]:
        """The model, the guard attached to it and the reward, each from its name or as given."""
        if dtype is not None and not isinstance(model, str):
            raise ValueError(f"dtype={dtype!r} applies to a model loaded by name; this model is loaded already "
                             f"(load it with load_lm(..., dtype={dtype!r}), or pass its name)")
        lm = load_lm(model, device=device, system_prompt=system_prompt, dtype=dtype) if isinstance(model, str) else model
        if system_prompt is not None:
            lm.system_prompt = system_prompt
        made_guard = (make_guard(guard) if guard else None) if isinstance(guard, str) else guard
        if made_guard is not None:
            made_guard.attach(lm)
        made_reward = (make_reward(reward) if reward else None) if isinstance(reward, str) else reward
        return lm, made_guard, made_reward

    def context(self, max_new_tokens: int = 64, temperature: float = 0.7, top_p: float = 0.9,
                budget: float | None = None) -> RunContext:
        """The run context of a call (the evaluator's defaults)."""
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return RunContext(self.lm, self.guard, self.reward, int(max_new_tokens),
                          SamplingConfig(temperature=float(temperature), top_p=float(top_p)), self.seed,
                          guard_spec=self.guard_spec or None, budget=budget)

    def method(self, spec: str, ctx: RunContext | None = None) -> Method:
        """The method of ``spec``, built and prepared once (an unknown spec or a missing critic or
        policy is an error that names the fix). It is prepared on a thread that ends with it, as the
        model is loaded (:mod:`latentguard.common.threads`)."""
        if spec not in self._methods:
            method = make_method(spec)
            in_passing_thread(lambda: method.prepare(ctx or self.context()))
            self._methods[spec] = method
        return self._methods[spec]

    def generate(self, prompts: Sequence[str], method: str = "vanilla", **settings) -> list[Rollout]:
        """One :class:`~latentguard.agents.base.Rollout` per prompt (``settings``: :meth:`context`'s)."""
        ctx = self.context(**settings)
        chosen = self.method(method, ctx)
        with self.lock:
            return chosen.run(list(prompts), ctx)

    def stream_many(self, prompts: Sequence[str], method: str = "vanilla", **settings) -> Iterator[StreamEvent]:
        """The released text of every answer as it is released (:func:`~latentguard.serving.stream.stream_answers`)."""
        ctx = self.context(**settings)
        chosen = self.method(method, ctx)
        with self.lock:
            yield from stream_answers(chosen, list(prompts), ctx)

    def stream(self, prompt: str, method: str = "vanilla", **settings) -> Iterator[StreamEvent]:
        """One answer's released text as it is released; the last event carries the rollout and the
        finish reason."""
        return self.stream_many([prompt], method, **settings)

    def serve(self, feed: PromptFeed, method: str = "vanilla", **settings) -> None:
        """Answer ``feed``'s prompts as they arrive, new ones joining the running batch
        (:meth:`~latentguard.agents.base.Method.serve`, continuous batching; the method's releases
        go to ``feed.released``); returns when the feed has nothing more and no row is left."""
        ctx = self.context(**settings)
        chosen = self.method(method, ctx)
        with self.lock:
            chosen.serve(feed, replace(ctx, on_release=feed.released))
