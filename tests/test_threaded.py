"""Schedules on the instrument's thread (``trajmon.threaded``): the loop-driven poller's promises.

These run on the real clock with short intervals, so they assert orders, counts and invariants —
never how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from trajmon.channels import Channel, PollGroup
from trajmon.clock import SystemClock
from trajmon.detection import ChangeDetector
from trajmon.records import FlaggedSample, GroupStats, MonitorError, Sample, SampleBatch
from trajmon.sampling import GroupReader
from trajmon.scheduling import Poller, Schedule
from trajmon.threaded import BATCH_ROOM, LOW_ROOM, WATCH_SLACK_S, ThreadedGroup
from trajmon.workers import InstrumentWorker


class Param:
    """A parameter whose ``get`` runs ``fn``; records overlapping calls (drivers are not
    thread-safe, so two reads of one instrument must never run at once)."""

    inside = 0
    overlaps = 0

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def get(self) -> Any:
        Param.inside += 1
        if Param.inside > 1:
            Param.overlaps += 1
        try:
            return self.fn()
        finally:
            Param.inside -= 1


class Sink:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.full = False
        self.opened = anyio.Event()

    def send_nowait(self, item: Any) -> bool:
        if self.full:
            return False
        self.items.append(item)
        return True

    async def send(self, item: Any) -> None:
        while self.full:
            await self.opened.wait()
        self.items.append(item)

    def samples(self, group_id: int | None = None) -> list[Sample]:
        """Every sample sent, in order, whether alone or in a batch."""
        flat: list[Sample] = []
        for i in self.items:
            if isinstance(i, SampleBatch):
                flat.extend(i.samples)
            else:
                flat.append(i.sample if isinstance(i, FlaggedSample) else i)
        return [
            s
            for s in flat
            if isinstance(s, Sample) and (group_id is None or s.group_id == group_id)
        ]


class PullingSink(Sink):
    """A sink whose writer pulls batches before each commit (like ``QueueSink``): the test
    plays the writer and calls the pullers the pollers registered."""

    def __init__(self) -> None:
        super().__init__()
        self.pullers: list[Callable[[], bool]] = []

    def add_puller(self, pull: Callable[[], bool]) -> Callable[[], None]:
        self.pullers.append(pull)
        return lambda: self.pullers.remove(pull)


def group(name: str, fn: Callable[[], Any], interval: float, kind: str = "signal") -> PollGroup:
    channel = Channel(name, kind, f"i.{name}", "i", name, "", "any", parameter=Param(fn))
    return PollGroup(name, kind, interval, (channel,))


def poller(
    g: PollGroup,
    gid: int,
    worker: InstrumentWorker,
    sink: Sink,
    clock: SystemClock,
    *,
    timeout: float | None = 5.0,
    end_at: float | None = None,
    detector: ChangeDetector | None = None,
) -> Poller:
    reader = GroupReader(g, {"i": object()}, {"i": worker}, read_timeout_s=timeout)
    return Poller(
        GroupStats(gid, g.name, g.interval_s),
        reader,
        sink,
        clock=clock,
        schedule=Schedule(clock.monotonic(), g.interval_s),
        end_at=end_at,
        detector=detector,
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (it changes on the worker thread, which cannot set an anyio.Event)."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - the thread offers nothing to wait on
            await anyio.sleep(0.005)


@pytest.fixture
def worker() -> Any:
    w = InstrumentWorker("i")
    yield w
    w.close()


async def test_two_groups_share_the_thread_in_order_and_never_overlap(
    worker: InstrumentWorker,
) -> None:
    clock, sink = SystemClock(), Sink()
    Param.overlaps = 0
    fast = poller(group("a", lambda: 1.0, 0.002), 0, worker, sink, clock)
    slow = poller(group("b", lambda: 2.0, 0.005, "spec"), 1, worker, sink, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(fast.run)
        tg.start_soon(slow.run)
        await wait_for(lambda: len(sink.samples(1)) >= 10 and len(sink.samples(0)) >= 20)
        fast.stop()
        slow.stop()
    assert Param.overlaps == 0
    for gid, p in ((0, fast), (1, slow)):
        samples = sink.samples(gid)
        assert [s.sample_idx for s in samples] == list(range(len(samples)))
        assert all(a.dt_s < b.dt_s for a, b in itertools.pairwise(samples))
        assert p.stats.samples_read == len(samples)
        assert all(list(s.values) == [1.0 + gid] for s in samples)


async def test_stop_during_a_read_delivers_that_sample(worker: InstrumentWorker) -> None:
    clock, sink = SystemClock(), Sink()
    entered, release = threading.Event(), threading.Event()

    def read() -> float:
        entered.set()
        release.wait(10)
        return 7.0

    p = poller(group("a", read, 0.01), 0, worker, sink, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.to_thread.run_sync(entered.wait, 10)
        p.stop()
        assert sink.samples() == []
        release.set()
    samples = sink.samples()
    assert [list(s.values) for s in samples] == [[7.0]]
    assert p.stats.samples_read == 1


async def test_hung_read_is_a_timeout_then_busy_samples_and_reads_resume(
    worker: InstrumentWorker,
) -> None:
    clock, sink = SystemClock(), Sink()
    calls = 0
    release = threading.Event()

    def read() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            release.wait(10)
            return "late"
        return "ok"

    p = poller(group("a", read, 0.02), 0, worker, sink, clock, timeout=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: any(e.error_type == "busy" for e in errors(sink)))
        release.set()
        await wait_for(lambda: list(sink.samples()[-1].values) == ["ok"] and calls > 5)
        p.stop()
    samples = sink.samples()
    assert [s.sample_idx for s in samples] == list(range(len(samples)))
    assert "late" not in [v for s in samples for v in s.values], "the late answer is dropped"
    kinds = [e.error_type for e in errors(sink)]
    assert kinds[0] == "timeout" and "busy" in kinds
    assert list(samples[2].values) == [None], "the hung read is the third sample, a NULL"
    assert p.stats.failed_reads == len(kinds)


class StuckFor:
    """Stands in for the worker: how long its current call has been running, as set."""

    name = "i"

    def __init__(self) -> None:
        self.stuck = 0.0

    def stuck_for(self) -> float:
        return self.stuck


def watched(worker: StuckFor, timeout: float | None) -> ThreadedGroup:
    clock = SystemClock()
    return ThreadedGroup(
        GroupStats(0, "a", 0.01),
        clock=clock,
        schedule=Schedule(clock.monotonic(), 0.01),
        next_sample_idx=0,
        end_at=None,
        read=lambda: 1.0,
        parse=lambda results, error: ([results], ()),
        failures=lambda kind, message: [],
        size=1,
        worker=worker,  # type: ignore[arg-type]
        loop=asyncio.get_running_loop(),
        timeout_s=timeout,
    )


async def test_the_watchdog_checks_when_a_call_could_first_pass_the_timeout() -> None:
    worker = StuckFor()
    assert watched(worker, None).watch() is None, "no read timeout: nothing to watch"
    g = watched(worker, 2.0)
    assert g.watch() == pytest.approx(2.0 + WATCH_SLACK_S), "idle: a call starting now"
    worker.stuck = 1.5
    assert g.watch() == pytest.approx(0.5 + WATCH_SLACK_S), "in flight: when it passes 2 s"
    worker.stuck = 2.0
    assert g.watch() == pytest.approx(WATCH_SLACK_S), "exactly at the timeout: not yet stuck"


def errors(sink: Sink) -> list[MonitorError]:
    return [e for i in sink.items if isinstance(i, FlaggedSample) for e in i.errors]


class CountingRead:
    """A read of 1.0 that counts its calls (made on the instrument thread)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> float:
        self.count += 1
        return 1.0


