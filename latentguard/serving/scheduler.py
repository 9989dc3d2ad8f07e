"""Requests of many clients batched onto one model: a bounded queue and one decoding thread.

Each request names a method and its sampling settings; requests that agree on them (the
:attr:`Request.group`) are decoded together as rows of one engine, at most ``max_rows`` at a time.
Requests of other methods wait for their own turn: one method's engine cannot decode another's rows.
The oldest waiting request picks the next group.

- **Continuous batching** for the methods that can take rows into a running batch
  (:attr:`~latentguard.agents.base.Method.continuous`: plain sampling, greedy, CARE and its
  variants, critic search and beam-saute, ``learned-care``): a request of the running group joins it
  at the next step (the next block for the searches, the policy's next decision for
  ``learned-care``), in the same forward as the other rows' tokens, and a row that ends, or whose
  client went away, is freed then. The group stops taking new rows as soon as the
  oldest waiting request is of another group, and gives the model up when its rows are done.
- **Dynamic batching** for the others (best-of-n, beam): a batch is the group's requests waiting
  when it starts, decoded to its end; later requests wait for the next.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from latentguard.agents.base import PromptFeed, Rollout
from latentguard.serving.generator import Generator
from latentguard.serving.stream import ReleaseTracker, StreamEvent, finish_reason

GATHER_LIMIT = 4
"""The longest gather, in units of its quiet gap (``gather_seconds`` or ``block_gather_seconds``)."""


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
    done: bool = False
    """Its last event (the answer, or the error of its batch) has been handed over."""
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
    :param gather_seconds: how long the idle thread waits for another request of a group before it
        starts the ones it has, while they keep coming (at most :data:`GATHER_LIMIT` times it in all),
        for the methods that take new requests at every step.
    :param block_gather_seconds: the same for the methods where a request that misses the start
        waits longer: those that take new requests every several steps
        (:attr:`~latentguard.agents.base.Method.joins_every`: the searches, ``learned-care``) and
        those that decode whole batches.
    """

    def __init__(self, generator: Generator, max_rows: int = 16, max_queue: int = 64,
                 gather_seconds: float = 0.01, block_gather_seconds: float = 0.1) -> None:
        if max_rows < 1 or max_queue < 1:
            raise ValueError(f"max_rows and max_queue must be >= 1, got {max_rows} and {max_queue}")
        self.generator, self.max_rows, self.max_queue = generator, int(max_rows), int(max_queue)
        self.gather_seconds, self.block_gather_seconds = float(gather_seconds), float(block_gather_seconds)
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
        return self.submit_all([request])[0]

    def submit_all(self, requests: list[Request]) -> list[Request]:
        """Queue all of ``requests`` or none (:class:`QueueFull` when they would pass ``max_queue``)."""
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(requests) > self.max_queue:
                self.counters.rejected += len(requests)
                raise QueueFull(f"{len(self.waiting)} requests are waiting (--max-queue {self.max_queue}); "
                                f"{len(requests)} more do not fit; retry later")
            for request in requests:
                request.id = next(self._ids)
                self.waiting.append(request)
            self.counters.requests += len(requests)
            self._wake.notify_all()
        return requests

    def cancel(self, request: Request) -> None:
        """The client went away: drop its events; a waiting request leaves the queue at once. A
        request already answered is left as it is (one choice of several may be)."""
        with self._wake:
            if request.done:
                return
            if not request.cancelled:
                request.cancelled = True
                self.counters.cancelled += 1
            if request in self.waiting:
                self.waiting.remove(request)

    def _next_group(self) -> tuple | None:
        """The group of the oldest waiting request (blocks until one waits); ``None`` when stopping."""
        with self._wake:
            while not self.waiting and not self._stopping:
                self._wake.wait()
            return None if self._stopping else self.waiting[0].group

    def _take(self, group: tuple, n: int, gather: float = 0.0) -> list[Request]:
        """Up to ``n`` waiting requests of ``group``, oldest first, taken off the queue. With
        ``gather`` it waits for ``n`` of them while they keep coming: until ``gather`` seconds pass
        without a new one, and at most :data:`GATHER_LIMIT` times ``gather`` in all (clients that
        start together arrive over tens of milliseconds)."""
        with self._wake:
            start = last = time.perf_counter()
            seen = 0
            while True:
                same = [r for r in self.waiting if r.group == group]
                now = time.perf_counter()
                if len(same) > seen:  # a new one came: wait another gather for the next
                    seen, last = len(same), now
                left = min(last + gather, start + GATHER_LIMIT * gather) - now
                if len(same) >= n or left <= 0 or self._stopping:
                    break
                self._wake.wait(left)
            taken = same[: max(n, 0)]
            for r in taken:
                self.waiting.remove(r)
            self.counters.rows_in_flight += len(taken)
            return taken

    def _others_waiting(self, group: tuple) -> bool:
        """Whether the oldest waiting request belongs to another group (the running one stops taking rows)."""
        with self._wake:
            return bool(self.waiting) and self.waiting[0].group != group

    def _loop(self) -> None:
        while (group := self._next_group()) is not None:
            method, max_tokens, temperature, top_p = group
            try:
                chosen = self.generator.method(method)
            except Exception as err:  # the method cannot be built: its requests get the error
                self._fail(self._take(group, self.max_queue), err)
                continue
            # a request that misses the start waits a step, or a block, a decision, a whole batch
            every_step = chosen.continuous and chosen.joins_every <= 1
            gather = self.gather_seconds if every_step else self.block_gather_seconds
            if chosen.continuous:
                feed = _GroupFeed(self, group, gather)
                self.counters.batches += 1
                start = time.perf_counter()
                try:
                    self.generator.serve(feed, method, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
                except Exception as err:  # the rows in flight get the error, the server stays up
                    self._fail(list(feed.requests.values()), err)
                finally:
                    self.counters.rows_in_flight = 0
                    self.counters.decode_seconds += time.perf_counter() - start
            elif batch := self._take(group, self.max_rows, gather):
                self._decode(batch)
        with self._wake:
            for r in self.waiting:
                r.put(RuntimeError("the server shut down before this request was decoded"))
            self.waiting.clear()

    def _fail(self, requests: list[Request], err: BaseException) -> None:
        self.counters.failed += len(requests)
        for r in requests:
            r.done = True
            r.put(err)

    def _finish(self, request: Request, event: StreamEvent) -> None:
        """Count a request's done event and hand it over, then the end of its events."""
        rollout = event.rollout
        assert rollout is not None  # a done event carries its rollout
        self.counters.released_tokens += rollout.released_tokens
        self.counters.interventions += rollout.interventions
        self.counters.refusals += event.finish_reason == "content_filter"
        self.counters.completed += not request.cancelled
        self.counters.rows_in_flight -= 1
        request.done = True
        request.put(event)
        request.put(None)

    def _decode(self, batch: list[Request]) -> None:
        """A dynamic batch: the requests decoded together to the batch's end."""
        first = batch[0]
        start = time.perf_counter()
        self.counters.batches += 1
        if self.on_batch is not None:
            self.on_batch(batch)
        try:
            events = self.generator.stream_many([r.prompt for r in batch], first.method, max_new_tokens=first.max_tokens,
                                                temperature=first.temperature, top_p=first.top_p)
            for event in events:
                if event.done:
                    self._finish(batch[event.index], event)
                else:
                    batch[event.index].put(event)
        except Exception as err:  # the batch failed: every request of it gets the error, the server stays up
            self._fail(batch, err)
        finally:
            self.counters.rows_in_flight = 0
            self.counters.decode_seconds += time.perf_counter() - start


class _GroupFeed(PromptFeed):
    """The running group's requests as a :class:`~latentguard.agents.base.PromptFeed` (continuous batching)."""

    def __init__(self, scheduler: Scheduler, group: tuple, gather: float) -> None:
        self.scheduler, self.group, self.gather = scheduler, group, gather
        self.max_rows = scheduler.max_rows
        self.max_tokens = group[1]
        self.requests: dict[int, Request] = {}  # in flight, by request id
        self.tracker = ReleaseTracker()

    def take(self, n: int, idle: bool) -> list[tuple[int, str]]:
        if n <= 0 or self.scheduler._others_waiting(self.group):
            return []
        # idle: nothing in flight, or a block method just answered a request, so wait a little for the
        # group's other requests (as a dynamic batch does): a method that takes rows only at a block's
        # start would make a late one, or a client's next request, wait a block
        taken = self.scheduler._take(self.group, n, self.gather if idle else 0.0)
        if taken and self.scheduler.on_batch is not None:
            self.scheduler.on_batch(taken)
        self.requests.update((r.id, r) for r in taken)
        return [(r.id, r.prompt) for r in taken]

    def cancelled(self, index: int) -> bool:
        request = self.requests.get(index)
        if request is not None and request.cancelled:  # the method frees its row now
            del self.requests[index]
            self.tracker.delta(index, "", final=True)
            self.scheduler.counters.rows_in_flight -= 1
        return request is None or request.cancelled

    def released(self, index: int, text: str) -> None:
        request = self.requests.get(index)
        if request is not None and (delta := self.tracker.delta(index, text)):
            request.put(StreamEvent(0, delta))

    def finish(self, index: int, rollout: Rollout) -> None:
        request = self.requests.pop(index, None)
        if request is None:  # freed when its client went away
            return
        delta = self.tracker.delta(index, rollout.text, final=True)
        self.scheduler._finish(request, StreamEvent(0, delta, rollout, finish_reason(rollout, self.max_tokens)))
