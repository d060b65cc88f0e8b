"""The run lifecycle under changes the other resume tests do not make: a driver whose validator
or unit changed between two sessions of a run, and a database written by a newer trajmon."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from procs import run_cli
from qcodes.instrument import Instrument
from qcodes.validators import Numbers, Strings

from trajmon import ChannelSpec, ConfigError, MonitorConfig, Recorder
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.resume import load_resume_config


class Panel(Instrument):
    """A signal and a spec whose validator, unit and answers the test chooses: the same
    instrument before and after a driver update."""

    def __init__(self, name: str, *, mode_vals: Any, mode_unit: str, mode: Any) -> None:
        super().__init__(name)
        self.answer = mode
        self.add_parameter("level", get_cmd=lambda: 1.5, set_cmd=False, vals=Numbers(), unit="V")
        self.add_parameter(
            "mode", get_cmd=lambda: self.answer, set_cmd=False, vals=mode_vals, unit=mode_unit
        )


@pytest.fixture
def panels() -> Iterator[list[Panel]]:
    made: list[Panel] = []
    yield made
    for panel in made:
        panel.close()


def panel(made: list[Panel], **kwargs: Any) -> Panel:
    for old in made:  # one instrument of a name at a time, as after a restart
        old.close()
    made.clear()
    made.append(Panel("panel", **kwargs))
    return made[0]


def config(db: Path) -> MonitorConfig:
    return MonitorConfig(
        run_name="panel run",
        db=db,
        source="instruments",
        interval_s=0.02,
        channels=[
            ChannelSpec(label="Level", source="panel.level", kind="signal"),
            ChannelSpec(label="Mode", source="panel.mode", kind="spec"),
        ],
    )


async def record_some(recorder: Recorder, samples: int = 3) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(30):
            await recorder.wait_until(lambda: recorder.stats[1].samples_committed >= samples)
        recorder.request_stop()


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def record_of(db: Path) -> tuple[Any, ...]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        run = conn.execute("SELECT status, sessions FROM runs").fetchone()
        sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        rows = conn.execute('SELECT count(*) FROM "panel run/specs"').fetchone()[0]
        kinds = conn.execute('SELECT DISTINCT typeof("Mode") FROM "panel run/specs"').fetchall()
    return run, sessions, rows, sorted(k for (k,) in kinds)


@pytest.mark.parametrize(
    ("new", "said"),
    [
        pytest.param(
            {"mode_vals": Strings(), "mode_unit": "V", "mode": "idle"},
            "recorded as float in unit 'V' and panel.mode now gives str in unit 'V'",
            id="validator-Numbers-now-Strings",
        ),
        pytest.param(
            {"mode_vals": Numbers(), "mode_unit": "mV", "mode": 250.0},
            "recorded as float in unit 'V' and panel.mode now gives float in unit 'mV'",
            id="unit-V-now-mV",
        ),
    ],
)
async def test_a_resume_whose_driver_now_gives_another_type_or_unit_is_refused(
    db_path: Path, panels: list[Panel], new: dict[str, Any], said: str
) -> None:
    """A spec recorded as a float in volts; the driver was updated while trajmon was down and
    now types it as text (or reports millivolts). The resume used to go ahead: it wrote 'idle'
    into the REAL column (every reader decoding that column then failed: `trajmon actions`
    raised "could not convert string to float: 'idle'"), with a spurious action 0.25 -> 'idle';
    or it wrote 250 (mV) under 0.25 (V) in one column, an action of +249.75 V that never
    happened. It is refused, before anything is written, and the run stays resumable."""
    first = panel(panels, mode_vals=Numbers(), mode_unit="V", mode=0.25)
    await record_some(Recorder(config(db_path), {"panel": first}))
    before = record_of(db_path)
    assert before[0] == ("interrupted", 1) and before[3] == ["real"]

    updated = panel(panels, **new)
    resumed = load_resume_config(db_path, "panel run").updated(duration_s=0.1)
    with pytest.raises(ConfigError, match=f"cannot resume 'panel run': channel 'Mode' was {said}"):
        await Recorder(resumed, {"panel": updated}, resume=True).run()
    assert record_of(db_path) == before, "nothing written: no session, no row, no action"

    same = panel(panels, mode_vals=Numbers(), mode_unit="V", mode=0.25)
    summary = await Recorder(resumed, {"panel": same}, resume=True).run()
    assert summary.status == "completed"
    with closing(connect_readonly(db_path)) as conn:
        assert list_actions(conn, resolve_run(conn, "panel run")) == []
    run, sessions, rows, kinds = record_of(db_path)
    assert run == ("completed", 2) and sessions == 2 and rows > before[2] and kinds == ["real"]


def newer_database(db: Path, change: str) -> None:
    """``db`` as a newer trajmon (schema 3) might leave a crashed run: with a configuration
    field this trajmon does not know, or a column of ``runs`` renamed."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'running', heartbeat_epoch = 0")
        if change == "config field":
            (text,) = conn.execute("SELECT config_json FROM runs").fetchone()
            conn.execute(
                "UPDATE runs SET config_json = ?", (json.dumps({**json.loads(text), "knob": 1}),)
            )
        else:
            conn.execute("ALTER TABLE runs RENAME COLUMN heartbeat_epoch TO heartbeat_unix")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 3")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.mark.parametrize("change", ["config field", "renamed column"])
async def test_a_database_from_a_newer_trajmon_is_refused_as_such_on_resume(
    db_path: Path, panels: list[Panel], change: str
) -> None:
    """`trajmon run --resume` read a newer trajmon's run row as this version's before anything
    checked the schema version: a configuration field added since was refused as "knob: Extra
    inputs are not permitted" (exit 2, saying nothing of versions), a renamed column raised
    IndexError (a traceback). It says the database is newer, and leaves the file as it was."""
    first = panel(panels, mode_vals=Numbers(), mode_unit="V", mode=0.25)
    await record_some(Recorder(config(db_path), {"panel": first}))
    newer_database(db_path, change)
    before = digest(db_path)
    with pytest.raises(
        ConfigError,
        match=r"cannot resume 'panel run': database schema version 3 is newer than this trajmon",
    ):
        load_resume_config(db_path, "panel run")
    assert digest(db_path) == before


def test_the_cli_refuses_a_newer_database_on_resume_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    made = run_cli("run", "--sim", "--run-name", "a", "--duration", "0.2", "--db", str(db))
    assert made.returncode == 0, made.stderr
    newer_database(db, "config field")
    before = digest(db)
    result = run_cli("run", "--resume", "a", "--db", str(db), "--duration", "0.2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trajmon: error: cannot resume 'a': database schema version 3 is newer than this"
        " trajmon (2); upgrade trajmon"
    ]
    assert digest(db) == before