async def test_a_full_queue_holds_the_thread_back_and_costs_missed_ticks(
    worker: InstrumentWorker,
) -> None:
    clock, sink = SystemClock(), Sink()
    sink.full = True
    read = CountingRead()

    p = poller(group("a", read, 0.001), 0, worker, sink, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: read.count >= BATCH_ROOM)
        await anyio.sleep(0.2)  # 200 ticks pass while the queue is full
        assert read.count <= BATCH_ROOM + 1, "no reads beyond the room while the queue is full"
        sink.full = False
        sink.opened.set()
        await wait_for(lambda: len(sink.samples()) > BATCH_ROOM + 5)
        p.stop()
    assert p.stats.missed_ticks > 0
    assert len(sink.samples()) == p.stats.samples_read


async def test_a_stop_while_the_queue_holds_the_thread_back_counts_the_ticks_it_missed(
    worker: InstrumentWorker,
) -> None:
    """The group is blocked (no room) when the stop comes: the ticks due since its last read
    were never taken, and only the stop's end of the schedule can count them."""
    clock, sink = SystemClock(), Sink()
    sink.full = True
    read = CountingRead()

    interval = 0.001
    p = poller(group("a", read, interval), 0, worker, sink, clock)
    t0 = p._schedule.t0
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: read.count >= BATCH_ROOM)
        before = clock.monotonic()
        p.stop()
        after = clock.monotonic()
        sink.full = False
        sink.opened.set()
    taken_or_missed = p.stats.samples_read + p.stats.missed_ticks
    assert math.ceil((before - t0) / interval - 1e-9) <= taken_or_missed
    assert taken_or_missed <= math.ceil((after - t0) / interval - 1e-9)
    assert len(sink.samples()) == p.stats.samples_read


