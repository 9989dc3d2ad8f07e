"""What every decoding method returns, and what it is given.

A method answers a batch of prompts and returns one :class:`Rollout` per prompt. The evaluator adds
the judgements, the task reward and the guard's cost of the released text, the same way for every
method, so methods are compared on equal terms.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from latentguard.common.seeding import prompt_seed  # noqa: F401 - re-exported for the methods
from latentguard.guards import Guard
from latentguard.lm import LanguageModel, SamplingConfig
from latentguard.rewards import Reward


@dataclass
class Rollout:
    """One answer and what it cost to produce."""

    prompt: str
    text: str
    """The text released to the user."""
    tokens: int
    """Tokens generated, including those thrown away (other samples, beams, rolled-back spans)."""
    released_tokens: int
    """Tokens of the released text."""
    wall_time: float
    """Seconds of decoding for this prompt (a batch's time split evenly over its prompts)."""
    wait_tokens: int = 0
    """Decoding steps before the user sees the first token (0 when streamed as generated)."""
    interventions: int = 0
    """Rollbacks, resamples or other rewrites."""
    guard_calls: int = 0
    """Guard evaluations spent on this prompt."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific figures (e.g. chosen sample, fallback taken)."""


@dataclass
class RunContext:
    """Shared settings of an evaluation run, handed to every method."""

    lm: LanguageModel
    guard: Guard | None
    reward: Reward | None
    max_new_tokens: int = 64
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9))
    seed: int = 0
    guard_spec: str | None = None
    """The spec the guard was built from (e.g. ``"latent-probe"``); ``None``: the guard's name."""
    budget: float | None = None
    """The run's safety budget ``d`` for the methods that use one (``uses_budget``); ``None``: each
    method's own (its ``budget`` option, else 1)."""
    on_answers: Callable[[int], None] | None = None
    """Called with how many answers a method has just finished (a progress bar's hook; methods call
    :meth:`answered`)."""

    on_release: Callable[[int, str], None] | None = None
    """Called with (a prompt's index in the list given to ``run``, the whole text released for it so
    far) when a method has released more of that answer (the streaming API's hook,
    :mod:`latentguard.serving.stream`); methods call :meth:`released`. A method that only knows its
    answer at the end need not call it: the stream then releases the answer whole."""

    @property
    def streaming(self) -> bool:
        """Whether someone listens to releases (methods skip the bookkeeping otherwise)."""
        return self.on_release is not None

    def released(self, index: int, text: str) -> None:
        """Tell :attr:`on_release` that the answer to prompt ``index`` now reads ``text`` to its user."""
        if self.on_release is not None:
            self.on_release(int(index), text)

    def answered(self, n: int = 1) -> None:
        """Tell :attr:`on_answers` that ``n`` more answers are final."""
        if self.on_answers is not None and n > 0:
            self.on_answers(int(n))


class PromptFeed(abc.ABC):
    """Prompts that arrive while a method decodes: a server's requests (continuous batching).

    A method that can take new rows into a running batch (:attr:`Method.continuous`) serves a feed
    (:meth:`Method.serve`): at each step it asks for as many new prompts as it has free rows
    (:meth:`take`), drops the rows whose reader went away (:meth:`cancelled`), tells the released text
    through ``ctx.released(index, text)`` and hands each answer over when it ends (:meth:`finish`).
    ``index`` is the feed's name for a prompt (any int, unique while the prompt is in flight).
    """

    max_rows: int = 16
    """Most prompts the method should hold in flight."""

    @abc.abstractmethod
    def take(self, n: int, idle: bool) -> list[tuple[int, str]]:
        """Up to ``n`` new ``(index, prompt)`` pairs (none is fine). ``idle``: the method holds no
        row, or a method that takes prompts only at a block's start has just answered one: the feed
        may wait a little for prompts; with no row held, an empty answer then ends :meth:`Method.serve`."""

    def cancelled(self, index: int) -> bool:
        """Whether the reader of prompt ``index`` went away (its row may be freed at once, unanswered)."""
        return False

    def released(self, index: int, text: str) -> None:
        """The reader of prompt ``index`` may now see ``text`` (the ``ctx.on_release`` that
        :meth:`latentguard.serving.Generator.serve` gives the method; methods call ``ctx.released``)."""

    @abc.abstractmethod
    def finish(self, index: int, rollout: Rollout) -> None:
        """The answer to prompt ``index`` is final."""


