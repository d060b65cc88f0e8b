"""Absolute schedules and the poller task that follows one.

Tick ``k`` of a group is due at ``t0 + k·interval``. Computing each deadline from ``t0`` rather
than from the previous wake-up means sampling never drifts; a tick that starts late is taken at
once, and ticks whose whole slot has passed are skipped and counted — never burst to catch up,
which would hammer an instrument that is already slow.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import anyio

from .clock import Clock, ThreadClock
from .detection import ChangeDetector
from .records import ActionEvent, FlaggedSample, GroupStats, MonitorError, Sample, SampleBatch
from .sampling import GroupReader, ReadFailure
from .threaded import FLUSH_S, PULLED_FLUSH_S, ThreadedGroup
from .workers import InstrumentWorker

__all__ = ["Poller", "SampleSink", "Schedule"]

_EPS = 1e-9


class Schedule:
    """Tick arithmetic for one group; pure, so it is tested without any clock."""

    def __init__(self, t0: float, interval_s: float, first_tick: int = 0) -> None:
        self.t0 = t0
        self.interval_s = interval_s
        self.k = first_tick

    @classmethod
    def resuming(cls, t0: float, interval_s: float, now: float) -> Schedule:
        """A schedule whose first tick is the first one due at or after ``now``."""
        return cls(t0, interval_s, max(0, math.ceil((now - t0) / interval_s - _EPS)))

    @property
    def due(self) -> float:
        return self.t0 + self.k * self.interval_s

    def begin(self, now: float) -> tuple[int, float]:
        """Start the current tick at ``now``: returns (ticks skipped, lateness in seconds).

        The tick whose slot contains ``now`` is the one taken; earlier ones were entirely missed.
        """
        # Once per sample on an instrument thread, flat out tens of thousands of times a second:
        # written without the ``due`` property and ``max`` calls, a measurable share there.
        k, t0, interval = self.k, self.t0, self.interval_s
        current = math.floor((now - t0) / interval + _EPS)
        skipped = current - k if current > k else 0
        k += skipped
        due = t0 + k * interval
        self.k = k + 1
        return skipped, (now - due if now > due else 0.0)

    def end(self, now: float, stop_at: float, end_at: float | None) -> int:
        """The schedule ends at the earliest of ``now``, the stop and the run's end: the ticks
        due before it that were never begun (a full queue or a slow read held the group back to
        the end) are skipped, and their number returned, so that samples read plus ticks missed
        is every tick due before the end."""
        at = min(now, stop_at, math.inf if end_at is None else end_at)
        k, t0, interval = self.k, self.t0, self.interval_s
        first_after = math.ceil((at - t0) / interval - _EPS)
        # The quotient's rounding can put a tick due at the very end (a duration that is a
        # whole number of intervals) on either side; the pollers decide with ``due >= end -
        # _EPS`` in seconds, so settle it with that same test: else a run held back at its end
        # counted one tick more than it had (with t0 ~5e5 s of uptime, about 1 run in 10).
        while t0 + (first_after - 1) * interval >= at - _EPS:
            first_after -= 1
        while t0 + first_after * interval < at - _EPS:
            first_after += 1
        skipped = first_after - k if first_after > k else 0
        self.k = k + skipped
        return skipped


class SampleSink(Protocol):
    """Where samples go. A sink may also offer ``send_nowait(item) -> bool`` (False: full), which
    the poller then uses first, so a sample costs a plain call when the queue has room, and
    ``add_puller(pull) -> remove`` (:meth:`QueueSink.add_puller`): then a signal group's
    batches are pulled before each commit rather than handed over on a timer."""

    async def send(self, item: Sample | SampleBatch | FlaggedSample) -> None: ...


class Reader(Protocol):
    async def read(self) -> tuple[list[Any], list[ReadFailure]]: ...


@runtime_checkable
class TimedReader(Protocol):
    """A reader that can wait out the last stretch before a tick on the instrument's thread."""

    async def read_at(
        self, due: float, clock: ThreadClock
    ) -> tuple[list[Any], list[ReadFailure], float]: ...


