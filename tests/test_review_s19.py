"""Faults found in the nineteenth review session; each test failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from trajmon import FakeClock


async def test_a_task_already_due_runs_at_its_time_before_the_clock_jumps() -> None:
    """CI failed once on test_review_livehang: a poll group whose next tick was due at the
    current time had only a checkpoint to pass, but ``advance(3.0)`` moved the clock before the
    group ran, so its read began 3 s late and the live view showed no read in flight."""
    clock = FakeClock()
    seen: list[float] = []

    async def tick() -> None:
        await clock.sleep_until(clock.monotonic())  # due now: only a checkpoint
        seen.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await clock.advance(3.0)
    assert seen == [1000.0]
    assert clock.monotonic() == 1003.0


def test_a_reply_that_does_not_decode_names_its_command() -> None:
    """A malformed reply said only "body truncated: need 8 bytes, have 6": in the run's error
    rows, beside a channel read through several commands, nothing said which reply it was."""
    import struct

    from trajmon.drivers.nanonis_protocol import ProtocolError, encode_error, reply_values

    with pytest.raises(ProtocolError, match=r"^Bias\.Get reply: body truncated"):
        reply_values("Bias.Get", b"\0\0")
    with pytest.raises(ProtocolError, match=r"^Bias\.Get reply: 4 bytes after the error section"):
        reply_values("Bias.Get", struct.pack(">f", 0.5) + encode_error() + b"\0\0\0\0")


def test_a_timed_run_that_committed_nothing_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A schedule benchmark whose run committed no samples failed with numpy's "index -1 is
    out of bounds" in the crash row, hiding the run's own status and message."""
    from types import SimpleNamespace

    from test_review_benchmarks import INTERVAL, _fake_recording

    from benchmarks import bench_schedule
    from benchmarks.common import Ctx

    fake = _fake_recording([], missed=0)

    async def record(*args: Any, **kwargs: Any) -> Any:
        summary = await fake(*args, **kwargs)
        return SimpleNamespace(**vars(summary), status="failed", message="database is locked")

    monkeypatch.setattr(bench_schedule, "record", record)
    said = r"^empty: the run committed no samples \(failed: database is locked\)$"
    with pytest.raises(RuntimeError, match=said):
        bench_schedule._timed_run(Ctx("full", 1.0, tmp_path), "empty", INTERVAL, 1.0)


def test_json_outputs_name_the_database_by_one_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --json` gave the database's absolute path and `runs --json` the path as typed
    (`x.db`): a script joining the two outputs on `db` found no match."""
    import json

    from test_operator_cli import invoke

    monkeypatch.chdir(tmp_path)
    ran = invoke("run", "--sim", "--duration", "0.3", "--db", "x.db", "--run-name", "a", "--json")
    listed = invoke("runs", "--db", "x.db", "--json")
    assert json.loads(ran.stdout)["db"] == json.loads(listed.stdout)["db"]
    assert json.loads(listed.stdout)["db"] == str(tmp_path.resolve() / "x.db")


def test_status_says_a_heartbeat_lies_ahead_of_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that crashed before the computer's clock was set back an hour kept a heartbeat
    an hour ahead: `status` showed it running, "last heartbeat 0.0 s ago", for that hour."""
    import json
    import sqlite3
    import time
    from contextlib import closing

    from test_operator_cli import invoke

    monkeypatch.chdir(tmp_path)
    invoke("run", "--sim", "--duration", "0.3", "--db", "x.db", "--run-name", "a")
    with closing(sqlite3.connect("x.db")) as conn, conn:
        conn.execute(
            "UPDATE runs SET status = 'running', ended_utc = NULL, heartbeat_epoch = ?",
            (time.time() + 3600,),
        )
    doc = json.loads(invoke("status", "--db", "x.db", "--json").stdout)
    assert -3600 < doc["heartbeat_age_s"] < -3500
    text = " ".join(invoke("status", "--db", "x.db").stdout.split())
    assert "s ahead of this computer's clock (it was set back)" in text, text
    assert "0.0 s ago" not in text
