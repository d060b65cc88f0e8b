"""trajmon as a library: what a lab programmer does with the public API and real QCoDeS
instruments — cancel the task that records, wait for progress, pass the wrong things."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from qcodes.instrument import Instrument
from qcodes.station import Station
from qcodes.validators import Bool, Ints, Numbers

from trajmon import (
    ChannelSpec,
    ConfigError,
    FakeClock,
    MonitorConfig,
    QueryError,
    Recorder,
    RunExistsError,
    connect_readonly,
    list_actions,
    list_runs,
    resolve_run,
)


class Bench(Instrument):
    """A signal, a settable float knob, and specs of other types, all plain ``get_cmd``s."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.knob_value: Any = 0.5
        self.flag_value: Any = True
        self.count_value: Any = 2**63 - 1
        self.hang = threading.Event()  # set: the signal's next read blocks until released
        self.release = threading.Event()

        def signal() -> float:
            if self.hang.is_set():
                self.hang.clear()
                self.release.wait(10)
            return 1.25

        self.add_parameter("sig", get_cmd=signal, set_cmd=False, vals=Numbers())
        self.add_parameter("knob", get_cmd=lambda: self.knob_value, set_cmd=False, vals=Numbers())
        self.add_parameter("flag", get_cmd=lambda: self.flag_value, set_cmd=False, vals=Bool())
        self.add_parameter("count", get_cmd=lambda: self.count_value, set_cmd=False, vals=Ints())


@pytest.fixture
def bench() -> Iterator[Bench]:
    instrument = Bench("bench")
    yield instrument
    instrument.release.set()
    instrument.close()


def config(db: Path, name: str = "run", **changes: Any) -> MonitorConfig:
    channels = [
        ChannelSpec(label="Sig", source="bench.sig", kind="signal"),
        ChannelSpec(label="Knob", source="bench.knob", kind="spec"),
        ChannelSpec(label="Flag", source="bench.flag", kind="spec"),
        ChannelSpec(label="Count", source="bench.count", kind="spec"),
    ]
    options: dict[str, Any] = {"interval_s": 0.1, "source": "instruments"}
    options.update(changes)
    return MonitorConfig(run_name=name, db=db, channels=channels, **options)


async def ticks(recorder: Recorder, clock: FakeClock, n: int) -> None:
    """Let ``n`` ticks of simulated time pass, each one read by every group."""
    for _ in range(n):
        target = min(s.samples_read for s in recorder.stats) + 1
        await clock.advance(0.1)
        with anyio.fail_after(5):
            await recorder.wait_until(
                lambda t=target: min(s.samples_read for s in recorder.stats) >= t
            )


async def first_samples(recorder: Recorder) -> None:
    with anyio.fail_after(5):
        await recorder.wait_until(lambda: min(s.samples_read for s in recorder.stats) >= 1)


def stored(db: Path, name: str) -> dict[str, Any]:
    with closing(connect_readonly(db)) as conn:
        (run,) = [r for r in list_runs(conn) if r["run_name"] == name]
        return run


# -- cancellation: the library user's Ctrl-C ---------------------------------------------------