class FeedPlaces:
    """Which of a feed's requests each place of a vector env's prompt list answers, and since when:
    the bookkeeping of a method that serves a :class:`PromptFeed` on a vector env with
    ``prompt_order="once"`` (CARE, ``learned-care``), whose new prompts are appended to its list."""

    def __init__(self, feed: PromptFeed) -> None:
        self.feed = feed
        self.index: dict[int, int] = {}  # place in the env's prompt list -> the feed's index
        self.started: dict[int, float] = {}  # place -> when it was admitted (perf_counter)

    def admit(self, taken: Sequence[tuple[int, str]], offset: int) -> list[str]:
        """Record the feed's ``(index, prompt)`` pairs at places ``offset``, ``offset + 1``, ...; their prompts."""
        for j, (i, _) in enumerate(taken):
            self.index[offset + j], self.started[offset + j] = i, time.perf_counter()
        return [prompt for _, prompt in taken]

    def pop(self, place: int) -> tuple[int, float]:
        """The feed's index of an answered place and the seconds since it was admitted; forgets it."""
        return self.index.pop(place), time.perf_counter() - self.started.pop(place)

    def leave(self, vec: Any, rows: Iterable[int]) -> int:
        """Abandon the sub-envs among ``rows`` whose readers left (``vec.abandon``) and forget their
        places, never answered; returns how many."""
        gone = [int(r) for r in rows if self.feed.cancelled(self.index[int(vec.episode_index[r])])]
        if gone:
            places = [int(vec.episode_index[r]) for r in gone]  # before abandon: it may start new answers
            vec.abandon(gone)
            for place in places:
                del self.index[place], self.started[place]
        return len(gone)


class Method(abc.ABC):
    """A decoding method: ``run(prompts, ctx) -> [Rollout]``, one per prompt, in order."""

    name: str = "method"
    spec: str = ""
    """The spec the method was built from (set by :func:`~latentguard.agents.registry.make_method`)."""
    uses_guard: bool = False
    """Whether the method consults the guard while decoding (the report warns if a judge is it)."""
    uses_budget: bool = False
    """Whether the method keeps a Saute safety state (the run's ``budget`` applies to it)."""
    budget_option: float | None = None
    """The budget the method's spec set (``None``: the run's, else 1)."""
    continuous: bool = False
    """Whether :meth:`serve` takes new prompts into a running batch (continuous batching)."""
    joins_every: int = 1
    """Decoding steps between the points where :meth:`serve` takes new prompts (1: every step; a
    search: every block). A server waits longer for a burst of requests where a late one would wait
    longer (:class:`latentguard.serving.scheduler.Scheduler`)."""

    @abc.abstractmethod
    def run(self, prompts: Sequence[str], ctx: RunContext) -> list[Rollout]:
        """One rollout per prompt, in order."""

    def serve(self, feed: PromptFeed, ctx: RunContext) -> None:
        """Answer the prompts of ``feed`` as they arrive, new ones joining the rows in flight, until
        the feed has none and no row is left (:class:`PromptFeed`); only where :attr:`continuous`."""
        raise NotImplementedError(f"{self.name} answers in whole batches (run); it cannot take prompts "
                                  "into a running batch")

    def prepare(self, ctx: RunContext) -> None:
        """Load and check what the method reads for ``ctx``'s model, guard and budget (a critic, a
        policy), raising an error that names the file and the fix. :meth:`run` calls it; an
        evaluation calls it first, before it writes anything. The default reads nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def resolve_budget(method: str, option: float | None, run: float | None) -> float:
    """A method's safety budget: its own ``budget`` option, else the run's, else 1; both given and
    different is an error naming them."""
    if option is not None and run is not None and abs(option - run) > 1e-12:
        raise ValueError(f"method {method!r} sets budget={option:g} but the run's --budget is {run:g}: give one of them")
    return float(option if option is not None else run if run is not None else 1.0)


def split_time(seconds: float, n: int) -> float:
    """A batch's wall time per prompt."""
    return seconds / max(n, 1)


def trim(tokens: Sequence[int], eos: frozenset[int]) -> list[int]:
    """Tokens up to (excluding) the first end-of-sequence token."""
    end = next((i for i, t in enumerate(tokens) if t in eos), None)
    return list(tokens if end is None else tokens[:end])


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]
