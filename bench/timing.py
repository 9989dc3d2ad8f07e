"""The one timing loop of the benchmarks: a method and its baseline, alternating, in one run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

Timed = Callable[[], tuple[float, Any]]
"""A call that runs once and returns (seconds, what it produced)."""


def alternate(runs: Sequence[tuple[str, Timed]], repeats: int) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Run every call once per repeat, in reverse order on odd repeats (so neither always goes first).

    Returns the seconds of each call by name, and per repeat what each call produced.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    outputs: list[dict[str, Any]] = []
    for r in range(repeats):
        produced = {}
        for name, call in runs if r % 2 == 0 else runs[::-1]:
            seconds, produced[name] = call()
            times[name].append(seconds)
        outputs.append(produced)
    return times, outputs


def timed_run(method, prompts: Sequence[str], ctx) -> tuple[float, Any]:
    """(seconds, rollouts) of one ``method.run(prompts, ctx)``: a :data:`Timed` call once bound."""
    start = time.perf_counter()
    rollouts = method.run(list(prompts), ctx)
    return time.perf_counter() - start, rollouts


def timed_chunks(method, prompts: Sequence[str], ctx, chunk: int) -> tuple[float, list]:
    """(seconds, rollouts) of ``method`` answering ``prompts`` in ``run`` calls of ``chunk`` prompts each,
    as ``evaluate.py --chunk`` hands them over."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    start, rollouts = time.perf_counter(), []
    for i in range(0, len(prompts), chunk):
        rollouts += method.run(list(prompts[i:i + chunk]), ctx)
    return time.perf_counter() - start, rollouts
