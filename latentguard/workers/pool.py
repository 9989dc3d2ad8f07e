"""Parallel jobs in-process or on Ray actors: one model replica per actor, the same results.

Collection and evaluation are embarrassingly parallel by prompt, and every unit of work (a chunk of
prompts, a shard of episodes) is seeded by its own content, not by where it runs. A
:class:`WorkerPool` maps a task over such units:

- in-process (``ray=None``, the default): the units run one after the other in this process, on
  the state ``setup()`` builds once (the model, the guard); Ray is never imported;
- on Ray (``ray=""`` for a local cluster, ``"auto"`` for the running one, or ``"HOST:PORT"``):
  ``workers`` actors, each running ``setup()`` once (its own model replica) with ``worker_cpus``
  CPUs (and as many torch threads) and ``worker_gpus`` GPUs, fed from a queue, a unit at a time.

Either way :meth:`WorkerPool.imap` yields ``(index, result)`` as units finish (in-process: in
order); the caller writes each result as it comes (resumable shards, samples) and merges by
index. An actor that dies loses only the unit it held: the unit is queued again on a fresh actor
(at most ``max_restarts`` times in a run), so the run completes with the same result.

``setup`` and ``task`` must be importable module-level functions (or ``functools.partial`` of
them): Ray sends them to the actors by reference, so every machine of a cluster needs the package
installed (``pip install latentguard[ray]``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class WorkerConfig:
    """Where parallel jobs run: in this process (``ray`` None) or on Ray actors."""

    ray: str | None = field(default=None, metadata={"const": ""})
    """None = in-process (Ray is not imported); '' = start a local Ray cluster; 'auto' = the
    cluster this machine belongs to (``ray start --head``); 'HOST:PORT' = a cluster's address."""
    workers: int = 2
    """Ray actors, each with its own model replica."""
    worker_cpus: float = 1.0
    """CPUs per actor (also its torch threads)."""
    worker_gpus: float = 0.0
    """GPUs per actor (0 = CPU only; the model goes to 'cuda' when > 0)."""
    connect_timeout: float = 20.0
    """Seconds to reach a cluster address before giving up with an error."""
    max_restarts: int = 8
    """Actors replaced after dying, per run, before the run fails."""

    def __post_init__(self) -> None:
        self.check_workers()

    def check_workers(self) -> None:
        """Refuse impossible worker options, naming them."""
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if not self.worker_cpus > 0:
            raise ValueError(f"--worker-cpus must be > 0, got {self.worker_cpus}")
        if self.worker_gpus < 0:
            raise ValueError(f"--worker-gpus must be >= 0, got {self.worker_gpus}")
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0, got {self.connect_timeout}")

    @property
    def distributed(self) -> bool:
        return self.ray is not None

    def worker_device(self, local: str | torch.device) -> str:
        """Where a worker puts its model: 'cuda' on an actor given GPUs, else ``local``."""
        return "cuda" if self.distributed and self.worker_gpus > 0 else str(local)

    def worker_config(self) -> WorkerConfig:
        """These options alone (a config that inherits them carries its own fields too)."""
        return WorkerConfig(**{f: getattr(self, f) for f in WorkerConfig.__dataclass_fields__})