async def test_end_at_ends_the_group_on_the_thread(worker: InstrumentWorker) -> None:
    clock, sink = SystemClock(), Sink()
    start = clock.monotonic()
    p = poller(group("a", lambda: 1.0, 0.01), 0, worker, sink, clock, end_at=start + 0.1)
    with anyio.fail_after(10):
        await p.run()
    samples = sink.samples()
    assert samples and all(s.dt_s < 0.1 for s in samples)
    assert [s.sample_idx for s in samples] == list(range(len(samples)))


async def test_multi_instrument_groups_keep_the_loop_path() -> None:
    channels = tuple(
        Channel(n, "signal", f"{n}.x", n, "g", "", "any", parameter=Param(lambda: 1.0))
        for n in ("i", "j")
    )
    workers = {n: InstrumentWorker(n) for n in ("i", "j")}
    try:
        instruments = {"i": object(), "j": object()}
        reader = GroupReader(PollGroup("g", "signal", 0.01, channels), instruments, workers, 5.0)
        assert reader.thread_plan() is None
    finally:
        for w in workers.values():
            w.close()


async def test_a_failing_tick_ends_its_group_not_the_instrument_thread(
    worker: InstrumentWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trajmon.threaded import ThreadedGroup

    clock, sink = SystemClock(), Sink()

    def broken(self: ThreadedGroup, *args: Any) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(ThreadedGroup, "_emit", broken)
    p = poller(group("a", lambda: 1.0, 0.01), 0, worker, sink, clock)
    with anyio.fail_after(10), pytest.raises(ZeroDivisionError):
        await p.run()
    assert await worker.call(lambda: 42, timeout=5.0) == 42, "the thread still serves calls"


async def test_a_signal_groups_batch_waits_on_the_thread_for_the_writers_pull(
    worker: InstrumentWorker,
) -> None:
    clock, sink = SystemClock(), PullingSink()
    # 5 ms ticks: 20 samples are past FLUSH_S (50 ms) and far from a half-used room (640 ms)
    # or the 1 s fallback, so nothing but the pull can hand them over.
    p = poller(group("s", lambda: 1.0, 0.005), 0, worker, sink, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: len(sink.pullers) == 1)
        await wait_for(lambda: p.stats.samples_read >= 20)
        assert sink.samples() == [], "no hand-over on a timer: the loop was not woken"
        assert sink.pullers[0]() is True
        await wait_for(lambda: len(sink.samples()) >= 20)
        read = p.stats.samples_read
        p.stop()
    assert sink.pullers == [], "the puller is removed when the group ends"
    samples = sink.samples()
    assert [s.sample_idx for s in samples] == list(range(len(samples))) and len(samples) >= read


async def test_a_group_with_change_detection_hands_over_on_its_own(
    worker: InstrumentWorker,
) -> None:
    clock, sink = SystemClock(), PullingSink()
    g = group("p", lambda: 2.0, 0.002, "spec")
    detector = ChangeDetector(
        {0: [(0, g.channels[0])]}, window_before_s=1.0, window_after_s=1.0, wall=clock.wall
    )
    p = poller(g, 0, worker, sink, clock, detector=detector)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: len(sink.samples()) >= 10)  # nobody pulls: FLUSH_S hand-overs
        assert sink.pullers == [], "detection must see spec samples without waiting for a commit"
        p.stop()


async def test_half_the_room_used_hands_over_without_a_pull(worker: InstrumentWorker) -> None:
    """Nobody pulls (a stalled commit): the thread hands over when half its room is used, and
    keeps reading into the other half meanwhile, instead of stopping at a full room."""
    clock, sink = SystemClock(), PullingSink()
    p = poller(group("s", lambda: 1.0, 0.001), 0, worker, sink, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await wait_for(lambda: len(sink.items) >= 1)
        p.stop()
    first = sink.items[0]
    assert isinstance(first, SampleBatch)
    assert BATCH_ROOM - LOW_ROOM <= len(first.samples) < BATCH_ROOM, "before the room ran out"
