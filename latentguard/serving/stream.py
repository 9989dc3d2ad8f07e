"""Streaming guarded answers: the text a method releases, as it releases it.

A method tells its :class:`~latentguard.agents.base.RunContext` what it has released
(:meth:`~latentguard.agents.base.RunContext.released`): plain sampling every token as drawn, CARE and
``learned-care`` what has left the release buffer after a passing check, critic search an answer once
its best candidate has ended (its beams may change their text until then). :func:`stream_answers`
runs a method in a background thread and turns those releases into :class:`StreamEvent` deltas, then
ends each answer with the method's :class:`~latentguard.agents.base.Rollout` and a finish reason.

>>> from latentguard.serving import Generator
>>> gen = Generator(model="tiny", guard="keyword")
>>> text = "".join(e.delta for e in gen.stream("Name a fruit.", "vanilla", max_new_tokens=4))
>>> text == gen.generate(["Name a fruit."], "vanilla", max_new_tokens=4)[0].text
True

The stream never shows text the method did not release, and released text is never taken back: a
CARE refusal ends the stream with the refusal after the released text, as the batch answer reads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from latentguard.agents.base import Method, Rollout, RunContext

FINISH_REASONS = ("stop", "length", "content_filter")


class StreamError(RuntimeError):
    """A method took back text it had released (a bug in the method: released text only grows)."""


@dataclass
class StreamEvent:
    """Newly released text of one answer; the answer's last event carries its rollout."""

    index: int
    """Which prompt of the call (its position in the list)."""
    delta: str
    """Text released since the previous event of this answer (may be empty on the last event)."""
    rollout: Rollout | None = None
    """The method's whole record of the answer, on its last event only."""
    finish_reason: str | None = None
    """On the last event: ``"stop"`` (the answer ended), ``"length"`` (the token limit) or
    ``"content_filter"`` (the method refused or fell back: the OpenAI protocol's word)."""

    @property
    def done(self) -> bool:
        """Whether this is the answer's last event."""
        return self.rollout is not None


def finish_reason(rollout: Rollout, max_new_tokens: int) -> str:
    """Why an answer ended (:data:`FINISH_REASONS`): a refusal or fallback of the method is
    ``content_filter``; an answer that reached the token limit is ``length``; else ``stop``."""
    extra = rollout.extra or {}
    if extra.get("refused") or extra.get("fallback") == "refuse":
        return "content_filter"
    if rollout.released_tokens >= max_new_tokens:
        return "length"
    return "stop"


class ReleaseTracker:
    """What each answer's reader has been shown; turns whole released texts into deltas.

    Trailing whitespace and a trailing U+FFFD (a character cut between two tokens) are held back
    until more text follows, and leading whitespace is never shown, so that what is shown stays a
    prefix of the final text (CARE's refusal is joined to the released text stripped). The events of
    an answer join to its ``rollout.text`` without leading whitespace.
    """

    def __init__(self) -> None:
        self.shown: dict[int, str] = {}

    def delta(self, index: int, text: str, final: bool = False) -> str:
        """The part of ``text`` (the whole released text of answer ``index``) not shown yet; after
        the ``final`` text the answer is forgotten."""
        text = text.lstrip()
        if not final:
            text = text.rstrip().rstrip("\ufffd")
        shown = self.shown.get(index, "")
        if len(text) <= len(shown):
            if not shown.startswith(text):
                raise StreamError(f"answer {index}: the method took back released text: {shown!r} -> {text!r}")
            delta = ""
        elif not text.startswith(shown):
            raise StreamError(f"answer {index}: the method took back released text: {shown!r} -> {text!r}")
        else:
            delta = text[len(shown):]
            self.shown[index] = text
        if final:
            self.shown.pop(index, None)
        return delta


_DONE = object()


def stream_answers(method: Method, prompts: Sequence[str], ctx: RunContext) -> Iterator[StreamEvent]:
    """Run ``method`` on ``prompts`` and yield what it releases, as it releases it.

    Events of different answers interleave; each answer ends with one event whose ``rollout`` is set
    (the answer's events joined are ``rollout.text`` without its leading whitespace). The method runs in a background thread on
    ``ctx`` (its own listener replaces ``ctx.on_release``); closing the iterator early does not stop
    it, the thread runs its batch to the end. An error of the method is raised here.
    """
    prompts = list(prompts)
    if not prompts:
        return
    releases: queue.Queue = queue.Queue()
    result: dict = {}

    def work() -> None:
        try:
            result["rollouts"] = method.run(prompts, replace(ctx, on_release=lambda i, t: releases.put((i, t))))
        except BaseException as err:  # handed to the consumer, raised there
            result["error"] = err
        finally:
            releases.put(_DONE)

    thread = threading.Thread(target=work, name=f"latentguard-{method.name}", daemon=True)
    thread.start()
    tracker = ReleaseTracker()
    while (item := releases.get()) is not _DONE:
        index, text = item
        if delta := tracker.delta(index, text):
            yield StreamEvent(index, delta)
    thread.join()
    if "error" in result:
        raise result["error"]
    rollouts: list[Rollout] = result["rollouts"]
    for index, rollout in enumerate(rollouts):
        yield StreamEvent(index, tracker.delta(index, rollout.text, final=True), rollout,
                          finish_reason(rollout, ctx.max_new_tokens))
