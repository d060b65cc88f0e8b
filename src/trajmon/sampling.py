"""Reading instruments: one worker thread per instrument, one hop per instrument per tick.

QCoDeS drivers block and are not thread-safe, so each instrument gets a dedicated thread that
runs every call to it in order (like aiosqlite's one thread per connection). A poll group's
channels on one instrument are read in a single hop — through the driver's ``get_many`` where it
has one (e.g. Nanonis Signals.ValsGet) — and different instruments are read concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from .channels import Channel, PollGroup

__all__ = ["GroupReader", "InstrumentBusyError", "InstrumentWorker", "ReadFailure"]

T = TypeVar("T")


class InstrumentBusyError(RuntimeError):
    """The instrument's thread has been stuck in one call for longer than the read timeout."""


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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._clock = clock
        self._running_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name=f"trajmon-{name}", daemon=True)
        self._thread.start()
        self._closed = False

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.abandoned:
                continue
            self._running_since = self._clock()
            try:
                result: Any = job.fn()
                ok = True
            except BaseException as exc:  # delivered to the awaiting task, not swallowed
                result, ok = exc, False
            finally:
                self._running_since = None
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, result)

    def stuck_for(self) -> float:
        """Seconds the thread has been inside its current call (0 when idle)."""
        since = self._running_since
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
        try:
            if timeout is None:
                return await asyncio.shield(job.future)
            with anyio.fail_after(timeout):
                return await asyncio.shield(job.future)
        except BaseException:
            job.abandoned = True
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after its current call; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout)


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """Why one channel has no value in a sample."""

    channel: str
    instrument: str
    error_type: str
    message: str


def _read_each(params: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for param in params:
        try:
            out.append(param.get())
        except Exception as exc:
            out.append(exc)
    return out


@dataclass(frozen=True, slots=True)
class _InstrumentPlan:
    instrument: str
    worker: InstrumentWorker
    fn: Callable[[], list[Any]]
    positions: tuple[int, ...]
    labels: tuple[str, ...]


def _make_read(instrument: Any, params: tuple[Any, ...]) -> Callable[[], list[Any]]:
    get_many = getattr(instrument, "get_many", None)
    if callable(get_many):
        return lambda: list(get_many(params))
    return lambda: _read_each(params)


class GroupReader:
    """Reads all channels of one poll group: one hop per instrument, instruments concurrently."""

    def __init__(
        self,
        group: PollGroup,
        instruments: dict[str, Any],
        workers: dict[str, InstrumentWorker],
        read_timeout_s: float | None,
    ) -> None:
        self.size = len(group.channels)
        self._timeout = read_timeout_s
        by_instrument: dict[str, list[tuple[int, Channel]]] = {}
        for pos, channel in enumerate(group.channels):
            by_instrument.setdefault(channel.instrument, []).append((pos, channel))
        self._plans = tuple(
            _InstrumentPlan(
                instrument=name,
                worker=workers[name],
                fn=_make_read(instruments[name], tuple(c.parameter for _, c in members)),
                positions=tuple(p for p, _ in members),
                labels=tuple(c.label for _, c in members),
            )
            for name, members in by_instrument.items()
        )

    async def read(self) -> tuple[list[Any], list[ReadFailure]]:
        values: list[Any] = [None] * self.size
        failures: list[ReadFailure] = []
        if len(self._plans) == 1:
            await self._read_one(self._plans[0], values, failures)
        else:
            async with anyio.create_task_group() as tg:
                for plan in self._plans:
                    tg.start_soon(self._read_one, plan, values, failures)
        return values, failures

    async def _read_one(
        self, plan: _InstrumentPlan, values: list[Any], failures: list[ReadFailure]
    ) -> None:
        try:
            results = await plan.worker.call(plan.fn, self._timeout)
        except TimeoutError:
            message = f"no answer within {self._timeout} s"
            failures.extend(
                ReadFailure(lbl, plan.instrument, "timeout", message) for lbl in plan.labels
            )
            return
        except Exception as exc:
            kind = "busy" if isinstance(exc, InstrumentBusyError) else type(exc).__name__
            failures.extend(
                ReadFailure(lbl, plan.instrument, kind, str(exc)) for lbl in plan.labels
            )
            return
        for pos, label, result in zip(plan.positions, plan.labels, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(
                    ReadFailure(label, plan.instrument, type(result).__name__, str(result))
                )
            else:
                values[pos] = result
