"""Promises 4 and 6: instrument faults never end a run, and a stalled writer costs missed
ticks, not memory."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from simulators.nanonis_server import NanonisServer
from simulators.qcodes_sim import SimulatedSTM
from simulators.stm_model import STMModel
from trajmon import ChannelSpec, MonitorConfig, Recorder, threaded
from trajmon import writer as writer_module
from trajmon.drivers.nanonis import NanonisSTM


def channels(name: str) -> list[ChannelSpec]:
    return [
        ChannelSpec(label=f"{name} Current", source=f"{name}.current", kind="signal", group=name),
        ChannelSpec(label=f"{name} Z", source=f"{name}.z_position", kind="signal", group=name),
        ChannelSpec(label=f"{name} Bias", source=f"{name}.bias", kind="spec", group=f"{name}_spec"),
    ]


@asynccontextmanager
async def two_controllers() -> AsyncIterator[tuple[dict[str, Any], NanonisServer]]:
    async with AsyncExitStack() as stack:
        instruments: dict[str, Any] = {}
        servers = {}
        for name in ("good", "bad"):
            server = await stack.enter_async_context(NanonisServer(STMModel(seed=4), port=0))
            servers[name] = server
            driver = await anyio.to_thread.run_sync(
                lambda s=server, n=name: NanonisSTM(
                    n, address=s.host, port=s.port, timeout=0.3, reconnect_backoff=(0.05, 0.4)
                )
            )
            stack.push_async_callback(anyio.to_thread.run_sync, driver.close)
            instruments[name] = driver
        yield instruments, servers["bad"]


async def test_faulty_instrument_never_ends_the_run_nor_delays_the_good_one(
    db_path: Path,
) -> None:
    config = MonitorConfig(
        run_name="faults",
        db=db_path,
        interval_s=0.1,
        read_timeout_s=0.3,
        duration_s=10.0,
        channels=channels("good") + channels("bad"),
    )
    async with two_controllers() as (instruments, bad):
        recorder = Recorder(config, instruments)
        async with anyio.create_task_group() as tg:
            result: dict[str, Any] = {}

            async def record() -> None:
                result["summary"] = await recorder.run()

            tg.start_soon(record)
            bad_stats = lambda: recorder.stats[1]  # noqa: E731 - groups: good, bad, specs...
            await recorder.wait_until(lambda: bad_stats().samples_read >= 5)
            bad.faults.drop_next(1, "Signals.ValsGet")
            bad.faults.error_next(2, "Signals.ValsGet", "overload")
            await recorder.wait_until(lambda: bad_stats().failed_reads >= 2)
            bad.faults.hang_next(1, 2.0, "Signals.ValsGet")  # past the 0.3 s read timeout
            await recorder.wait_until(lambda: bad_stats().failed_reads >= 4)
            await bad.stop()  # the controller is gone for 4 s (10 reconnect backoffs), then back
            await anyio.sleep(4.0)  # the outage itself: real time on purpose
            await bad.start()
            reads = bad_stats().samples_read
            await recorder.wait_until(lambda: bad_stats().samples_read >= reads + 5)
        summary = result["summary"]
        reconnects = instruments["bad"].reconnect_count
    assert summary.status == "completed"
    assert reconnects >= 2
    with closing(sqlite3.connect(db_path)) as conn:
        good = conn.execute('SELECT count(*), count("good Current") FROM "faults/good"').fetchone()
        bad_rows = conn.execute(
            'SELECT count(*), count("bad Current") FROM "faults/bad"'
        ).fetchone()
        last_bad = conn.execute(
            'SELECT "bad Current" FROM "faults/bad" ORDER BY sample_idx DESC LIMIT 1'
        ).fetchone()[0]
        missed = dict(conn.execute("SELECT name, missed_ticks FROM poll_groups").fetchall())
        errors = conn.execute(
            "SELECT DISTINCT instrument, channel, error_type FROM monitor_errors"
        ).fetchall()
        dts = conn.execute("SELECT count(*) FROM monitor_errors WHERE dt_s IS NULL").fetchone()
    assert good[0] == good[1] >= 90, "the good controller has every value"
    assert missed["good"] == 0, "a hung or absent controller never delays another group"
    assert bad_rows[1] < bad_rows[0], "failed reads are NULL gaps in the bad group"
    assert last_bad is not None, "reads resume after the outage"
    kinds = {e[2] for e in errors}
    assert {"ConnectionError", "NanonisError", "TimeoutError"} <= kinds, kinds
    assert {e[0] for e in errors} == {"bad"}
    assert {e[1] for e in errors} >= {"bad Current", "bad Z"}
    assert dts == (0,)


async def test_stalled_writer_costs_missed_ticks_not_memory(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = writer_module.Writer._write
    depth: list[int] = []

    async def slow_write(self: writer_module.Writer, *args: Any) -> None:
        await anyio.sleep(0.2)  # the injected slow disk
        await real_write(self, *args)

    monkeypatch.setattr(writer_module.Writer, "_write", slow_write)
    # Less room between each instrument thread and the queue than its 1 024 samples: the same
    # backpressure, and the end drains ~150 samples at the slow disk's 100/s, not ~2 000.
    monkeypatch.setattr(threaded, "BATCH_ROOM", 64)
    monkeypatch.setattr(threaded, "LOW_ROOM", 32)
    stm = SimulatedSTM("stm", seed=5)
    config = MonitorConfig(
        run_name="slow", db=db_path, interval_s=0.002, queue_size=40, commit_rows=20
    )
    recorder = Recorder(config, {"stm": stm})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(60):
                await recorder.wait_until(
                    lambda: (
                        depth.append(recorder.queue_depth) or recorder.stats[0].missed_ticks >= 100
                    )
                )
            recorder.request_stop()
    finally:
        stm.close()
    assert max(depth) <= 40, "the queue is bounded"
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT samples, samples_read, missed_ticks FROM poll_groups"
        ).fetchall()
        lost = conn.execute("SELECT lost_samples FROM runs").fetchone()[0]
    for samples, read, _missed in rows:
        assert samples == read, "everything sampled was committed in the end"
    assert sum(r[2] for r in rows) >= 100, "what was not sampled is counted"
    assert lost == 0