@pytest.mark.parametrize("how", ["cancel_scope", "asyncio_task_cancel", "error_beside_it"])
async def test_cancelling_a_recording_commits_what_was_read_and_marks_it_interrupted(
    db_path: Path, bench: Bench, how: str
) -> None:
    """A timeout around ``run()``, a sibling task failing in the same task group, or Ctrl-C
    under ``asyncio.run`` (which cancels the main task) all cancel the recorder. It used to die
    on the spot: samples read but not yet committed were lost without being counted, the run
    stayed ``running`` (later reported ``crashed``) — and the action below was lost with them."""
    clock = FakeClock()
    recorder = Recorder(config(db_path, commit_interval_s=10.0), {"bench": bench}, clock=clock)

    async def until_an_uncommitted_action() -> None:
        await first_samples(recorder)
        # The writer's schedule starts at the clock's time once its connection is ready (a hop
        # to aiosqlite's thread). Time moved before then (a loaded machine) started it late, and
        # its first commit took every sample: nothing was left uncommitted. Both pollers and the
        # writer asleep on the clock: the writer's next commit is 1 s (its heartbeat) away.
        with anyio.fail_after(5):
            await clock.wait_for_sleepers(len(recorder.stats) + 1)
        await ticks(recorder, clock, 2)
        bench.knob_value = 0.75
        await ticks(recorder, clock, 1)
        assert recorder.detector_actions == 1
        assert any(s.samples_committed < s.samples_read for s in recorder.stats)

    if how == "cancel_scope":
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run)
                await until_an_uncommitted_action()
                scope.cancel()
        assert scope.cancelled_caught
    elif how == "asyncio_task_cancel":
        task = asyncio.create_task(recorder.run())
        await until_an_uncommitted_action()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(ExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run)
                await until_an_uncommitted_action()
                raise KeyError("a bug in the user's own task")
        assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert recorder.ended.is_set()
    run = stored(db_path, "run")
    assert run["status"] == "interrupted"
    assert run["lost_samples"] == 0
    assert run["signal_samples"] == recorder.stats[0].samples_read >= 4
    assert run["spec_samples"] == recorder.stats[1].samples_read
    assert run["actions"] == 1


async def test_wait_until_returns_false_when_the_run_ends_before_the_condition_holds(
    db_path: Path, bench: Bench
) -> None:
    """Waiting for an action that never comes used to wait forever once the run had ended."""
    clock = FakeClock()
    recorder = Recorder(config(db_path, duration_s=0.3), {"bench": bench}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await first_samples(recorder)

        async def drive() -> None:
            await ticks(recorder, clock, 2)
            await clock.advance(0.1)

        tg.start_soon(drive)
        with anyio.fail_after(5):
            assert await recorder.wait_until(lambda: recorder.detector_actions >= 1) is False
    assert stored(db_path, "run")["status"] == "completed"
    with anyio.fail_after(5):  # and after the end, at once
        assert await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 3) is True
        assert await recorder.wait_until(lambda: recorder.detector_actions >= 1) is False


async def test_wait_until_returns_false_when_the_run_cannot_start(
    db_path: Path, bench: Bench
) -> None:
    clock = FakeClock()
    first = Recorder(config(db_path, duration_s=0.1), {"bench": bench}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await first_samples(first)
        await clock.advance(0.1)
    again = Recorder(config(db_path, duration_s=0.1), {"bench": bench}, clock=clock)

    async def refused() -> None:
        with pytest.raises(RunExistsError, match="already used"):
            await again.run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(refused)
        with anyio.fail_after(5):
            assert await again.wait_until(lambda: True) is False
    assert not again.started.is_set()


async def test_a_recorder_is_single_use_and_a_stop_before_the_start_is_kept(
    db_path: Path, bench: Bench
) -> None:
    clock = FakeClock()
    recorder = Recorder(config(db_path, name="early"), {"bench": bench}, clock=clock)
    recorder.request_stop()
    with anyio.fail_after(5):
        summary = await recorder.run()
    assert summary.status == "interrupted" and summary.signal_samples == 0
    with pytest.raises(RunExistsError, match="'early' is already used"):
        await recorder.run()
    with closing(connect_readonly(db_path)) as conn:  # Python 3.13 warns of an unclosed one
        assert [r["run_name"] for r in list_runs(conn)] == ["early"]


# -- a hung driver -------------------------------------------------------------------------------


async def test_a_hung_driver_does_not_freeze_the_event_loop_when_the_run_ends(
    db_path: Path, bench: Bench
) -> None:
    """At the end of a run the instrument threads are closed, each waited for up to
    ``read_timeout_s + 1`` s. That join used to block the event loop: the rest of the program
    (a GUI, a second recorder) froze for that long per hung instrument."""
    cfg = config(db_path, interval_s=0.05, duration_s=0.2, read_timeout_s=0.05)
    cfg = cfg.updated(channels=[c for c in cfg.channels if c.kind == "signal"])
    bench.hang.set()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            with anyio.fail_after(10):
                summary = await Recorder(cfg, {"bench": bench}).run()
            tg.cancel_scope.cancel()
    finally:
        bench.release.set()
    assert summary.status == "completed" and summary.groups[0].failed_reads >= 1
    assert max(gaps) < 0.5, f"the event loop was blocked for {max(gaps):.2f} s"


async def test_cancelling_during_a_hang_ends_within_the_read_timeout_plus_one_second(
    db_path: Path, bench: Bench
) -> None:
    """library.md: with a hung driver, cancellation completes after at most
    ``read_timeout_s + 1`` s. The watchdog gives the read up then, but closing the instrument's
    thread used to wait the same allowance all over again: twice the bound (3.0 s here)."""
    cfg = config(db_path, interval_s=0.05, read_timeout_s=0.5)
    cfg = cfg.updated(channels=[c for c in cfg.channels if c.kind == "signal"])
    recorder = Recorder(cfg, {"bench": bench})
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run)
                await first_samples(recorder)
                bench.hang.set()
                while bench.hang.is_set():  # noqa: ASYNC110 - cleared on the driver's thread
                    await anyio.sleep(0.001)
                hung_at = time.monotonic()
                tg.cancel_scope.cancel()
            took = time.monotonic() - hung_at
    finally:
        bench.release.set()
    assert stored(db_path, "run")["status"] == "interrupted"
    assert took < 2.6, f"cancelled {took:.2f} s after the read hung (bound 1.5 s)"


