"""Absolute schedules and the poller, in simulated time (FakeClock): no real sleeps anywhere.

Intervals are mostly powers of two (0.25 s, 0.125 s) and t0 = 1000.0, so tick times are exact
binary fractions and dt_s can be compared with ``==``; the 0.1 s cases use a 1 ns tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from trajmon.channels import Channel
from trajmon.clock import FakeClock, utc_iso
from trajmon.detection import ChangeDetector
from trajmon.records import ActionEvent, FlaggedSample, GroupStats, MonitorError, Sample
from trajmon.sampling import ReadFailure
from trajmon.scheduling import Poller, Schedule

T0 = 1000.0

# --------------------------------------------------------------------------------------------
# Schedule arithmetic
# --------------------------------------------------------------------------------------------


def test_on_time_ticks_skip_nothing() -> None:
    s = Schedule(T0, 0.25)
    for k in range(8):
        assert s.due == T0 + 0.25 * k
        assert s.begin(s.due) == (0, 0.0)
    assert s.k == 8
    assert s.due == T0 + 2.0


def test_first_tick_is_due_at_t0() -> None:
    assert Schedule(T0, 0.1).due == T0
    assert Schedule(T0, 0.1, first_tick=7).due == T0 + 7 * 0.1


def test_late_within_its_slot_skips_nothing_and_reports_lateness() -> None:
    s = Schedule(T0, 0.25)
    s.begin(T0)
    assert s.begin(T0 + 0.25 + 0.125) == (0, 0.125)  # tick 1, half a slot late
    assert s.due == T0 + 0.5  # the next tick keeps its slot: no drift after a late tick
    assert s.begin(T0 + 0.5 + 0.2490234375) == (0, 0.2490234375)  # at the very end of its slot
    assert s.due == T0 + 0.75


def test_three_and_a_half_intervals_late_skips_three_ticks() -> None:
    s = Schedule(T0, 0.25)
    s.begin(T0)  # tick 0; tick 1 is due at T0 + 0.25
    skipped, lateness = s.begin(T0 + 0.25 + 3.5 * 0.25)
    assert skipped == 3  # ticks 1, 2 and 3 were entirely missed; tick 4 is taken
    assert lateness == 0.125  # how late tick 4 started
    assert s.k == 5
    assert s.due == T0 + 5 * 0.25  # never a burst: the next tick is at its own slot


def test_exactly_on_a_later_slot_boundary() -> None:
    s = Schedule(T0, 0.25)
    s.begin(T0)
    assert s.begin(T0 + 1.0) == (3, 0.0)  # ticks 1-3 missed, tick 4 taken on time
    assert s.due == T0 + 1.25


def test_begin_before_due_is_not_late() -> None:
    s = Schedule(T0, 0.25)
    assert s.begin(T0 - 0.125) == (0, 0.0)
    assert s.due == T0 + 0.25


def test_tiny_float_error_below_a_boundary_is_not_a_missed_tick() -> None:
    """0.1 * 3 is 0.30000000000000004: being 1 ulp short of a slot must not skip a tick."""
    s = Schedule(0.0, 0.1)
    s.begin(0.0)
    s.begin(0.1)
    s.begin(0.2)
    skipped, lateness = s.begin(0.3)  # < t0 + 3 * 0.1 by one ulp
    assert skipped == 0
    assert lateness == 0.0
    assert s.k == 4


def test_no_drift_over_100000_ticks() -> None:
    t0, interval = 12345.678, 0.1
    s = Schedule(t0, interval)
    total_skipped = 0
    max_lateness = 0.0
    for k in range(100_000):
        due = s.due
        assert due == t0 + k * interval  # computed from t0, never accumulated
        skipped, lateness = s.begin(due)
        total_skipped += skipped
        max_lateness = max(max_lateness, lateness)
    assert total_skipped == 0
    assert max_lateness == 0.0
    exact = Fraction(t0) + 100_000 * Fraction(interval)
    assert abs(Fraction(s.due) - exact) < Fraction(1, 10**9)
    accumulated = t0
    for _ in range(100_000):
        accumulated += interval
    assert accumulated != s.due  # the naive schedule would have drifted


@pytest.mark.parametrize(
    ("now", "first_tick"),
    [
        (T0 - 5.0, 0),  # before the run started
        (T0, 0),
        (T0 + 1.0, 4),  # exactly on a tick: that tick is still due
        (T0 + 1.0 + 1e-12, 4),  # float noise on a boundary is not a new slot
        (T0 + 1.0625, 5),  # inside slot 4: the next due tick is 5
        (T0 + 1.25, 5),
    ],
)
def test_resuming_starts_at_the_first_tick_due_at_or_after_now(now: float, first_tick: int) -> None:
    s = Schedule.resuming(T0, 0.25, now)
    assert s.k == first_tick
    assert s.due == T0 + first_tick * 0.25
    assert s.t0 == T0


# --------------------------------------------------------------------------------------------
# Poller helpers
# --------------------------------------------------------------------------------------------

Values = tuple[list[Any], list[ReadFailure]]


class ListSink:
    def __init__(self) -> None:
        self.items: list[Any] = []

    async def send(self, item: Any) -> None:
        self.items.append(item)

    @property
    def samples(self) -> list[Sample]:
        """Every sample sent, whether alone or with its failures and actions."""
        return [i.sample if isinstance(i, FlaggedSample) else i for i in self.items]


class ScriptedReader:
    """Returns ``script(call_index)``; ``jumps`` maps a call index to seconds the read takes."""

    def __init__(
        self,
        clock: FakeClock,
        script: Callable[[int], Values] | None = None,
        jumps: dict[int, float] | None = None,
    ) -> None:
        self.clock = clock
        self.script = script or (lambda i: ([float(i)], []))
        self.jumps = jumps or {}
        self.read_at: list[float] = []

    async def read(self) -> Values:
        index = len(self.read_at)
        self.read_at.append(self.clock.monotonic())
        self.clock.jump(self.jumps.get(index, 0.0))
        return self.script(index)


def make_poller(
    clock: FakeClock,
    reader: Any,
    sink: ListSink,
    interval: float,
    *,
    group_id: int = 1,
    end_at: float | None = None,
    detector: ChangeDetector | None = None,
) -> Poller:
    stats = GroupStats(group_id=group_id, name="signals", interval_s=interval)
    return Poller(
        stats,
        reader,
        sink,
        clock=clock,
        schedule=Schedule(T0, interval),
        end_at=end_at,
        detector=detector,
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (bounded; no wall-clock waiting)."""
    for _ in range(1000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"never happened: {what}")


