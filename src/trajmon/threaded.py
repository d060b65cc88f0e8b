"""Schedules run on the instrument's own thread, samples handed to the event loop in batches.

With the loop driving every tick, each sample costs a round trip between the loop and the
instrument's thread (queue put, thread wake, ``call_soon_threadsafe``, loop wake): that latency
capped the end-to-end rate, cost CPU at 100 Hz, and made every loop stall a missed tick at 1 kHz
(docs/performance.md). Here the instrument's :class:`~trajmon.workers.InstrumentWorker` thread
runs the schedules of all single-instrument groups of that instrument itself — whichever group's
tick is due next — sleeping with the thread's precise timed wait, timestamping and reading there,
and the loop wakes once per batch to run change detection and enqueue. A spec group's batch is
handed over every :data:`FLUSH_S` (detection latency); a signal group's waits until the writer
pulls it just before a commit (:meth:`ThreadedGroup.pull`), so at 100 Hz the loop wakes for the
commits and little else (36 → 12 wake-ups a second, docs/performance.md).

What the loop-driven :class:`~trajmon.scheduling.Poller` promises still holds:

- ``dt_s`` is the instant the read began, taken on the thread right before it;
- ticks that pass while a read runs (or while the group is held back) are skipped and counted by
  :meth:`Schedule.begin`, never burst;
- backpressure is bounded: at most :data:`BATCH_ROOM` samples of a group are in flight between
  thread and queue; with no room the group takes no tick (it falls behind and counts missed
  ticks) until the loop has enqueued some — the thread never buffers more;
- stop: no new read starts, a read in flight completes and its sample is delivered;
- a hung driver: the loop-side watchdog (:meth:`ThreadedGroup.watch`) records the read in flight
  as a ``timeout`` failure once the thread has been stuck longer than the read timeout, and then
  a ``busy`` failure sample per due tick, exactly as the loop-driven path does; the late answer
  is dropped when it comes.

Thread safety: a group's schedule, sample counter and pending batch are touched by its worker
thread and by the loop's watchdog, always under the group's lock. :class:`GroupStats` counters
are written by whichever side emits a sample, under the same lock; the live view and the writer
read them without it (single int/float attribute loads and stores are atomic under the GIL).
The change detector is shared between spec groups and only ever runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .records import GroupStats, Sample

if TYPE_CHECKING:
    from .clock import ThreadClock
    from .sampling import ReadFailure
    from .scheduling import Schedule
    from .workers import InstrumentWorker

__all__ = [
    "BATCH_ROOM",
    "FLUSH_S",
    "LOW_ROOM",
    "PULLED_FLUSH_S",
    "WATCH_SLACK_S",
    "Taken",
    "ThreadedGroup",
]

_EPS = 1e-9

#: Types a read's value usually has, none of them an exception: checking a tuple against this
#: set is one C-level pass, half the cost of the general check (once per sample, flat out).
_PLAIN_TYPES = frozenset({float, int, bool, str, bytes, type(None)})

#: How long the oldest sample of a batch may wait on the thread before the loop is woken: the
#: loop then wakes at most ~1/FLUSH_S times a second per group, whatever the rate. This bounds
#: how late change detection sees a spec sample.
FLUSH_S = 0.05
#: The same for a group whose batches the writer pulls before each commit (a signal group:
#: nothing on the loop looks at its samples before the writer does). Only a fallback for very
#: long commit intervals; half the room used (:data:`LOW_ROOM`) or a failure hands over at once.
PULLED_FLUSH_S = 1.0
#: Samples of one group between its thread and the bounded queue, at most (backpressure): about
#: 0.5 MB for 12 floats each. Every hand-over wakes the event loop, and on a VM a wake-up costs
#: more than the enqueueing itself: flat out, 1 024 rather than 256 took the loop's CPU per sample
#: from 3.0-3.6 to 2.4-2.6 µs (docs/performance.md). At 1 kHz the commits' pulls come first.
BATCH_ROOM = 1024
#: Hand over once this few rooms are left, whatever the timer: the thread keeps reading into the
#: rest while the loop enqueues, rather than stopping at a full room until the loop comes round
#: (a pulled group above ~2 kHz fills half its room between two 0.25 s commits).
LOW_ROOM = BATCH_ROOM // 2
#: The watchdog checks this long after a call could first have passed the read timeout, so
#: that the check finds it past (and the float arithmetic cannot make the loop spin).
WATCH_SLACK_S = 0.001

Parse = Callable[[Any, BaseException | None], tuple[Sequence[Any], Sequence["ReadFailure"]]]
Failures = Callable[[str, str], list["ReadFailure"]]
#: What :meth:`ThreadedGroup.take` hands the loop: the samples in order, and the failures of
#: the few that have any, by ``sample_idx``.
Taken = tuple[list[Sample], dict[int, Sequence["ReadFailure"]]]


class ThreadedGroup:
    """One poll group scheduled on its instrument's worker thread.

    The thread calls :meth:`due` and :meth:`tick`; the loop calls :meth:`take`, :meth:`watch`,
    :meth:`pull`, :meth:`request_stop` and awaits :attr:`ready`.
    """

    def __init__(
        self,
        stats: GroupStats,
        *,
        clock: ThreadClock,
        schedule: Schedule,
        next_sample_idx: int,
        end_at: float | None,
        read: Callable[[], Any],
        parse: Parse,
        failures: Failures,
        size: int,
        worker: InstrumentWorker,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float | None,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.stats = stats
        self._group_id = stats.group_id
        self.clock = clock
        self._monotonic = clock.monotonic
        self.schedule = schedule
        self.worker = worker
        self.ready = asyncio.Event()
        self.done = False
        self.error: Exception | None = None
        #: When its instrument's thread last ticked it (that thread's count): of two groups due
        #: at once, the one ticked longer ago goes first (:meth:`InstrumentWorker._next`).
        self.ticked = 0
        self._next_idx = next_sample_idx
        self._end_at = end_at
        #: Ticks due at or after this are past the run's end (the pollers' test, precomputed).
        self._last_due = math.inf if end_at is None else end_at - _EPS
        self._read = read
        self._parse = parse
        self._failures = failures
        self._size = size
        self._loop = loop
        self._timeout = timeout_s
        self._flush_s = flush_s
        self._lock = threading.Lock()
        # Samples and their failures apart: a clean sample then costs the collector one object
        # (plus its values), not three — at 50 k samples/s the young objects that outlive a
        # collection decide how often the full, slow ones run (docs/performance.md).
        self._pending: list[Sample] = []
        self._failed: dict[int, Sequence[ReadFailure]] = {}
        self._room = BATCH_ROOM
        #: Hand the batch over once the next tick is due at or after this (its first sample's
        #: start plus the flush delay): set when a batch begins, so a tick only compares.
        self._flush_at = 0.0
        self._stopping = False
        self._stop_at = math.inf
        #: (sample_idx, start, ticks skipped, lateness) of the read in flight: the watchdog that
        #: records it as timed out counts the ticks its tick skipped, which the thread then drops.
        self._inflight: tuple[int, float, int, float] | None = None
        self._notified = False

    @property
    def next_sample_idx(self) -> int:
        return self._next_idx

    # -- worker thread ------------------------------------------------------------------------

    def due(self) -> float | None:
        """When the thread should next call :meth:`tick` (None: not now — done or no room)."""
        if self.done:
            return None
        if self._stopping:
            return -1.0  # at once: the tick finishes the group
        if self._room <= 0:
            return None
        due = self.schedule.due
        # A next tick past the run's end is not waited for: the group ticks at the end, which
        # finishes it. Waiting for that tick kept a run going up to an interval past its
        # duration (a day, at the slowest interval allowed).
        return due if due < self._last_due else self._end_at

    def tick(self) -> None:
        """Take the due tick on the worker thread: wait for it, read, and queue the sample."""
        # Flat out this runs tens of thousands of times a second, and every attribute load and
        # call in it shows in the rate (target 3, docs/performance.md): hence the locals and the
        # clean read's check written out here rather than in a call, and the lock taken with
        # explicit calls (half the cost of a ``with`` block).
        schedule, monotonic, lock = self.schedule, self._monotonic, self._lock
        due = schedule.due
        start = monotonic()
        end_at = self._end_at
        # Unlocked reads of two flags, only to skip a pointless wait: the check under the lock
        # below is the one that counts. A late tick (flat out, every one) skips the wait.
        if start < due and not self._stopping and (end_at is None or due < end_at - _EPS):
            self.clock.block_until(due)
            start = monotonic()
        lock.acquire()
        try:
            if self._stopping or (
                end_at is not None and (schedule.due >= end_at - _EPS or start >= end_at)
            ):
                self._finish()
                return
            skipped, lateness = schedule.begin(start)
            idx = self._next_idx
            self._next_idx = idx + 1
            self._inflight = inflight = (idx, start, skipped, lateness)
            self.stats.reading_since = start
        finally:
            lock.release()
        worker = self.worker
        worker.running_since = start
        error: BaseException | None = None
        results: Any = None
        try:
            results = self._read()
        except BaseException as exc:  # a failed get_many: every channel of this read failed
            # Any exception, KeyboardInterrupt and SystemExit included: raised on this thread
            # they can only be the driver's own, and one that escaped ended the thread with
            # the read in flight, so the group never finished and the run hung, deaf to stops.
            error = exc
        finally:
            worker.running_since = None
        read_s = monotonic() - start
        # The common case: a full tuple of plain values is already the sample's values.
        clean = (
            error is None
            and type(results) is tuple
            and len(results) == self._size
            and _PLAIN_TYPES.issuperset(map(type, results))
        )
        if clean:
            values: Sequence[Any] = results
            failures: Sequence[ReadFailure] = ()
        else:
            try:
                values, failures = self._parse(results, error)
            except Exception as exc:  # e.g. a get_many that answered the wrong number of values
                values, failures = self._parse(None, exc)
        sample = Sample(self._group_id, idx, start - schedule.t0, read_s, values)
        lock.acquire()
        try:
            if self._inflight is not inflight:
                return  # the watchdog already recorded this read as timed out
            self._inflight = None
            self.stats.reading_since = None
            self._emit(sample, failures, skipped, lateness)
            if self._stopping:
                self._finish()
        finally:
            lock.release()

    def _ended(self, due: float) -> bool:
        """Under the lock: stop requested or ``end_at`` reached; finishes the group if so."""
        if self._stopping or (self._end_at is not None and due >= self._end_at - _EPS):
            self._finish()
            return True
        return False

    # -- both sides, under the lock -----------------------------------------------------------

    def _emit(
        self, sample: Sample, failures: Sequence[ReadFailure], skipped: int, lateness: float
    ) -> None:
        stats = self.stats
        stats.samples_read += 1
        stats.missed_ticks += skipped
        read_s = sample.read_s
        stats.read_s_sum += read_s
        if read_s > stats.read_s_max:
            stats.read_s_max = read_s
        if lateness > stats.lateness_max_s:
            stats.lateness_max_s = lateness
        stats.last_dt_s = sample.dt_s
        stats.last_values = sample.values
        if failures:
            stats.read_failed(sample.dt_s, failures)
            self._failed[sample.sample_idx] = failures
        pending = self._pending
        if not pending:
            self._flush_at = sample.dt_s + self.schedule.t0 + self._flush_s
        pending.append(sample)
        self._room -= 1
        if failures or self._room <= LOW_ROOM or self.schedule.due >= self._flush_at:
            self._notify()

    def _finish(self) -> None:
        if not self.done:  # ticks due before the end that the group could not take are missed
            self.stats.missed_ticks += self.schedule.end(
                self._monotonic(), self._stop_at, self._end_at
            )
        self.done = True
        self._notify()

    def fail(self, error: Exception) -> None:
        """The tick itself raised (a bug, not a failed read): end the group; its poller drains
        what was queued and re-raises ``error`` on the loop."""
        with self._lock:
            self.error = error
            self._inflight = None
            self.stats.reading_since = None
            self._finish()

    def _notify(self) -> None:
        if not self._notified:
            self._notified = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(self.ready.set)

    # -- event loop ---------------------------------------------------------------------------

    def take(self) -> Taken:
        """The samples queued so far, in order, and the failures of those that have any; the
        loop enqueues them, then calls :meth:`done_with`."""
        with self._lock:
            self.ready.clear()
            self._notified = False
            taken = self._pending, self._failed
            self._pending, self._failed = [], {}
        return taken

    def pull(self) -> bool:
        """Hand the samples queued so far over now (the writer is about to commit): True when
        there were any. Run on the loop, so the event is set directly."""
        with self._lock:
            if not self._pending:
                return False
            self._notified = True  # the thread need not schedule a wake-up of its own
        self.ready.set()
        return True

    def done_with(self, n: int) -> None:
        """``n`` taken samples are in the queue: give their room back to the thread."""
        with self._lock:
            blocked = self._room <= 0
            self._room += n
        if blocked:
            self.worker.wake()

    def request_stop(self) -> None:
        """No new read starts; a read in flight completes and its sample is delivered."""
        with self._lock:
            if not self._stopping:
                self._stop_at = self._monotonic()
            self._stopping = True
            if self._inflight is None and not self.done:
                self._finish()
        self.worker.wake()

    def watch(self) -> float | None:
        """The hung-driver watchdog, run on the loop: returns how long to wait before the next
        check (None: nothing to watch — no read timeout, or the group is done).

        Until the thread is stuck, the next check is due when the call in flight — or, with
        none, a call starting now — will have run for the whole timeout: no call can be stuck
        any sooner. So a hang is caught as it passes the timeout, not up to a polling period
        later, and a healthy group wakes the loop about once per timeout for it."""
        timeout = self._timeout
        if timeout is None or self.done:
            return None
        stuck = self.worker.stuck_for()
        if stuck <= timeout:
            return timeout - stuck + WATCH_SLACK_S
        now = self.clock.monotonic()
        with self._lock:
            if self._inflight is not None:
                idx, start, skipped, lateness = self._inflight
                self._inflight = None
                self.stats.reading_since = None
                failures = self._failures("timeout", f"no answer within {timeout} s")
                sample = Sample(
                    self.stats.group_id,
                    idx,
                    start - self.schedule.t0,
                    now - start,
                    [None] * self._size,
                )
                self._emit(sample, failures, skipped, lateness)
                if self._stopping:
                    self._finish()
            if self._stopping:
                self._finish()
            while not self.done and self.schedule.due <= now and self._room > 0:
                # A busy sample is taken at ``now``: past the run's end, the ticks still due
                # before it are missed (``_finish``), not recorded after the end.
                if self._ended(self.schedule.due) or self._ended(now):
                    break
                skipped, lateness = self.schedule.begin(now)
                idx = self._next_idx
                self._next_idx += 1
                message = f"{self.worker.name}: a previous call has been running for {stuck:.1f} s"
                sample = Sample(
                    self.stats.group_id, idx, now - self.schedule.t0, 0.0, [None] * self._size
                )
                self._emit(sample, self._failures("busy", message), skipped, lateness)
            return max(0.001, self.schedule.due - now)
