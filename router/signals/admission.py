"""Admission control in front of the classifier models.

Without it, every request joins the model queues at once; on two cores a burst of a few hundred makes
every request's checks slow, the guards time out, and each request is answered as if the guard had
failed. With it, at most ``max_active`` requests are classified at a time (each finishes in bounded
time), at most ``max_waiting`` wait for a turn, and nobody waits or runs past the request deadline:
whoever cannot be checked in time is shed with a retryable 503, which the caller counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Shed(Exception):
    """The request could not get a classification turn: ``reason`` is ``queue_full`` or ``deadline``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Admission:
    def __init__(self, max_active: int, max_waiting: int, deadline_s: float):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.deadline_s = deadline_s
        self._slots = asyncio.Semaphore(max_active)
        self.active = 0
        self.waiting = 0

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[float]:
        """Hold a classification slot; yields the seconds left before the request's deadline."""
        started = time.monotonic()
        if self._slots.locked():
            if self.waiting >= self.max_waiting:
                raise Shed("queue_full", f"{self.waiting} requests are already waiting for the classifiers")
            self.waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self.deadline_s)
            except TimeoutError:
                raise Shed("deadline", f"no classifier turn within {self.deadline_s:g}s") from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.active += 1
        try:
            yield self.deadline_s - (time.monotonic() - started)
        finally:
            self.active -= 1
            self._slots.release()