async def run_for(poller: Poller, clock: FakeClock, seconds: float) -> bool:
    """Run the poller for ``seconds`` of simulated time; returns whether it ended by itself."""
    finished = anyio.Event()

    async def run() -> None:
        await poller.run()
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await until(lambda: clock.sleepers > 0 or finished.is_set(), "poller started")
        await clock.advance(seconds)
        ended_by_itself = finished.is_set()
        poller.stop()
    assert clock.sleepers == 0
    return ended_by_itself


# --------------------------------------------------------------------------------------------
# Poller
# --------------------------------------------------------------------------------------------


async def test_poller_takes_every_tick_on_schedule() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock)
    poller = make_poller(clock, reader, sink, 0.25)
    assert not await run_for(poller, clock, 10.0)
    samples = sink.samples
    assert len(samples) == 41  # ticks at 0, 0.25, ..., 10.0 inclusive
    assert [s.dt_s for s in samples] == [0.25 * k for k in range(41)]
    assert [s.sample_idx for s in samples] == list(range(41))
    assert [s.values for s in samples] == [[float(k)] for k in range(41)]
    assert all(s.group_id == 1 and s.read_s == 0.0 for s in samples)
    assert reader.read_at == [T0 + 0.25 * k for k in range(41)]
    assert sink.items == samples  # nothing but samples
    stats = poller.stats
    assert (stats.samples_read, stats.missed_ticks, stats.failed_reads) == (41, 0, 0)
    assert stats.lateness_max_s == 0.0
    assert stats.last_dt_s == 10.0
    assert stats.last_values == [40.0]


async def test_poller_at_100ms_for_30_seconds() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    poller = make_poller(clock, ScriptedReader(clock), sink, 0.1)
    await run_for(poller, clock, 30.0 + 0.05)
    samples = sink.samples
    assert len(samples) == 301
    assert [s.dt_s for s in samples] == pytest.approx([0.1 * k for k in range(301)], abs=1e-9)
    assert poller.stats.missed_ticks == 0
    assert poller.stats.lateness_max_s < 1e-9