def check_reachable(address: str, timeout: float) -> None:
    """Raise ``ConnectionError`` naming ``address`` unless a TCP connection to it opens within
    ``timeout`` seconds (Ray itself may wait minutes for an address that does not answer)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray address must be 'auto', empty (a local cluster) or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as error:
        raise ConnectionError(f"cannot reach a Ray cluster at {address!r} within {timeout:g} s ({error}); start one "
                              "with `ray start --head` there, or run without --ray") from None


def init_ray(config: WorkerConfig):
    """Connect to (or start) the cluster and check it can host the actors; returns the ray module."""
    import ray

    if not ray.is_initialized():
        if config.ray:
            if config.ray != "auto":
                check_reachable(config.ray, config.connect_timeout)
            try:
                ray.init(address=config.ray, log_to_driver=False, include_dashboard=False)
            except ConnectionError as error:
                raise ConnectionError(f"cannot connect to the Ray cluster {config.ray!r}: {error}; start one with "
                                      "`ray start --head`, or run without --ray") from None
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, int(config.workers * config.worker_cpus)),
                     log_to_driver=False, include_dashboard=False)
    resources = ray.cluster_resources()
    if config.worker_gpus > resources.get("GPU", 0):
        raise ValueError(f"--worker-gpus {config.worker_gpus:g} asks for more GPUs per worker than the cluster has "
                         f"({resources.get('GPU', 0):g}); lower it or add GPU nodes")
    if config.worker_cpus > resources.get("CPU", 0):
        raise ValueError(f"--worker-cpus {config.worker_cpus:g} asks for more CPUs per worker than the cluster has "
                         f"({resources.get('CPU', 0):g}); lower it")
    return ray


class _Worker:
    """A Ray actor's body: the state ``setup`` builds once, then tasks on it."""

    def __init__(self, setup: Callable[[], Any], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.state = setup()

    def run(self, task: Callable[[Any, Any], Any], item: Any) -> Any:
        return task(self.state, item)

    def pid(self) -> int:
        return os.getpid()


class WorkerPool:
    """Maps ``task(state, item)`` over items, in-process or on Ray actors (module docstring).

    :param setup: builds a worker's state (called once per worker: in-process once, once per actor).
    :param config: where to run.
    :param state: in-process, a state already built (a model loaded here) to use instead of calling
        ``setup``; ignored on Ray, where every actor builds its own.
    """

    def __init__(self, setup: Callable[[], Any], config: WorkerConfig | None = None, state: Any = None) -> None:
        self.setup, self.config = setup, config or WorkerConfig()
        self.state: Any = None if self.config.distributed else state
        self.actors: list = []
        self.restarts = 0

    # ------------------------------------------------------------------ in-process
    def _local(self, task, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if self.state is None:
            self.state = self.setup()
        for index, item in enumerate(items):
            yield index, task(self.state, item)

    # ------------------------------------------------------------------ Ray
    def _new_actor(self):
        ray, cfg = self.ray, self.config
        actor_class = ray.remote(num_cpus=cfg.worker_cpus, num_gpus=cfg.worker_gpus, max_restarts=0)(_Worker)
        return actor_class.remote(self.setup, int(cfg.worker_cpus))

    def _ray(self, task, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from ray.exceptions import ActorDiedError, RayActorError

        self.ray = init_ray(self.config)
        while len(self.actors) < min(self.config.workers, len(items)):
            self.actors.append(self._new_actor())
        queue = list(range(len(items)))
        running: dict = {}  # object ref -> (actor slot, item index)

        def feed(slot: int) -> None:
            if queue:
                index = queue.pop(0)
                running[self.actors[slot].run.remote(task, items[index])] = (slot, index)

        for slot in range(len(self.actors)):
            feed(slot)
        while running:
            done, _ = self.ray.wait(list(running), num_returns=1)
            slot, index = running.pop(done[0])
            try:
                result = self.ray.get(done[0])
            except (RayActorError, ActorDiedError) as error:
                if "creation task" in str(error):  # setup() raised: every new actor would too
                    raise RuntimeError(f"a Ray worker could not start: {error}") from None
                self.restarts += 1
                if self.restarts > self.config.max_restarts:
                    raise RuntimeError(f"Ray actors died {self.restarts} times in this run (max_restarts "
                                       f"{self.config.max_restarts}); the last: {error}") from None
                queue.insert(0, index)  # the unit the actor held runs again, first
                self.actors[slot] = self._new_actor()
                feed(slot)
                continue
            feed(slot)
            yield index, result

    def imap(self, task: Callable[[Any, Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, task(state, items[index]))`` for every item, as each finishes."""
        if not items:
            return iter(())
        return self._ray(task, items) if self.config.distributed else self._local(task, items)

    def close(self) -> None:
        """Stop the actors (the cluster stays up)."""
        if self.actors:
            for actor in self.actors:
                self.ray.kill(actor)
            self.actors = []