async def test_a_hang_caught_after_the_end_adds_no_sample_past_the_end(
    db_path: Path, bench: Bench
) -> None:
    cfg = config(db_path, interval_s=0.05, duration_s=0.2, read_timeout_s=0.05)
    cfg = cfg.updated(channels=[c for c in cfg.channels if c.kind == "signal"])
    bench.hang.set()
    try:
        with anyio.fail_after(10):
            summary = await Recorder(cfg, {"bench": bench}).run()
    finally:
        bench.release.set()
    with closing(connect_readonly(db_path)) as conn:
        (last,) = conn.execute('SELECT max(dt_s) FROM "run/signals"').fetchone()
    group = summary.groups[0]
    assert last < 0.2
    assert group.samples + group.missed_ticks == 4  # ticks due at 0, 0.05, 0.1, 0.15


# -- values and queries ------------------------------------------------------------------------


async def test_spec_values_of_every_type_round_trip_exactly_through_actions(
    db_path: Path, bench: Bench
) -> None:
    clock = FakeClock()
    recorder = Recorder(config(db_path), {"bench": bench}, clock=clock)
    changes: list[tuple[str, Any, Any]] = [
        ("knob_value", 0.0, -0.0),  # equal as numbers: no action
        ("knob_value", -0.0, math.nan),
        ("knob_value", math.nan, 5e-324),
        ("knob_value", 5e-324, 2**53 + 1),
        ("flag_value", True, False),
        ("count_value", 2**63 - 1, -(2**63)),
    ]
    bench.knob_value = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await first_samples(recorder)
        for attribute, _, new in changes:
            setattr(bench, attribute, new)
            await ticks(recorder, clock, 1)
        recorder.request_stop()
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, None))
        with pytest.raises(QueryError, match="unknown run 'nope'"):
            resolve_run(conn, "nope")
        with pytest.raises(QueryError, match="has no spec 'Sig'"):
            list_actions(conn, resolve_run(conn, "run"), spec="Sig")
    got = [(a["spec_label"], a["old_value"], a["new_value"]) for a in actions]
    assert len(got) == 5
    # -0.0 equals the known 0.0: no action, and the known value stays 0.0 (detection.py)
    assert got[0][0] == "Knob" and math.copysign(1, got[0][1]) == 1 and math.isnan(got[0][2])
    assert math.isnan(got[1][1]) and got[1][2] == 5e-324
    assert got[2] == ("Knob", 5e-324, float(2**53 + 1))  # a float channel stores a float
    assert got[3] == ("Flag", True, False) and type(got[3][2]) is bool
    assert got[4] == ("Count", 2**63 - 1, -(2**63))