async def test_slow_read_skips_missed_ticks_without_a_burst() -> None:
    """Interval 0.1 s; the read at tick 2 takes 0.35 s and ends at 0.55 s (slot 5)."""
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock, jumps={2: 0.35})
    poller = make_poller(clock, reader, sink, 0.1)
    await run_for(poller, clock, 1.0)
    samples = sink.samples
    # Tick 2's read ends at 0.55: ticks 3 and 4 were entirely missed, tick 5 starts late at
    # once (its actual start, 0.55), then ticks 6.. keep their own slots.
    expected = [0.0, 0.1, 0.2, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert [s.dt_s for s in samples] == pytest.approx(expected, abs=1e-9)
    assert [r - T0 for r in reader.read_at] == pytest.approx(expected, abs=1e-9)
    assert [s.sample_idx for s in samples] == list(range(9))  # no gap in sample_idx
    assert samples[2].read_s == pytest.approx(0.35, abs=1e-9)
    assert samples[3].read_s == 0.0
    stats = poller.stats
    assert stats.missed_ticks == 2
    assert stats.samples_read == 9
    assert stats.lateness_max_s == pytest.approx(0.05, abs=1e-9)
    assert stats.read_s_max == pytest.approx(0.35, abs=1e-9)
    assert stats.read_s_sum == pytest.approx(0.35, abs=1e-9)


async def test_slow_read_exact_binary_times() -> None:
    """Interval 0.25 s; the read at tick 1 takes 3.5 intervals and ends at 1.125 s (slot 4)."""
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock, jumps={1: 0.875})
    poller = make_poller(clock, reader, sink, 0.25)
    await run_for(poller, clock, 2.0)
    assert [s.dt_s for s in sink.samples] == [0.0, 0.25, 1.125, 1.25, 1.5, 1.75, 2.0]
    assert poller.stats.missed_ticks == 2  # ticks 2 and 3
    assert poller.stats.lateness_max_s == 0.125


async def test_stalled_wake_up_takes_one_sample_and_counts_the_rest() -> None:
    """The poller wakes 1 s after tick 1 was due (a stalled loop): one sample, 3 missed ticks."""
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock)
    poller = make_poller(clock, reader, sink, 0.25)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await until(lambda: clock.sleepers == 1, "first sample taken")
        clock.jump(1.0)  # nobody is woken while time passes
        await clock.advance(0.5)
        poller.stop()
    assert [s.dt_s for s in sink.samples] == [0.0, 1.0, 1.25, 1.5]
    assert poller.stats.missed_ticks == 3
    assert poller.stats.lateness_max_s == 0.0  # tick 4 is due at exactly 1.0


async def test_end_at_stops_before_the_tick_due_at_end() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock)
    poller = make_poller(clock, reader, sink, 0.25, end_at=T0 + 1.0)
    assert await run_for(poller, clock, 5.0)  # ended by itself, no stop() needed
    assert [s.dt_s for s in sink.samples] == [0.0, 0.25, 0.5, 0.75]
    assert len(reader.read_at) == 4


async def test_end_at_between_ticks() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    poller = make_poller(clock, ScriptedReader(clock), sink, 0.25, end_at=T0 + 0.625)
    assert await run_for(poller, clock, 5.0)
    assert [s.dt_s for s in sink.samples] == [0.0, 0.25, 0.5]


async def test_end_at_reached_during_a_slow_read_delivers_that_sample_and_ends() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock, jumps={2: 1.0})  # tick 2 at 0.5 s ends at 1.5 s
    poller = make_poller(clock, reader, sink, 0.25, end_at=T0 + 1.0)
    assert await run_for(poller, clock, 5.0)
    assert [s.dt_s for s in sink.samples] == [0.0, 0.25, 0.5]
    assert len(reader.read_at) == 3


async def test_stop_during_sleep_ends_at_once() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock)
    poller = make_poller(clock, reader, sink, 0.25)
    await run_for(poller, clock, 0.625)  # stops while sleeping towards tick 3
    assert [s.dt_s for s in sink.samples] == [0.0, 0.25, 0.5]
    await clock.advance(10.0)
    assert len(reader.read_at) == 3


async def test_stop_during_a_read_still_delivers_that_sample() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    entered, release = anyio.Event(), anyio.Event()
    reads: list[float] = []

    class GatedReader:
        async def read(self) -> Values:
            reads.append(clock.monotonic())
            if len(reads) == 2:
                entered.set()
                await release.wait()
                clock.jump(0.0625)
            return [float(len(reads))], []

    poller = make_poller(clock, GatedReader(), sink, 0.25)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await until(lambda: clock.sleepers == 1, "first sample taken")
        await clock.advance(0.25)
        await until(entered.is_set, "second read under way")
        poller.stop()
        await clock.advance(1.0)  # time passes while the instrument is still answering
        assert len(sink.samples) == 1
        release.set()
    # The task group only exits once run() has returned.
    samples = sink.samples
    assert [(s.dt_s, s.values) for s in samples] == [(0.0, [1.0]), (0.25, [2.0])]
    assert samples[1].read_s == 1.0625
    assert reads == [T0, T0 + 0.25]  # no read after stop()
    assert poller.stats.samples_read == 2


