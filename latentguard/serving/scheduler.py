"""Requests of many clients batched onto one model: a bounded queue and one decoding thread.

Each request names a method and its sampling settings; requests that agree on them (the
:attr:`Request.group`) are decoded together as the rows of one batch, at most ``max_rows`` at a
time, in the order they arrived (the oldest waiting request picks the next group). Requests of other
methods wait for their own batch: one method's engine cannot decode another's rows.

What is batched, and what is not (yet): a batch is formed from the requests waiting when it starts
(**dynamic batching**); a request that arrives while a batch decodes waits for the next one, and a
client that goes away mid-batch stops receiving but its row decodes to the batch's end. Rows do not
join or leave a running batch (no continuous batching in this version).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from latentguard.serving.generator import Generator
from latentguard.serving.stream import StreamEvent


class QueueFull(RuntimeError):
    """The server holds ``max_queue`` waiting requests already (answered 429)."""


@dataclass
class Request:
    """One client's answer: the prompt, how to answer it, and where its events go."""

    prompt: str
    method: str
    max_tokens: int
    temperature: float
    top_p: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    """:class:`StreamEvent` items, then ``None`` (the end); an exception instead when the batch failed."""
    cancelled: bool = False
    """The client went away: its events are dropped."""
    arrived: float = field(default_factory=time.perf_counter)
    id: int = 0

    @property
    def group(self) -> tuple:
        """What a batch must share: the method and the sampling settings."""
        return (self.method, self.max_tokens, self.temperature, self.top_p)

    def put(self, item: StreamEvent | BaseException | None) -> None:
        """Hand an event to the client's loop (from the decoding thread)."""
        if not self.cancelled:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass
class Counters:
    """What ``/metrics`` reports (Prometheus counters and gauges)."""

    requests: int = 0
    rejected: int = 0
    failed: int = 0
    completed: int = 0
    cancelled: int = 0
    released_tokens: int = 0
    interventions: int = 0
    refusals: int = 0
    batches: int = 0
    rows_in_flight: int = 0
    decode_seconds: float = 0.0


class Scheduler:
    """The bounded queue and the decoding thread (see the module docstring).

    :param generator: the model, guard and methods.
    :param max_rows: most requests decoded together in one batch.
    :param max_queue: most requests waiting (not yet decoding); one more is :class:`QueueFull`.
    :param gather_seconds: how long the thread waits for more requests of a group before it starts a
        batch that is not full.
    """

    def __init__(self, generator: Generator, max_rows: int = 16, max_queue: int = 64,
                 gather_seconds: float = 0.01) -> None:
        if max_rows < 1 or max_queue < 1:
            raise ValueError(f"max_rows and max_queue must be >= 1, got {max_rows} and {max_queue}")
        self.generator, self.max_rows, self.max_queue = generator, int(max_rows), int(max_queue)
        self.gather_seconds = float(gather_seconds)
        self.waiting: deque[Request] = deque()
        self.counters = Counters()
        self._ids = itertools.count(1)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="latentguard-scheduler", daemon=True)
        self.on_batch: Callable[[list[Request]], None] | None = None
        """Called with each batch before it decodes (tests use it to see the grouping)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in flight, end the waiting requests with an error, stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    def submit(self, request: Request) -> Request:
        """Queue ``request`` (:class:`QueueFull` when ``max_queue`` are waiting)."""
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                self.counters.rejected += 1
                raise QueueFull(f"{len(self.waiting)} requests are waiting (--max-queue {self.max_queue}); retry later")
            request.id = next(self._ids)
            self.counters.requests += 1
            self.waiting.append(request)
            self._wake.notify_all()
        return request

    def cancel(self, request: Request) -> None:
        """The client went away: drop its events; a waiting request leaves the queue at once."""
        with self._wake:
            if not request.cancelled:
                request.cancelled = True
                self.counters.cancelled += 1
            if request in self.waiting:
                self.waiting.remove(request)

    def _next_batch(self) -> list[Request] | None:
        """The oldest waiting request's group, up to ``max_rows`` (blocks until one waits; empty when
        the group's requests were all cancelled while it gathered); ``None`` when stopping."""
        with self._wake:
            while not self.waiting and not self._stopping:
                self._wake.wait()
            if self._stopping:
                return None
            group = self.waiting[0].group
            deadline = time.perf_counter() + self.gather_seconds
            while True:
                same = [r for r in self.waiting if r.group == group]
                left = deadline - time.perf_counter()
                if len(same) >= self.max_rows or left <= 0 or self._stopping:
                    break
                self._wake.wait(left)
            batch = same[: self.max_rows]
            for r in batch:
                self.waiting.remove(r)
            self.counters.rows_in_flight = len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            if batch:
                self._decode(batch)
        with self._wake:
            for r in self.waiting:
                r.put(RuntimeError("the server shut down before this request was decoded"))
            self.waiting.clear()

    def _decode(self, batch: list[Request]) -> None:
        first = batch[0]
        start = time.perf_counter()
        self.counters.batches += 1
        if self.on_batch is not None:
            self.on_batch(batch)
        try:
            events = self.generator.stream_many([r.prompt for r in batch], first.method, max_new_tokens=first.max_tokens,
                                                temperature=first.temperature, top_p=first.top_p)
            for event in events:
                request = batch[event.index]
                if event.done:
                    rollout = event.rollout
                    assert rollout is not None  # a done event carries its rollout
                    self.counters.released_tokens += rollout.released_tokens
                    self.counters.interventions += rollout.interventions
                    self.counters.refusals += event.finish_reason == "content_filter"
                    self.counters.completed += not request.cancelled
                    self.counters.rows_in_flight -= 1
                request.put(event)
                if event.done:
                    request.put(None)
        except Exception as err:  # the batch failed: every request of it gets the error, the server stays up
            self.counters.failed += len(batch)
            for r in batch:
                r.put(err)
        finally:
            self.counters.rows_in_flight = 0
            self.counters.decode_seconds += time.perf_counter() - start
