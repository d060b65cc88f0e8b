"""A run that goes on across sessions: what ``status`` says of it, and where its schedule
resumes. Every recording runs on a :class:`FakeClock`, each session a fixed number of ticks;
the outage between sessions is simulated time, not a wait."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_explore_api import Bench, bench, config, first_samples, ticks

from trajmon import ConfigError, FakeClock, Recorder
from trajmon.queries import connect_readonly, resolve_run
from trajmon.resume import load_resume_config
from trajmon.status import run_status

__all__ = ["bench"]  # test_explore_api's instrument fixture, used here


async def settled(recorder: Recorder, clock: FakeClock) -> None:
    """Both pollers and the writer asleep on the clock: nothing is half-way on a thread."""
    with anyio.fail_after(5):
        await clock.wait_for_sleepers(len(recorder.stats) + 1)


async def record(recorder: Recorder, clock: FakeClock, n: int) -> None:
    """Run ``recorder`` for its first sample and ``n`` ticks more, then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await first_samples(recorder)
        await settled(recorder, clock)
        await ticks(recorder, clock, n)
        recorder.request_stop()


def status_of(db: Path, now: float) -> dict[str, Any]:
    with closing(connect_readonly(db)) as conn:
        return run_status(conn, resolve_run(conn, "run"), now=now)


def recorded_s(db: Path) -> float:
    """The time the run's sessions recorded, by the sessions table: closed sessions whole, an
    open one up to the last commit (its heartbeat)."""
    with closing(sqlite3.connect(db)) as conn:
        spans = conn.execute("SELECT start_dt_s, end_dt_s FROM sessions ORDER BY session_idx")
        (beat,) = conn.execute("SELECT heartbeat_dt_s FROM runs").fetchone()
        return sum((beat if end is None else end) - start for start, end in spans.fetchall())


def assert_rate_over_recorded_time(doc: dict[str, Any], recorded: float) -> None:
    for group in doc["groups"]:
        assert group["achieved_rate_hz"] == pytest.approx(group["samples_read"] / recorded)
        # every tick was taken while recording: the rate is the target's, not a hundredth of it
        assert 0.9 <= group["achieved_rate_hz"] / group["target_rate_hz"] <= 1.2, group


async def test_achieved_rate_after_a_resume_is_over_the_recorded_time_not_the_outage(
    db_path: Path, bench: Bench
) -> None:
    """Resumed after an hour down, a run sampled at 10 Hz on every tick showed
    `achieved Hz 0.01` against `target Hz 10` in `trajmon status` (and run.json): the samples
    were divided by the run's whole timeline, the outage included. A figure set beside the
    target says how well sampling kept up while it recorded: it is over the sessions' spans.
    Checked while the resumed session records, once it is taken for crashed, and at its end."""
    clock = FakeClock()
    cfg = config(db_path)
    await record(Recorder(cfg, {"bench": bench}, clock=clock), clock, 20)
    await clock.advance(3600.0)
    resumed = Recorder(cfg, {"bench": bench}, clock=clock, resume=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(resumed.run)
        await first_samples(resumed)
        await settled(resumed, clock)
        await ticks(resumed, clock, 20)
        await settled(resumed, clock)  # the writer back from its commit
        live = status_of(db_path, clock.wall())
        assert (live["status"], live["sessions"]) == ("running", 2)
        assert live["elapsed_s"] > 3600, "elapsed stays on the run's own timeline"
        assert_rate_over_recorded_time(live, recorded_s(db_path))
        gone = status_of(db_path, clock.wall() + 600)
        assert gone["status"] == "crashed"
        assert_rate_over_recorded_time(gone, recorded_s(db_path))
        resumed.request_stop()
    ended = status_of(db_path, clock.wall())
    assert ended["status"] == "interrupted"
    assert_rate_over_recorded_time(ended, recorded_s(db_path))


async def test_a_heartbeat_a_little_ahead_of_the_clock_is_not_called_just_now(
    db_path: Path, bench: Bench
) -> None:
    """A crashed run whose heartbeat lies ahead of the clock by less than `stale_after_s` (the
    clock set back 3 s since) was refused as "still recording (heartbeat 0.0 s ago)": a beat
    that had just come, and no word of when a retry could succeed. A beat that recent stays
    "still recording", as before, and once the time said has passed the run resumes."""
    clock = FakeClock()
    await record(Recorder(config(db_path), {"bench": bench}, clock=clock), clock, 3)
    now = clock.wall()
    with closing(sqlite3.connect(db_path)) as conn, conn:  # as a crash leaves it, then set back
        conn.execute("UPDATE runs SET status = 'running', heartbeat_epoch = ?", (now + 3,))
    with pytest.raises(ConfigError) as ahead:
        load_resume_config(db_path, "run", now=now)
    assert "0.0 s ago" not in str(ahead.value)
    assert "3.0 s ahead of this computer's clock" in str(ahead.value)
    assert "resumed once that heartbeat is 5 s old, in 8.0 s" in str(ahead.value)
    assert load_resume_config(db_path, "run", now=now + 8.5).run_name == "run"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET heartbeat_epoch = ?", (now - 2,))
    with pytest.raises(ConfigError, match=r"still recording \(heartbeat 2\.0 s ago\)"):
        load_resume_config(db_path, "run", now=now)
