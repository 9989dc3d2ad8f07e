"""Torch work off the thread that decodes, without slowing it down.

Torch on CPU runs its parallel operations on OpenMP (libgomp), which keeps a pool of worker threads
for every thread that ran one, for that thread's whole life. A server that loads its model on the
main thread and decodes on another has two pools on the same cores: measured on 2 cores, a small
matrix product took 3.3x as long on the decoding thread as on the main thread alone, and critic search
served to 16 clients kept 1.4 of the 2 cores busy, for 0.72 of the batch API's speed. Work done by
:func:`in_passing_thread` leaves no pool behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_passing_thread(fn: Callable[[], T], name: str = "latentguard-setup") -> T:
    """``fn()`` run on a new thread that ends with it (its OpenMP pool goes with it); its result, or
    its exception raised here."""
    out: dict[str, T] = {}
    error: list[BaseException] = []

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # handed to the caller
            error.append(err)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out["value"]