class Poller:
    """One task per poll group: sleep to the next due tick, read, detect, enqueue.

    Stopping is cooperative: :meth:`stop` only interrupts the *sleep*. A read already under way
    finishes and its sample is enqueued, so every request an instrument answered is recorded.

    On a :class:`~trajmon.clock.ThreadClock` with a :class:`TimedReader` the poller sleeps on
    the loop only until ``handoff_s`` before each tick and hands the read over early: the
    instrument's thread sleeps to the tick with ``time.sleep`` precision and takes the start
    instant there (a read handed over counts as under way). Elsewhere — simulated clocks, other
    readers — it sleeps on the loop until the tick and takes the start instant itself.

    On the real clock (``thread_schedules``) a group that reads a single instrument goes further:
    its whole schedule runs on that instrument's thread (:mod:`trajmon.threaded`) and this task
    only enqueues the batches it hands over, runs change detection, and watches for a hung
    driver. Groups spanning several instruments keep the handoff path above, so their
    instruments are still read concurrently.
    """

    def __init__(
        self,
        stats: GroupStats,
        reader: Reader,
        sink: SampleSink,
        *,
        clock: Clock,
        schedule: Schedule,
        next_sample_idx: int = 0,
        end_at: float | None = None,
        detector: ChangeDetector | None = None,
    ) -> None:
        self.stats = stats
        self._reader = reader
        self._sink = sink
        self._clock = clock
        self._schedule = schedule
        self._next_idx = next_sample_idx
        self._end_at = end_at
        self._detector = detector
        self._stopping = False
        self._stop_at = math.inf
        self._sleep_scope: anyio.CancelScope | None = None
        self._send_nowait: Callable[[Any], bool] | None = getattr(sink, "send_nowait", None)
        self._handoff: tuple[TimedReader, ThreadClock] | None = None
        if isinstance(clock, ThreadClock) and isinstance(reader, TimedReader):
            self._handoff = (reader, clock)
        self._threaded: ThreadedGroup | None = None

    def stop(self) -> None:
        if not self._stopping:
            self._stop_at = self._clock.monotonic()
        self._stopping = True
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()
        if self._threaded is not None:
            self._threaded.request_stop()

    async def run(self) -> None:
        if (
            self._handoff is not None
            and getattr(self._clock, "thread_schedules", False)
            and isinstance(self._reader, GroupReader)
            and (plan := self._reader.thread_plan()) is not None
        ):
            await self._run_threaded(self._reader, *plan, self._handoff[1])
            return
        try:
            await self._run_on_loop()
        finally:  # the thread counts its own (ThreadedGroup._finish)
            missed = self._schedule.end(self._clock.monotonic(), self._stop_at, self._end_at)
            self.stats.missed_ticks += missed

    async def _run_threaded(
        self,
        reader: GroupReader,
        worker: InstrumentWorker,
        read: Callable[[], Any],
        clock: ThreadClock,
    ) -> None:
        """The schedule runs on the instrument's thread (:mod:`trajmon.threaded`); the loop
        wakes per batch to detect changes and enqueue, and watches for a hung driver."""
        if self._stopping:  # stopped before it began: its ticks due so far were all missed
            self.stats.missed_ticks += self._schedule.end(
                self._clock.monotonic(), self._stop_at, self._end_at
            )
            return
        # A signal group (no change detection) need not wake the loop on a timer: the writer
        # pulls its batch before each commit, and only half its room used or a failure hands
        # over earlier. A spec group hands over every FLUSH_S, which bounds detection latency.
        add_puller: Callable[[Callable[[], bool]], Callable[[], None]] | None = (
            getattr(self._sink, "add_puller", None) if self._detector is None else None
        )
        group = ThreadedGroup(
            self.stats,
            clock=clock,
            schedule=self._schedule,
            next_sample_idx=self._next_idx,
            end_at=self._end_at,
            read=read,
            parse=reader.parse,
            failures=reader.failures,
            size=reader.size,
            worker=worker,
            loop=asyncio.get_running_loop(),
            timeout_s=reader.timeout_s,
            flush_s=FLUSH_S if add_puller is None else PULLED_FLUSH_S,
        )
        self._threaded = group
        remove_puller = None if add_puller is None else add_puller(group.pull)
        worker.attach(group)
        try:
            while True:
                if not group.done:
                    with anyio.move_on_after(group.watch()):
                        await group.ready.wait()
                samples, failed = group.take()
                if samples:
                    try:
                        await self._enqueue(samples, failed)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the writer is gone (storage failure); the recorder reports it
                    group.done_with(len(samples))
                elif group.done:
                    if group.error is not None:
                        raise group.error
                    return
        finally:
            if remove_puller is not None:
                remove_puller()
            worker.detach(group)
            self._next_idx = group.next_sample_idx

    async def _enqueue(
        self, samples: list[Sample], failed: dict[int, Sequence[ReadFailure]]
    ) -> None:
        """Clean samples go as one :class:`SampleBatch` per run of them; a sample with failures
        or actions goes alone, with its errors and events — the order is kept."""
        detector, gid = self._detector, self.stats.group_id
        if detector is None and not failed:  # a signal group's usual batch: no per-sample work
            with anyio.CancelScope(shield=True):
                await self._deliver_batch(SampleBatch(gid, samples))
            return
        clean: list[Sample] = []
        for sample in samples:
            failures = failed.get(sample.sample_idx, ()) if failed else ()
            events = () if detector is None else detector.feed(sample)
            if not failures and not events:
                clean.append(sample)
                continue
            with anyio.CancelScope(shield=True):
                if clean:
                    await self._deliver_batch(SampleBatch(gid, clean))
                    clean = []
                await self._deliver(sample, failures, events)
        if clean:
            with anyio.CancelScope(shield=True):
                await self._deliver_batch(SampleBatch(gid, clean))

    async def _deliver_batch(self, batch: SampleBatch) -> None:
        if not self._send_now(batch):
            await self._sink.send(batch)

    async def _run_on_loop(self) -> None:
        schedule, clock, stats = self._schedule, self._clock, self.stats
        t0, handoff = schedule.t0, self._handoff
        lead = 0.0 if handoff is None else handoff[1].handoff_s
        while not self._stopping:
            due = schedule.due
            if self._end_at is not None and due >= self._end_at - _EPS:
                return
            await self._sleep_until(due - lead)
            if self._stopping:
                return
            start = clock.monotonic()
            if self._end_at is not None and start >= self._end_at:
                return
            stats.reading_since = start  # the live view's "read in flight" (trajmon.stalls)
            try:
                if handoff is None:
                    values, failures = await self._reader.read()
                else:
                    values, failures, start = await handoff[0].read_at(due, handoff[1])
            finally:
                stats.reading_since = None
            skipped, lateness = schedule.begin(start)
            read_s = clock.monotonic() - start
            sample = Sample(stats.group_id, self._next_idx, start - t0, read_s, values)
            self._next_idx += 1
            stats.samples_read += 1
            stats.missed_ticks += skipped
            stats.read_s_sum += read_s
            stats.read_s_max = max(stats.read_s_max, read_s)
            stats.lateness_max_s = max(stats.lateness_max_s, lateness)
            stats.last_dt_s = sample.dt_s
            stats.last_values = values
            if failures:
                stats.read_failed(sample.dt_s, failures)
            events = () if self._detector is None else self._detector.feed(sample)
            try:
                if failures or events or not self._send_now(sample):
                    # Once read, a sample is delivered even if the run is being cancelled.
                    with anyio.CancelScope(shield=True):
                        await self._deliver(sample, failures, events)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the writer is gone (storage failure); the recorder reports it

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep, interruptibly by :meth:`stop`; the scope is only paid for when sleeping."""
        if deadline <= self._clock.monotonic():
            await self._clock.sleep_until(deadline)  # only a checkpoint
            return
        with anyio.CancelScope() as scope:
            self._sleep_scope = scope
            await self._clock.sleep_until(deadline)
        self._sleep_scope = None

    def _send_now(self, item: Sample | SampleBatch) -> bool:
        """The common case — clean samples, room in the queue — without a coroutine."""
        return self._send_nowait is not None and self._send_nowait(item)

    async def _deliver(
        self, sample: Sample, failures: Sequence[ReadFailure], events: Sequence[ActionEvent]
    ) -> None:
        """A sample with failures or actions goes as one item, so one commit takes it whole."""
        errors = tuple(
            MonitorError(sample.dt_s, f.channel, f.instrument, f.error_type, f.message)
            for f in failures
        )
        if errors or events:
            await self._sink.send(FlaggedSample(sample, errors, tuple(events)))
        else:
            await self._sink.send(sample)
