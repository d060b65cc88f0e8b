"""Absolute schedules and the poller task that follows one.

Tick ``k`` of a group is due at ``t0 + k·interval``. Computing each deadline from ``t0`` rather
than from the previous wake-up means sampling never drifts; a tick that starts late is taken at
once, and ticks whose whole slot has passed are skipped and counted — never burst to catch up,
which would hammer an instrument that is already slow.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import anyio

from .clock import Clock
from .detection import ChangeDetector
from .records import GroupStats, MonitorError, Sample
from .sampling import ReadFailure

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
        current = math.floor((now - self.t0) / self.interval_s + _EPS)
        skipped = max(0, current - self.k)
        self.k += skipped
        lateness = max(0.0, now - self.due)
        self.k += 1
        return skipped, lateness


class SampleSink(Protocol):
    async def send(self, item: Sample | MonitorError | Any) -> None: ...


class Reader(Protocol):
    async def read(self) -> tuple[list[Any], list[ReadFailure]]: ...


class Poller:
    """One task per poll group: sleep to the next due tick, read, detect, enqueue.

    Stopping is cooperative: :meth:`stop` only interrupts the *sleep*. A read already under way
    finishes and its sample is enqueued, so every request an instrument answered is recorded.
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
        self._sleep_scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        self._stopping = True
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    async def run(self) -> None:
        schedule, clock, stats = self._schedule, self._clock, self.stats
        t0 = schedule.t0
        while not self._stopping:
            if self._end_at is not None and schedule.due >= self._end_at - _EPS:
                return
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                await clock.sleep_until(schedule.due)
            self._sleep_scope = None
            if self._stopping:
                return
            start = clock.monotonic()
            if self._end_at is not None and start >= self._end_at:
                return
            skipped, lateness = schedule.begin(start)
            values, failures = await self._reader.read()
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
            # Once read, a sample is delivered even if the run is being cancelled around us.
            try:
                with anyio.CancelScope(shield=True):
                    await self._deliver(sample, failures)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the writer is gone (storage failure); the recorder reports it

    async def _deliver(self, sample: Sample, failures: list[ReadFailure]) -> None:
        await self._sink.send(sample)
        if failures:
            self.stats.failed_reads += 1
            for f in failures:
                await self._sink.send(
                    MonitorError(sample.dt_s, f.channel, f.instrument, f.error_type, f.message)
                )
        if self._detector is not None:
            for event in self._detector.feed(sample):
                await self._sink.send(event)
