"""Resuming a run from the library (``Recorder(..., resume=True)``) with a configuration that is
not the run's own, or a database that is not there: refused before anything is written, as
``trajmon run --resume`` refuses options that would change the stored configuration.

Every recording here runs on a :class:`FakeClock`: the sessions are a fixed number of ticks.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_explore_api import Bench, bench, config, first_samples, ticks

from trajmon import ConfigError, FakeClock, MonitorConfig, Recorder

__all__ = ["bench"]  # test_explore_api's instrument fixture, used here


async def record(recorder: Recorder, clock: FakeClock, n: int) -> None:
    """Run ``recorder`` for its first sample and ``n`` ticks more, then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await first_samples(recorder)
        await ticks(recorder, clock, n)
        recorder.request_stop()


def dump(db: Path) -> list[Any]:
    """Everything the run record holds that a refused resume must leave as it was."""
    with closing(sqlite3.connect(db)) as conn:
        return [
            conn.execute(f"SELECT * FROM {table}").fetchall()
            for table in ("runs", "sessions", "poll_groups", "channels", "actions", '"run/specs"')
        ]


def with_knob_tolerance(cfg: MonitorConfig) -> MonitorConfig:
    channels = [
        c.model_copy(update={"tolerance_abs": 0.5}) if c.label == "Knob" else c
        for c in cfg.channels
    ]
    return cfg.updated(channels=channels)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"interval_s": 0.05}, "interval"),
        ({"spec_interval_s": 0.2}, "interval"),
        ({"window_before_s": 1.0}, "window_before_s"),
        ({"window_after_s": 7.5}, "window_after_s"),
        ({"rotate_entries": 5}, "rotate_entries"),
        ("tolerance", "tolerance"),
    ],
)
async def test_a_resume_with_other_settings_than_the_runs_is_refused_and_writes_nothing(
    db_path: Path, bench: Bench, changes: Any, named: str
) -> None:
    """Resumed with another interval, the new session sampled at it while ``poll_groups`` went
    on saying the old one (target rates, missed ticks, the plot's gap breaks all wrong); with
    other windows its actions got bounds that ``runs.window_*_s`` does not say; another
    tolerance changed what counts as an action under the stored one. All silently."""
    clock = FakeClock()
    await record(Recorder(config(db_path), {"bench": bench}, clock=clock), clock, 3)
    before = dump(db_path)
    if changes == "tolerance":
        other = with_knob_tolerance(config(db_path))
    else:
        other = config(db_path, **changes)
    await clock.advance(5.0)
    bench.knob_value = 0.9
    recorder = Recorder(other, {"bench": bench}, clock=clock, resume=True)
    recorder.request_stop()  # were it not refused, the session would end at once, empty
    with pytest.raises(ConfigError, match=f"cannot resume 'run'.*{named}"):
        await recorder.run()
    assert dump(db_path) == before


async def test_the_runs_own_settings_still_resume(db_path: Path, bench: Bench) -> None:
    """The check refuses only a change: the stored settings, also ones set away from their
    defaults (a tolerance, windows, intervals, rotate_entries), resume as before."""
    clock = FakeClock()
    own = with_knob_tolerance(
        config(
            db_path,
            interval_s=0.1,
            spec_interval_s=0.1,
            window_before_s=1.25,
            window_after_s=0.0,
            rotate_entries=3,
        )
    )
    await record(Recorder(own, {"bench": bench}, clock=clock), clock, 3)
    await clock.advance(5.0)
    bench.knob_value = 1.5
    await record(Recorder(own, {"bench": bench}, clock=clock, resume=True), clock, 3)
    with closing(sqlite3.connect(db_path)) as conn:
        (sessions,) = conn.execute("SELECT sessions FROM runs").fetchone()
        actions = conn.execute("SELECT old_value, new_value, window_start_s, dt_s FROM actions")
        ((old, new, start, dt),) = actions.fetchall()
    assert sessions == 2
    assert (old, new) == (0.5, 1.5)
    assert start == pytest.approx(dt - 1.25)


async def test_resuming_into_a_missing_database_creates_no_file(
    tmp_path: Path, bench: Bench
) -> None:
    """A mistyped ``db`` used to be created (an empty trajmon database) before the resume was
    refused as an unknown run; ``trajmon run --resume`` says the file is not there."""
    db = tmp_path / "typo.db"
    recorder = Recorder(config(db), {"bench": bench}, clock=FakeClock(), resume=True)
    with pytest.raises(ConfigError, match="database not found"):
        await recorder.run()
    assert [p.name async for p in anyio.Path(tmp_path).iterdir() if p.name.startswith("typo")] == []