async def test_two_recorders_on_one_database_at_once(db_path: Path, bench: Bench) -> None:
    clock = FakeClock()
    recorders = [
        Recorder(config(db_path, name=name, duration_s=0.2), {"bench": bench}, clock=clock)
        for name in ("left", "right")
    ]
    async with anyio.create_task_group() as tg:
        for recorder in recorders:
            tg.start_soon(recorder.run)
        for recorder in recorders:
            await first_samples(recorder)
        await ticks(recorders[0], clock, 1)
        await clock.advance(0.1)
    for name in ("left", "right"):
        run = stored(db_path, name)
        assert run["status"] == "completed" and run["signal_samples"] == 2


# -- user mistakes: one clear exception, before anything is written -----------------------------


def test_a_recorder_without_a_run_name_is_a_config_error(db_path: Path, bench: Bench) -> None:
    cfg = config(db_path).model_copy(update={"run_name": None})
    with pytest.raises(ConfigError, match="run_name is required"):
        Recorder(cfg, {"bench": bench})


def test_instruments_must_be_a_mapping_by_name(db_path: Path, bench: Bench) -> None:
    """A list of instruments used to fail deep inside with ``KeyError: 0``."""
    with pytest.raises(TypeError, match=r"instruments must map .* got list"):
        Recorder(config(db_path), [bench])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown instrument 'bench'"):
        Recorder(config(db_path), {"Bench": bench})
    station = Station(bench)
    with pytest.raises(TypeError, match=r"got Station \(pass station.components\)$"):
        Recorder(config(db_path), station)  # type: ignore[arg-type]
    Recorder(config(db_path), station.components)
    assert not db_path.exists()


def test_a_set_only_parameter_is_named_as_not_gettable(db_path: Path, bench: Bench) -> None:
    bench.add_parameter("gate", set_cmd=None, get_cmd=False)
    cfg = config(db_path)
    cfg = cfg.updated(
        channels=[*cfg.channels, ChannelSpec(label="G", source="bench.gate", kind="spec")]
    )
    with pytest.raises(ConfigError, match=r"^'bench.gate' is not gettable \(a set-only"):
        Recorder(cfg, {"bench": bench})
    assert not db_path.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"interval_s": True},
        {"rotate_entries": True},
        {"commit_rows": True},
        {"duration_s": True},
        {"window_before_s": False},
    ],
)
def test_a_boolean_is_not_a_number_in_the_config(db_path: Path, changes: dict[str, Any]) -> None:
    """YAML ``yes``/``true`` where a number belongs was taken as 1 (a 1 s interval, one-row
    segments); tolerances already refused it."""
    with pytest.raises(ValidationError, match="expected a number, got"):
        config(db_path, **changes)


def test_a_boolean_is_not_a_channel_interval() -> None:
    with pytest.raises(ValidationError, match="expected a number, got True"):
        ChannelSpec(label="x", source="a.b", kind="signal", interval_s=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval_s": math.nan}, "interval_s must be a finite number > 0"),
        ({"interval_s": -1}, "interval_s must be a finite number > 0"),
        ({"window_after_s": math.inf}, "window_after_s must be a finite number >= 0"),
        ({"rotate_entries": 2**70}, "rotate_entries must be <= 2"),
        ({"rotate_entries": 0}, "rotate_entries must be >= 1"),
    ],
)
def test_nonsense_numbers_are_refused(db_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(db_path, **changes)


@pytest.mark.parametrize(("first", "second"), [("Temp", "temp"), ("Straße", "STRASSE")])
def test_labels_differing_only_in_case_are_duplicates(first: str, second: str) -> None:
    with pytest.raises(ValidationError, match="duplicate channel label"):
        MonitorConfig(
            run_name="r",
            channels=[
                ChannelSpec(label=first, source="a.b", kind="signal"),
                ChannelSpec(label=second, source="a.c", kind="signal"),
            ],
        )
