"""Time as an injected dependency.

Every component that schedules or timestamps takes a :class:`Clock` instead of calling
``time.monotonic`` and ``anyio.sleep`` itself, so tests run hours of schedule in simulated time
and assert exact tick counts instead of waiting and hoping.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["SPIN_S", "Clock", "FakeClock", "SystemClock", "ThreadClock", "utc_iso"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for schedules, wall time for the few values users read as dates."""

    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``monotonic() >= deadline``; returns at once (after a checkpoint) if past."""
        ...


@runtime_checkable
class ThreadClock(Protocol):
    """A clock whose last stretch of a wait can be slept on another thread.

    asyncio's epoll wait rounds every timeout *up* to a whole millisecond and the event loop adds
    its own latency, while ``time.sleep`` on a thread wakes within ~0.1 ms. A poller on such a
    clock sleeps on the loop until ``handoff_s`` before a tick, then lets the instrument's worker
    thread :meth:`block_until` the tick and take the read's start instant there. Simulated
    clocks do not implement this; their pollers sleep on the loop all the way.
    """

    handoff_s: float

    def monotonic(self) -> float: ...

    def block_until(self, deadline: float) -> None:
        """Block the calling (non-loop) thread until ``monotonic() >= deadline``."""
        ...


#: Thread-side waits shorter than this are spun rather than slept. A timed sleep or lock wait
#: costs a syscall and a wake-up and overshoots by the kernel's timer slack (50 µs by default),
#: so at very high rates (an interval of tens of µs) sleeping made every tick late and slow.
SPIN_S = 50e-6


class SystemClock:
    """The real clock: ``time.monotonic``/``time.time``, anyio's sleep, and a thread handoff."""

    #: More than the loop's worst usual wake-up latency (1 ms rounding + scheduling), so the
    #: handed-off read is normally waiting on its thread before the tick is due.
    handoff_s = 0.002
    #: Single-instrument poll groups run their schedule on the instrument's thread
    #: (:mod:`trajmon.threaded`); simulated clocks leave this unset and keep the loop-driven path.
    thread_schedules = True

    def monotonic(self) -> float:
        return time.monotonic()

    def block_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > SPIN_S:
            time.sleep(delay)
            return
        while time.monotonic() < deadline:  # a spin: a wait this short cannot be slept
            pass  # (time.sleep(0) is no better: it too costs a wake-up of ~50 µs)

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()


#: How far apart two simulated instants may be and still be one (float sums of steps drift).
_ROUNDING_S = 1e-9


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance`.

    Sleepers are woken in deadline order, each one seeing ``monotonic()`` equal to its own
    deadline, so a test can advance by a large step and still observe every tick in between in
    the order real time would have produced it.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._slept: anyio.Event | None = None  # set when a task begins to sleep

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    async def wait_for_sleepers(self, count: int) -> None:
        """Wait until at least ``count`` tasks sleep on this clock.

        A task waiting on a worker thread (an instrument read, an aiosqlite commit) is not
        parked on the clock, and :meth:`advance` cannot wait for it: moved meanwhile, time jumps
        past the deadline that task was about to compute from it (on a loaded machine, a commit
        took every sample its schedule should have left for later). Once every task a test
        knows of sleeps here, none is busy elsewhere and time can move.
        """
        while len(self._sleepers) < count:
            if self._slept is None:
                self._slept = anyio.Event()
            await self._slept.wait()

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (deadline, next(self._seq), event)
        heapq.heappush(self._sleepers, entry)
        if self._slept is not None:
            self._slept.set()
            self._slept = None
        try:
            await event.wait()
        finally:
            if not event.is_set():
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    def jump(self, seconds: float) -> None:
        """Let time pass without waking anyone: models time spent inside a blocking call."""
        self._now += seconds

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move time forward, waking sleepers one deadline at a time.

        After each wake-up the event loop is given ``settle`` checkpoints so the woken tasks can
        run until they block again (on the clock, a queue, or a worker thread). So are tasks
        already runnable before time moves: one whose deadline had come (its sleep only a
        checkpoint) would otherwise first look at the clock after the jump, and begin its tick
        seconds late.
        """
        for _ in range(settle):
            await anyio.lowlevel.checkpoint()
        target = self._now + seconds
        # A deadline a rounding away from the target is reached: thirty advance(0.1) from 1e6
        # sum to less than the tick t0 + 30 * 0.1 a schedule computes, and the sleeper slept on.
        while self._sleepers and self._sleepers[0][0] <= target + _ROUNDING_S:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()
            for _ in range(settle):
                await anyio.lowlevel.checkpoint()
        self._now = max(self._now, target)
        for _ in range(settle):
            await anyio.lowlevel.checkpoint()


def utc_iso(epoch: float) -> str:
    """ISO-8601 UTC with microseconds: sortable as text and unambiguous for operators."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds")
