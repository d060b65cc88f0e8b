"""Review of the polling side: drivers raising BaseException, the watchdog's tick accounting,
and the count of ticks missed at a run's end.

The thread-side cases run on the real clock with short intervals and a short read timeout (as
tests/test_threaded.py does); a slow read is simulated by moving an offset clock, not by sleeping.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from test_scheduling import ListSink, ScriptedReader, run_for
from test_threaded import Sink, errors, wait_for

from trajmon.channels import Channel, PollGroup
from trajmon.clock import FakeClock, SystemClock
from trajmon.records import GroupStats
from trajmon.sampling import GroupReader
from trajmon.scheduling import Poller, Schedule
from trajmon.threaded import ThreadedGroup
from trajmon.workers import InstrumentWorker

DRIVER_BASE_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit]


class Param:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def get(self) -> Any:
        return self.fn()


def channel(label: str, instrument: str, fn: Callable[[], Any]) -> Channel:
    return Channel(label, "signal", f"{instrument}.{label}", instrument, "g", parameter=Param(fn))


def raising_on_third_call(exc_type: type[BaseException]) -> Callable[[], float]:
    calls = 0

    def read() -> float:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise exc_type("the driver raised it")
        return 1.0

    return read


def group_poller(g: PollGroup, reader: GroupReader, sink: Any, clock: SystemClock) -> Poller:
    """A poller of group ``g`` as the recorder makes one, its schedule starting now."""
    stats = GroupStats(0, "g", g.interval_s)
    return Poller(
        stats, reader, sink, clock=clock, schedule=Schedule(clock.monotonic(), g.interval_s)
    )


@pytest.fixture
def workers() -> Iterator[dict[str, InstrumentWorker]]:
    made = {name: InstrumentWorker(name) for name in ("i", "j")}
    yield made
    for worker in made.values():
        worker.close()


async def record_until(poller: Poller, enough: Callable[[], bool]) -> None:
    """Run ``poller`` until ``enough()``, then stop it; bounded, so a hang fails the test."""
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_for(enough)
            poller.stop()


@pytest.mark.parametrize("exc_type", DRIVER_BASE_EXCEPTIONS)
async def test_a_driver_base_exception_on_the_instrument_thread_is_a_failed_read(
    workers: dict[str, InstrumentWorker], exc_type: type[BaseException]
) -> None:
    """A single-instrument group (its schedule on the instrument's thread): the exception
    escaped ``tick``, ended the thread with the read in flight, and the poller waited forever —
    a recording deaf even to its stop and its duration."""
    g = PollGroup("g", "signal", 0.005, (channel("a", "i", raising_on_third_call(exc_type)),))
    reader = GroupReader(g, {"i": object()}, workers, read_timeout_s=5.0)
    assert reader.thread_plan() is not None  # the thread-scheduled path
    clock, sink = SystemClock(), Sink()
    poller = group_poller(g, reader, sink, clock)
    await record_until(poller, lambda: poller.stats.samples_read >= 6)
    samples = sink.samples()
    assert [list(s.values) for s in samples[:4]] == [[1.0], [1.0], [None], [1.0]]
    assert [(e.channel, e.error_type) for e in errors(sink)] == [("a", exc_type.__name__)]
    assert poller.stats.failed_reads == 1
    assert poller.stats.samples_read == len(samples)


@pytest.mark.parametrize("exc_type", DRIVER_BASE_EXCEPTIONS)
async def test_a_driver_base_exception_in_a_multi_instrument_group_is_a_failed_read(
    workers: dict[str, InstrumentWorker], exc_type: type[BaseException]
) -> None:
    """A group over two instruments (read from the loop): the exception came back through the
    worker's future and out of the poller — KeyboardInterrupt and SystemExit then end asyncio's
    loop itself, with the run's row never finished and the queue never drained."""
    g = PollGroup(
        "g",
        "signal",
        0.005,
        (channel("a", "i", raising_on_third_call(exc_type)), channel("b", "j", lambda: 2.0)),
    )
    reader = GroupReader(g, {"i": object(), "j": object()}, workers, read_timeout_s=5.0)
    assert reader.thread_plan() is None  # the loop-driven path
    clock, sink = SystemClock(), Sink()
    poller = group_poller(g, reader, sink, clock)
    await record_until(poller, lambda: poller.stats.samples_read >= 6)
    samples = sink.samples()
    good = [1.0, 2.0]
    assert [list(s.values) for s in samples[:4]] == [good, good, [None, 2.0], good]
    assert [(e.channel, e.error_type) for e in errors(sink)] == [("a", exc_type.__name__)]
    assert poller.stats.failed_reads == 1


async def test_a_parameter_raising_system_exit_fails_only_its_channel(
    workers: dict[str, InstrumentWorker],
) -> None:
    """Parameters read one by one (no ``get_many``): the others of the same hop keep values."""

    def fatal() -> float:
        raise SystemExit("driver gave up")

    g = PollGroup("g", "signal", 0.005, (channel("a", "i", lambda: 1.0), channel("b", "i", fatal)))
    reader = GroupReader(g, {"i": object()}, workers, read_timeout_s=5.0)
    clock, sink = SystemClock(), Sink()
    poller = group_poller(g, reader, sink, clock)
    await record_until(poller, lambda: poller.stats.samples_read >= 3)
    samples = sink.samples()
    assert all(list(s.values) == [1.0, None] for s in samples)
    assert {(e.channel, e.error_type) for e in errors(sink)} == {("b", "SystemExit")}


class OffsetClock(SystemClock):
    """The real clock plus an offset a driver can move: a read that "takes" that long."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def block_until(self, deadline: float) -> None:
        super().block_until(deadline - self.offset)

    async def sleep_until(self, deadline: float) -> None:
        await super().sleep_until(deadline - self.offset)


async def test_a_timed_out_read_keeps_the_ticks_its_tick_skipped() -> None:
    """The read after a slow one starts slots late and skips the ticks in between; when that
    read then hangs, the watchdog records it as timed out, and those skipped ticks were lost
    (the thread, which had counted them, drops its late answer): samples read plus ticks
    missed fell short of the ticks due."""
    clock = OffsetClock()
    worker = InstrumentWorker("i", clock=clock.monotonic)
    release = threading.Event()
    calls = 0
    interval = 0.02

    def read() -> float:
        nonlocal calls
        calls += 1
        if calls == 3:
            clock.offset += 3.5 * interval  # a slow read: the next one skips ticks
        elif calls == 4:
            release.wait(10)  # hung past the read timeout until the test lets it go
        return 1.0

    g = PollGroup("g", "signal", interval, (channel("a", "i", read),))
    reader = GroupReader(g, {"i": object()}, {"i": worker}, read_timeout_s=0.2)
    schedule = Schedule(clock.monotonic(), interval)
    sink = Sink()
    poller = Poller(GroupStats(0, "g", interval), reader, sink, clock=clock, schedule=schedule)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(poller.run)
                await wait_for(lambda: any(e.error_type == "timeout" for e in errors(sink)))
                release.set()
                await wait_for(lambda: calls > 8)
                poller.stop()
    finally:
        release.set()
        worker.close()
    stats = poller.stats
    assert stats.missed_ticks >= 2  # the slow read's skipped ticks are there at all
    # Every tick before the stop was either read or counted missed (``schedule.k`` is the
    # first tick after the stop once the poller has ended).
    assert stats.samples_read + stats.missed_ticks == schedule.k
    assert stats.samples_read == len(sink.samples())


# --------------------------------------------------------------------------------------------
# Ticks missed at the end of a run
# --------------------------------------------------------------------------------------------


def poller_ticks_before(t0: float, interval: float, end_at: float) -> int:
    """How many ticks the pollers take before ``end_at``: they stop at ``due >= end_at - 1e-9``."""
    k = math.ceil((end_at - t0) / interval) + 2
    while t0 + k * interval >= end_at - 1e-9:
        k -= 1
    return k + 1


def test_end_counts_the_ticks_the_poller_would_have_taken() -> None:
    """A duration that is a whole number of intervals puts a tick due at the very end; on a
    machine up for days (monotonic t0 ~ 1e5-1e6 s) the quotient's rounding made ``end`` count
    it as missed although no poller would take it: one phantom missed tick."""
    rng = random.Random(7)
    wrong = []
    for _ in range(4000):
        t0 = rng.uniform(1e3, 2e6)
        interval = rng.choice([1e-3, 0.02, 0.1, 1 / 3, 0.25])
        end_at = t0 + rng.choice([1.0, 10.0, 60.0, 600.0, 3600.0])
        expected = poller_ticks_before(t0, interval, end_at)
        got = Schedule(t0, interval).end(end_at + 1.0, math.inf, end_at)
        if got != expected:
            wrong.append((t0, interval, end_at - t0, got, expected))
    assert wrong == []


async def test_a_run_held_back_at_its_end_counts_each_tick_once() -> None:
    """t0 = 524279.408 s (six days of uptime), 1 ms for 10 s: 10 000 ticks. The first read
    outlasts the run; samples read plus ticks missed must still be 10 000, not 10 001."""
    t0, interval, duration = 524279.408, 1e-3, 10.0
    end_at = t0 + duration
    assert poller_ticks_before(t0, interval, end_at) == 10_000
    clock, sink = FakeClock(start=t0), ListSink()
    poller = Poller(
        GroupStats(1, "g", interval),
        ScriptedReader(clock, jumps={0: duration + 0.5}),
        sink,
        clock=clock,
        schedule=Schedule(t0, interval),
        end_at=end_at,
    )
    assert await run_for(poller, clock, duration + 1.0)
    assert poller.stats.samples_read == 1
    assert poller.stats.samples_read + poller.stats.missed_ticks == 10_000


@pytest.mark.parametrize("thread_schedules", [True, False])
async def test_a_group_stopped_before_it_began_counts_its_due_ticks_missed(
    workers: dict[str, InstrumentWorker], thread_schedules: bool
) -> None:
    """A stop that comes before the pollers start (Ctrl-C while the run is being created):
    the loop-driven path counted the ticks already due as missed, the thread-scheduled path
    returned without counting them, so the two paths reported different figures."""
    clock = SystemClock()
    clock.thread_schedules = thread_schedules
    g = PollGroup("g", "signal", 0.25, (channel("a", "i", lambda: 1.0),))
    schedule = Schedule(clock.monotonic() - 1.0, 0.25)  # ticks 0-3 are already due
    poller = Poller(
        GroupStats(0, "g", 0.25),
        GroupReader(g, {"i": object()}, workers, read_timeout_s=5.0),
        Sink(),
        clock=clock,
        schedule=schedule,
    )
    poller.stop()
    with anyio.fail_after(10):
        await poller.run()
    assert poller.stats.samples_read == 0
    assert poller.stats.missed_ticks >= 4
    assert poller.stats.missed_ticks == schedule.k


async def test_a_thread_scheduled_group_ends_at_the_runs_end_not_at_its_next_tick(
    workers: dict[str, InstrumentWorker],
) -> None:
    """Interval 30 s, the run ends 0.2 s in: the instrument's thread slept until the next tick
    (30 s) before finding it past the end, so the run lasted an interval longer than its
    duration — a day with ``interval_s = 86400``."""
    clock = SystemClock()
    g = PollGroup("g", "signal", 30.0, (channel("a", "i", lambda: 1.0),))
    reader = GroupReader(g, {"i": object()}, workers, read_timeout_s=5.0)
    assert reader.thread_plan() is not None
    now = clock.monotonic()
    schedule = Schedule(now, g.interval_s)
    sink = Sink()
    poller = Poller(
        GroupStats(0, "g", g.interval_s),
        reader,
        sink,
        clock=clock,
        schedule=schedule,
        end_at=now + 0.2,
    )
    with anyio.fail_after(10):  # far less than the 30 s the old schedule waited
        await poller.run()
    assert clock.monotonic() < now + 10
    assert [list(s.values) for s in sink.samples()] == [[1.0]]
    assert (poller.stats.samples_read, poller.stats.missed_ticks) == (1, 0)


class _TiedGroup(ThreadedGroup):
    """A scheduled group as the instrument's thread sees it, always due at the same past
    instant as its siblings (all late behind a slow read), until it has ticked ``ticks`` times
    (and not before ``go``: all are attached first)."""

    def __init__(self, name: str, order: list[str], ticks: int, go: threading.Event) -> None:
        self.name, self.order, self.left, self.go = name, order, ticks, go
        self.ticked = 0
        self.clock = SystemClock()
        self.finished = threading.Event()

    def due(self) -> float | None:
        return 0.0 if self.left > 0 and self.go.is_set() else None

    def tick(self) -> None:
        self.order.append(self.name)
        self.left -= 1
        if self.left == 0:
            self.finished.set()

    def fail(self, exc: Exception) -> None:
        self.order.append(f"failed: {exc!r}")


def test_groups_due_together_on_one_instrument_take_turns() -> None:
    """The first attached group always won a tie: behind a slow signal read the specs, due at
    the same instant, were read every other time (2 samples where 4 were due)."""
    worker = InstrumentWorker("tied")
    order: list[str] = []
    go = threading.Event()
    groups = [_TiedGroup(name, order, 4, go) for name in ("signals", "specs", "more")]
    try:
        for group in groups:
            worker.attach(group)
        go.set()
        worker.wake()
        assert all(group.finished.wait(10) for group in groups)
    finally:
        worker.close()
    assert order == ["signals", "specs", "more"] * 4
