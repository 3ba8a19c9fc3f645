"""Waiting in a test for what another task or process does, boundedly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``condition()`` holds; fail the test if it does not within ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not reached in {timeout:g} s")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """:func:`until` outside an event loop: return once ``condition()`` holds, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in {timeout:g} s"
        time.sleep(0.01)


def abandoned(offline: Any, text: str, timeout: float = 10.0) -> list[bool]:
    """For each request of the offline model with ``text`` in its messages: whether its client left it.

    Read once all are marked abandoned, or after ``timeout`` seconds (a client's drop reaches the
    model a moment after the request that caused it has been answered).
    """
    deadline = time.monotonic() + timeout
    while True:
        requests = [r for r in offline.model.requests if text in str(r["messages"])]
        if all(r.get("abandoned") for r in requests) or time.monotonic() > deadline:
            return [bool(r.get("abandoned")) for r in requests]
        time.sleep(0.05)
