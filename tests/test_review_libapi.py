"""trajmon embedded in a lab program: two recorders on one instrument, a stop from another
thread, run() called while it records, trio beside it, and what ``trajmon`` exports."""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Numbers

import trajmon
from trajmon import (
    ChannelSpec,
    FakeClock,
    MonitorConfig,
    Recorder,
    RunExistsError,
    connect_readonly,
    list_runs,
)

PAGE = Path(__file__).parents[1] / "docs" / "library.md"


class Probe(Instrument):
    """Remembers the thread of every read: a QCoDeS driver must only ever see one."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.threads: set[int] = set()

        def read(value: float) -> float:
            self.threads.add(threading.get_ident())
            return value

        self.add_parameter("sig", get_cmd=lambda: read(1.25), set_cmd=False, vals=Numbers())
        self.add_parameter("knob", get_cmd=lambda: read(0.5), set_cmd=False, vals=Numbers())


@pytest.fixture
def probe() -> Iterator[Probe]:
    instrument = Probe("probe")
    yield instrument
    instrument.close()


def config(db: Path, name: str, sig: str = "probe.sig", knob: str = "probe.knob") -> MonitorConfig:
    return MonitorConfig(
        run_name=name,
        db=db,
        source="instruments",
        interval_s=0.1,
        channels=[
            ChannelSpec(label="Sig", source=sig, kind="signal"),
            ChannelSpec(label="Knob", source=knob, kind="spec"),
        ],
    )


async def samples(recorder: Recorder, n: int) -> None:
    with anyio.fail_after(5):
        assert await recorder.wait_until(lambda: min(s.samples_read for s in recorder.stats) >= n)


def statuses(db: Path) -> dict[str, str]:
    with closing(connect_readonly(db)) as conn:
        return {r["run_name"]: r["status"] for r in list_runs(conn)}


# -- one instrument, one thread ------------------------------------------------------------------


async def test_two_recorders_on_one_instrument_read_it_on_one_thread(
    db_path: Path, probe: Probe
) -> None:
    """Each recorder started its own thread for the instrument, so two recorders (a fast run
    and a slow one) read a driver that is not thread-safe from two threads at once: on the real
    clock, 647 of ~600 reads per second overlapped. They now share its thread; the one that ends
    first leaves it to the other."""
    clock = FakeClock()
    fast, slow = (
        Recorder(config(db_path, name), {"probe": probe}, clock=clock) for name in ("fast", "slow")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(fast.run)
        tg.start_soon(slow.run)
        await samples(fast, 1)
        await samples(slow, 1)
        fast.request_stop()
        await fast.ended.wait()
        await clock.advance(0.1)
        await samples(slow, 2)  # the shared thread outlives the recorder that ended first
        slow.request_stop()
    assert len(probe.threads) == 1
    assert all(s.failed_reads == 0 for s in slow.stats)
    assert statuses(db_path) == {"fast": "interrupted", "slow": "interrupted"}


async def test_one_instrument_under_two_names_is_read_on_one_thread(
    db_path: Path, probe: Probe
) -> None:
    """A mapping that names one instrument twice ({'a': dmm, 'b': dmm}) got two threads."""
    clock = FakeClock()
    cfg = config(db_path, "twice", sig="a.sig", knob="b.knob")
    recorder = Recorder(cfg, {"a": probe, "b": probe}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await samples(recorder, 1)
        recorder.request_stop()
    assert len(probe.threads) == 1


# -- request_stop from another thread ------------------------------------------------------------


async def test_request_stop_from_another_thread_stops_the_run(db_path: Path, probe: Probe) -> None:
    """A GUI button's callback runs on the GUI's thread. It raised "no running event loop"
    there (a cancel scope is not thread-safe), and the poller's sleep, marked cancelled but
    never woken, kept the run going — even a later cancellation could not stop it."""
    clock = FakeClock()  # nothing advances it: only the stop can end the run
    recorder = Recorder(config(db_path, "gui"), {"probe": probe}, clock=clock)
    raised: list[BaseException] = []

    def button() -> None:
        try:
            recorder.request_stop()
        except BaseException as exc:
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await samples(recorder, 1)
        gui = threading.Thread(target=button)
        gui.start()
        gui.join()
        with anyio.move_on_after(5):
            await recorder.ended.wait()
        stopped = recorder.ended.is_set()
        if not stopped:  # the old code: wake the stuck poller so that the test can end
            await clock.advance(0.1)
    assert raised == []
    assert stopped
    assert statuses(db_path) == {"gui": "interrupted"}


# -- run() is single-use -------------------------------------------------------------------------


async def test_run_called_while_it_records_is_refused_and_leaves_the_run_alone(
    db_path: Path, probe: Probe
) -> None:
    """The second call went through the database to a RunExistsError and, on its way out, set
    ``ended``: the first run kept recording while ``ended`` said it was over and every
    ``wait_until`` returned False."""
    clock = FakeClock()
    recorder = Recorder(config(db_path, "once"), {"probe": probe}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await samples(recorder, 1)
        with pytest.raises(RunExistsError, match="'once' is already used by this Recorder"):
            await recorder.run()
        assert not recorder.ended.is_set()
        await clock.advance(0.1)
        await samples(recorder, 2)
        recorder.request_stop()
    assert statuses(db_path) == {"once": "interrupted"}


async def test_a_resuming_recorder_is_single_use_too(db_path: Path, probe: Probe) -> None:
    """The page says a second run() is a RunExistsError; a resuming Recorder resumed again."""
    first = Recorder(config(db_path, "again"), {"probe": probe}, clock=FakeClock())
    first.request_stop()
    await first.run()
    again = Recorder(config(db_path, "again"), {"probe": probe}, clock=FakeClock(), resume=True)
    again.request_stop()
    await again.run()
    with pytest.raises(RunExistsError):
        await again.run()
    with closing(sqlite3.connect(db_path)) as conn:
        (sessions,) = conn.execute("SELECT count(*) FROM sessions").fetchone()
    assert sessions == 2


# -- trio ------------------------------------------------------------------------------------------


def test_under_trio_wait_until_beside_a_refused_run_returns_false(
    db_path: Path, probe: Probe
) -> None:
    """The page: wait_until returns False if the run never starts. Under trio, run() refused
    without setting ``ended``, so a wait beside it (its refusal caught) waited forever."""
    pytest.importorskip("trio")
    recorder = Recorder(config(db_path, "trio"), {"probe": probe})
    got: list[bool] = []

    async def main() -> None:
        async def guarded() -> None:
            with pytest.raises(RuntimeError, match="not trio"):
                await recorder.run()

        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded)
            with anyio.fail_after(5):
                got.append(await recorder.wait_until(lambda: True))

    anyio.run(main, backend="trio")
    assert got == [False]
    assert not db_path.exists()


# -- what `trajmon` exports ----------------------------------------------------------------------


async def test_a_foreign_database_is_refused_with_an_exception_trajmon_exports(
    db_path: Path, probe: Probe
) -> None:
    """Recorder.run() on another program's SQLite file raised trajmon.schema.SchemaError, which
    the page did not mention and ``trajmon`` did not export: ``except StorageError`` missed it."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE theirs (x)")
        conn.commit()
    recorder = Recorder(config(db_path, "foreign"), {"probe": probe})
    with pytest.raises(trajmon.SchemaError, match="not a trajmon database"):
        await recorder.run()
    assert "`SchemaError`" in PAGE.read_text(encoding="utf-8")


def _trajmon_classes() -> dict[str, type]:
    """Every class defined in the package, by name."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(trajmon.__path__, "trajmon."):
        if info.name.startswith("trajmon.cli") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == info.name:
                found[name] = obj
    return found


def test_every_export_is_on_the_library_page_and_every_type_it_names_is_exported() -> None:
    """The page is the contract: GroupStats, which it names as the type of ``recorder.stats``,
    was not exported, and several exports were on no page at all."""
    page = PAGE.read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", page))
    exported = set(trajmon.__all__)
    assert len(exported) == len(trajmon.__all__)
    assert all(hasattr(trajmon, name) for name in exported)
    assert sorted(exported - quoted) == []
    classes = _trajmon_classes()
    named_types = {n for n in quoted if n in classes and not hasattr(builtins, n)}
    assert sorted(named_types - exported) == []


def test_every_exception_the_page_names_can_be_caught_from_trajmon() -> None:
    page = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"`(\w+Error)`", page)) - set(dir(builtins))
    assert named
    missing = [n for n in sorted(named) if not isinstance(getattr(trajmon, n, None), type)]
    assert missing == []
