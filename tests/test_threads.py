"""Torch work on a passing thread (latentguard.common.threads)."""

from __future__ import annotations

import threading

import pytest

from latentguard.common.threads import in_passing_thread


def test_work_runs_on_a_thread_that_has_ended_and_returns_its_value():
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 6 * 7

    assert in_passing_thread(work) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_an_error_in_the_work_is_raised_to_the_caller():
    def work() -> None:
        raise ValueError("no model named 'nope'")

    with pytest.raises(ValueError, match="no model named 'nope'"):
        in_passing_thread(work)