async def test_stop_before_run_reads_nothing() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    reader = ScriptedReader(clock)
    poller = make_poller(clock, reader, sink, 0.25)
    poller.stop()
    await poller.run()
    assert sink.items == []
    assert reader.read_at == []


async def test_failed_reads_go_with_their_sample() -> None:
    clock, sink = FakeClock(start=T0), ListSink()

    def script(i: int) -> Values:
        if i == 2:
            return [1.5, None, None], [
                ReadFailure("Tunnel Current", "stm", "TimeoutError", "no reply in 2 s"),
                ReadFailure("Z Position", "stm", "OSError", "connection reset"),
            ]
        return [1.5, 2.5, 3.5], []

    poller = make_poller(clock, ScriptedReader(clock, script), sink, 0.25)
    await run_for(poller, clock, 0.75)
    items = sink.items
    assert [type(i).__name__ for i in items] == ["Sample", "Sample", "FlaggedSample", "Sample"]
    assert items[2].sample.values == [1.5, None, None]
    assert items[2].sample.dt_s == 0.5
    assert items[2].errors == (
        MonitorError(0.5, "Tunnel Current", "stm", "TimeoutError", "no reply in 2 s"),
        MonitorError(0.5, "Z Position", "stm", "OSError", "connection reset"),
    )
    assert items[2].events == ()
    assert poller.stats.failed_reads >= 1
    assert poller.stats.samples_read == 4


def _spec(label: str, value_type: Any = "float") -> Channel:
    return Channel(label, "spec", f"stm.{label}", "stm", "specs", value_type=value_type)


async def test_spec_poller_sends_action_events_with_their_sample() -> None:
    clock, sink = FakeClock(start=T0), ListSink()
    det = ChangeDetector(
        {2: [(21, _spec("Bias")), (22, _spec("Z Controller Enabled", "bool"))]},
        window_before_s=2.5,
        window_after_s=1.5,
        wall=clock.wall,
        next_action_idx=0,
    )
    script: list[Values] = [
        ([1.0, True], []),
        ([1.0, True], []),
        ([2.0, None], [ReadFailure("Z Controller Enabled", "stm", "RuntimeError", "boom")]),
        ([2.0, False], []),
        ([2.0, False], []),
    ]
    reader = ScriptedReader(clock, lambda i: script[i])
    poller = make_poller(clock, reader, sink, 0.25, group_id=2, detector=det, end_at=T0 + 1.25)
    assert await run_for(poller, clock, 2.0)
    items = sink.items
    assert [type(i).__name__ for i in items] == [
        "Sample",
        "Sample",
        "FlaggedSample",
        "FlaggedSample",
        "Sample",
    ]
    assert all(s.group_id == 2 for s in sink.samples)
    assert [s.sample_idx for s in sink.samples] == [0, 1, 2, 3, 4]
    assert items[2].errors == (
        MonitorError(0.5, "Z Controller Enabled", "stm", "RuntimeError", "boom"),
    )
    assert items[2].events == (
        ActionEvent(
            action_idx=0,
            dt_s=0.5,
            sample_idx=2,
            prev_dt_s=0.25,
            detected_at_utc=utc_iso(1_700_000_000.0 + 0.5),
            spec_label="Bias",
            channel_id=21,
            old_value=1.0,
            new_value=2.0,
            delta=1.0,
            window_start_s=-2.0,
            window_end_s=2.0,
        ),
    )
    assert items[3].errors == ()
    (event,) = items[3].events
    assert (event.action_idx, event.spec_label, event.channel_id) == (1, "Z Controller Enabled", 22)
    assert (event.old_value, event.new_value, event.delta) == (True, False, None)
    assert (event.dt_s, event.sample_idx, event.prev_dt_s) == (0.75, 3, 0.25)
    assert (event.window_start_s, event.window_end_s) == (-1.75, 2.25)


async def test_a_fake_clock_far_from_zero_wakes_every_tick_its_steps_reach() -> None:
    """Thirty advance(0.1) from 1e6 sum to a hair less than the tick 1e6 + 30 * 0.1 that a
    schedule computes: the sleeper slept on and a test waiting for that tick hung."""
    clock = FakeClock(start=1e6)
    schedule = Schedule(clock.monotonic(), 0.1)
    woke: list[float] = []

    async def sleeper() -> None:
        for k in range(1, 31):
            await clock.sleep_until(schedule.t0 + k * 0.1)
            woke.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.lowlevel.checkpoint()
        for _ in range(30):
            await clock.advance(0.1)
        tg.cancel_scope.cancel()  # a sleeper left behind fails the assertion, not the timeout
    assert len(woke) == 30
    assert woke[-1] >= schedule.t0 + 30 * 0.1
