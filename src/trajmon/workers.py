"""One thread per instrument: where its blocking QCoDeS calls run, one at a time, in order.

QCoDeS drivers block and are not thread-safe, so each instrument gets a dedicated thread that
runs every call to it in order (like aiosqlite's one thread per connection), and a driver hung
in a socket read costs the other instruments and the event loop nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .clock import SPIN_S
from .threaded import ThreadedGroup

__all__ = [
    "SHARED_WORKERS",
    "CallTimeoutError",
    "InstrumentBusyError",
    "InstrumentWorker",
    "SharedWorkers",
    "require_asyncio",
]

T = TypeVar("T")

_WAKE = object()  # a queue item that only wakes the worker thread


class InstrumentBusyError(RuntimeError):
    """The instrument's thread has been stuck in one call for longer than the read timeout."""


class CallTimeoutError(TimeoutError):
    """The caller's ``timeout`` passed before the instrument's thread answered: told apart from
    a driver's own ``TimeoutError`` (a socket's), whose type and words are the read's error."""


class _Job:
    __slots__ = ("abandoned", "fn", "future", "loop")

    def __init__(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.abandoned = False  # the caller gave up waiting: skip it rather than run it late


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task gave up (timeout) before the thread answered
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(CallTimeoutError())


def require_asyncio() -> None:
    """Refuse any other event loop before anything is opened: the writer (aiosqlite) and the
    instrument threads' hand-over are asyncio's, and under trio the first await deep inside
    aiosqlite failed with trio's "unrecognized yield message", after creating the file."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "trajmon records on asyncio (its writer is aiosqlite): run it with asyncio.run(),"
            " or anyio.run(..., backend='asyncio') — not trio"
        ) from None


class InstrumentWorker:
    """A dedicated daemon thread that runs one instrument's blocking calls in order.

    Calls from several poll groups queue up and run one at a time. A caller that times out
    abandons its call, which is then skipped instead of being run late; while the thread is stuck
    in a call older than the timeout, new calls fail at once (``InstrumentBusyError``), so a hung
    driver costs the other groups nothing. Daemon, so that a driver hung in a socket read can
    never keep the process alive after the run has been finalised.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | object | None] = queue.SimpleQueue()
        self._clock = clock
        self.running_since: float | None = None
        self._scheduled: tuple[ThreadedGroup, ...] = ()
        self._ticks = 0  # groups ticked so far: their order when due together
        self._thread = threading.Thread(target=self._loop, name=f"trajmon-{name}", daemon=True)
        self._thread.start()
        self._closed = False

    def attach(self, group: ThreadedGroup) -> None:
        """Run ``group``'s schedule on this thread (see :mod:`trajmon.threaded`)."""
        self._scheduled = (*self._scheduled, group)
        self.wake()

    def detach(self, group: ThreadedGroup) -> None:
        self._scheduled = tuple(g for g in self._scheduled if g is not group)
        self.wake()

    def wake(self) -> None:
        """Make the thread look at its schedules again (stop, room, a group added)."""
        self._jobs.put(_WAKE)

    def _next(self) -> _Job | object | None:
        """The next thing to do: a queued call first, else the group whose tick is due first,
        waiting for whichever comes sooner (a timed wait on the queue wakes within ~0.1 ms).

        Of groups due at the same instant (late together behind a slow read, on one grid) the
        one ticked longer ago goes first: the first attached always won, and a slow signal
        group's specs were read every other time (2 samples where 4 were due)."""
        jobs = self._jobs
        while True:
            best: ThreadedGroup | None = None
            best_due = 0.0
            for group in self._scheduled:
                due = group.due()
                if due is not None and (
                    best is None
                    or due < best_due
                    or (due == best_due and group.ticked < best.ticked)
                ):
                    best, best_due = group, due
            try:
                if best is None:
                    job = jobs.get()
                elif (wait := best_due - best.clock.monotonic()) > SPIN_S:
                    job = jobs.get(timeout=wait)
                elif jobs.empty():
                    return best  # due now or within a spin: the tick waits out the rest itself
                else:
                    job = jobs.get_nowait()
            except queue.Empty:
                return best
            if job is not _WAKE:
                return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            if not isinstance(job, _Job):
                assert isinstance(job, ThreadedGroup)
                self._ticks += 1
                job.ticked = self._ticks
                try:
                    job.tick()
                except BaseException as exc:  # a bug must end that group, not the instrument
                    # thread: a dead thread leaves its groups unfinished and the run hung
                    job.fail(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                continue
            if job.abandoned:
                continue
            self.running_since = self._clock()
            try:
                result: Any = job.fn()
                ok = True
            except BaseException as exc:  # delivered to the awaiting task, not swallowed
                result, ok = exc, False
            finally:
                self.running_since = None
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, result)

    def stuck_for(self) -> float:
        """Seconds the thread has been inside its current call (0 when idle)."""
        since = self.running_since
        return 0.0 if since is None else self._clock() - since

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the instrument thread and wait for it, at most ``timeout`` seconds."""
        if self._closed:
            raise RuntimeError(f"instrument worker {self.name!r} is closed")
        if timeout is not None and self.stuck_for() > timeout:
            raise InstrumentBusyError(
                f"{self.name}: a previous call has been running for {self.stuck_for():.1f} s"
            )
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop, loop.create_future())
        self._jobs.put(job)
        # One timer handle fails the future at the deadline; the thread's late answer then finds
        # it done and is dropped (_resolve). Cheaper per call than a cancel scope plus a shield.
        timer = None if timeout is None else loop.call_later(timeout, _expire, job.future)
        try:
            result: T = await job.future
            return result
        except BaseException:
            job.abandoned = True
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after its current call; safe to call twice.

        ``timeout`` counts from the start of the call in flight, as the hung-driver watchdog's
        does, not from now: a call already older than that has been given up as hung, and
        waiting for it all over again only doubled how long a stop took after a hang."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(max(0.0, timeout - self.stuck_for()))


class SharedWorkers:
    """One :class:`InstrumentWorker` per instrument object in the process, however many
    recorders read it and under whatever names: QCoDeS drivers are not thread-safe, and two
    recorders on one instrument, each with its own thread, read it concurrently (interleaved
    requests on one socket). Counted by users; the last one to let go closes the thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # recorders may run on event loops in several threads
        self._users: dict[int, tuple[Any, InstrumentWorker, int]] = {}

    def acquire(self, instrument: Any, name: str) -> InstrumentWorker:
        with self._lock:
            held, worker, users = self._users.get(id(instrument), (instrument, None, 0))
            if worker is None:
                worker = InstrumentWorker(name)
            self._users[id(instrument)] = (held, worker, users + 1)
            return worker

    def release(self, instrument: Any) -> InstrumentWorker | None:
        """Let go of ``instrument``'s worker; the worker to close if this was its last user."""
        with self._lock:
            held, worker, users = self._users[id(instrument)]
            if users > 1:
                self._users[id(instrument)] = (held, worker, users - 1)
                return None
            del self._users[id(instrument)]
            return worker


#: The process's workers, by instrument: every Recorder takes its workers from here.
SHARED_WORKERS = SharedWorkers()
