"""Runs continued with ``trajmon run --resume`` once or several times, and what reads them.

One module-scoped recording (``multi``) is made through the real CLI against the TCP simulator:
session 0 killed with SIGKILL, a spec changed while trajmon is down, session 1 resumed and stopped
with SIGINT, another change while down, session 2 resumed with ``--duration``. The read side
(runs, status, actions, windows, plot, export) is checked against that file; the rest use the
in-process simulator where no process boundary matters.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import math
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from procs import (
    ENV,
    TRAJMON,
    committed_samples,
    query,
    run_cli,
    sim_process,
    start_run,
    wait_for,
)
from test_resume import record_until  # until the run has read N spec samples, then stop
from typer.testing import CliRunner

from simulators.operator import AsyncNanonisClient
from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder
from trajmon.cli import app
from trajmon.config import ChannelSpec
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.resume import load_resume_config

NAME = "multi session"
STALE_S = "2.1"  # the smallest allowed (two heartbeats): a killed run is crashed soon
LAST_SESSION_S = 1.0  # the --duration of session 2
# Longer than the outage between sessions 1 and 2 (a shutdown and a process start: ~2 s, more
# than the default 2.5 s on a loaded machine), so the window of session 2's first action spans it.
WINDOW_BEFORE_S = 10.0


# --------------------------------------------------------------------------------------------
# the multi-session recording


@dataclass
class Multi:
    db: Path
    tmp: Path
    bias_while_down: tuple[float, float]
    signal_reads: int  # Signals.ValsGet requests the simulator answered, all sessions


def _set_bias(port: int, volts: float) -> None:
    async def go() -> None:
        client = AsyncNanonisClient("127.0.0.1", port)
        try:
            await client.request("Bias.Set", volts)
        finally:
            await client.close()

    asyncio.run(go())


def _status(db: Path, name: str = NAME) -> dict[str, Any]:
    out = run_cli("status", name, "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _looks_crashed(db: Path) -> bool:
    """``status --json`` says the run is crashed; run in this process, not as a command: it is
    polled until the heartbeat goes stale, and a new process per look (~0.7 s) would notice
    that up to one look late."""
    out = CliRunner().invoke(app, ["status", NAME, "--db", str(db), "--json"])
    assert out.exit_code == 0, out.stderr
    return bool(json.loads(out.stdout)["status"] == "crashed")


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multi]:
    tmp = tmp_path_factory.mktemp("multi")
    db = tmp / "lab.db"
    with sim_process(tmp) as sim:
        first = start_run(
            db, NAME, sim.port, "--interval-s", "0.05", "--rotate-entries", "7",
            "--stale-after-s", STALE_S, "--window-before-s", str(WINDOW_BEFORE_S),
        )  # fmt: skip
        wait_for(lambda: committed_samples(db, NAME) >= 10, what="session 0 samples")
        first.kill()
        first.communicate(timeout=30)
        _set_bias(sim.port, 1.25)  # turned while trajmon was down
        wait_for(lambda: _looks_crashed(db), what="the run to look crashed")
        resume = [
            "run", "--resume", NAME, "--host", "127.0.0.1", "--port", str(sim.port),
            "--db", str(db), "--quiet",
        ]  # fmt: skip
        second = subprocess.Popen(
            [*TRAJMON, *resume], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        before = committed_samples(db, NAME)
        wait_for(lambda: committed_samples(db, NAME) >= before + 10, what="session 1 samples")
        second.send_signal(signal.SIGINT)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 130, err
        _set_bias(sim.port, 0.5)
        third = run_cli(*resume, "--duration", str(LAST_SESSION_S), "--json")
        assert third.returncode == 0, third.stderr
        yield Multi(db, tmp, (1.25, 0.5), sim.requests("Signals.ValsGet"))


# --------------------------------------------------------------------------------------------
# tolerances across a resume


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=3)
    yield instrument
    instrument.close()


async def test_a_slow_turn_across_a_resume_is_one_action_against_where_it_started(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """A spec with a tolerance: reads within it leave the known value as it was, so a knob
    turned slowly is an action once it has moved by more than the tolerance in all, against the
    value it started from. A resume used to prime the detector with the *last read* instead of
    that known value, so 0.10 → 0.16 | resume | → 0.22 (tolerance 0.1) gave no action at all."""
    channels = [
        ChannelSpec(label="Tunnel Current", source="stm.current", kind="signal"),
        ChannelSpec(label="Bias", source="stm.bias", kind="spec", tolerance_abs=0.1),
    ]
    config = MonitorConfig(run_name="slow", db=db_path, interval_s=0.02, channels=channels)
    await anyio.to_thread.run_sync(stm.bias.set, 0.10)
    await record_until(Recorder(config, {"stm": stm}), 3)
    for n, volts in enumerate((0.16, 0.22), start=2):  # each step within the tolerance
        await anyio.to_thread.run_sync(stm.bias.set, volts)
        resumed = load_resume_config(db_path, "slow")
        await record_until(Recorder(resumed, {"stm": stm}, resume=True), 3 * n)
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, "slow"))
    assert [(a["old_value"], a["new_value"]) for a in actions] == [
        (pytest.approx(0.10), pytest.approx(0.22))
    ], actions


# --------------------------------------------------------------------------------------------
# the recording itself


def _tables(db: Path) -> dict[str, tuple[int, str, float]]:
    """group name -> (group_id, table, interval_s)."""
    rows = query(
        db,
        "SELECT g.name, g.group_id, g.table_name, g.interval_s FROM poll_groups g"
        " JOIN runs r USING (run_id) WHERE r.run_name = ? ORDER BY g.group_id",
        (NAME,),
    )
    return {str(n): (int(gid), str(t), float(i)) for n, gid, t, i in rows}


def _sessions(db: Path) -> list[tuple[int, float, float, str]]:
    return [
        (int(i), float(s), float(e), str(st))
        for i, s, e, st in query(
            db,
            "SELECT s.session_idx, s.start_dt_s, s.end_dt_s, s.status FROM sessions s"
            " JOIN runs r USING (run_id) WHERE r.run_name = ? ORDER BY session_idx",
            (NAME,),
        )
    ]


def _rows(db: Path, table: str) -> list[tuple[int, float, int]]:
    return query(db, f'SELECT sample_idx, dt_s, segment_id FROM "{table}" ORDER BY sample_idx')


def test_three_sessions_are_one_consistent_recording(multi: Multi) -> None:
    db = multi.db
    ((run_id, rotate, actions, errors, lost, sessions, status),) = query(
        db,
        "SELECT run_id, rotate_entries, actions, errors, lost_samples, sessions, status"
        " FROM runs WHERE run_name = ?",
        (NAME,),
    )
    assert (rotate, sessions, status) == (7, 3, "completed")
    spans = _sessions(db)
    assert [s[3] for s in spans] == ["crashed", "interrupted", "completed"]
    for before, after in itertools.pairwise(spans):
        assert before[2] < after[1], "each outage is a gap on the run's timeline"
    for name, (gid, table, _) in _tables(db).items():
        rows = _rows(db, table)
        assert [r[0] for r in rows] == list(range(len(rows))), f"{name}: sample_idx continues"
        assert all(b[1] > a[1] for a, b in itertools.pairwise(rows)), name
        assert all(r[2] == r[0] // rotate for r in rows), f"{name}: segment_id"
        for s_idx, start, end, _ in spans:  # every session recorded, inside its own span
            inside = [r for r in rows if start <= r[1] <= end]
            assert inside, f"{name}: session {s_idx} has no samples"
        assert all(any(s[1] <= r[1] <= s[2] for s in spans) for r in rows), name
        segments = query(
            db,
            "SELECT segment_id, first_idx, last_idx, first_dt_s, last_dt_s, rows FROM segments"
            " WHERE run_id = ? AND group_id = ? ORDER BY segment_id",
            (run_id, gid),
        )
        expected = [
            (seg, chunk[0][0], chunk[-1][0], chunk[0][1], chunk[-1][1], len(chunk))
            for seg in range(math.ceil(len(rows) / rotate))
            if (chunk := rows[seg * rotate : (seg + 1) * rotate])
        ]
        assert segments == expected, name
        ((samples, read, first, last),) = query(
            db,
            "SELECT samples, samples_read, first_dt_s, last_dt_s FROM poll_groups"
            " WHERE run_id = ? AND group_id = ?",
            (run_id, gid),
        )
        assert (samples, read, first, last) == (len(rows), len(rows), rows[0][1], rows[-1][1])
    assert actions == query(db, "SELECT count(*) FROM actions WHERE run_id = ?", (run_id,))[0][0]
    assert (
        errors == query(db, "SELECT count(*) FROM monitor_errors WHERE run_id = ?", (run_id,))[0][0]
    )
    signal_rows = len(_rows(db, _tables(db)["signals"][1]))
    # A kill loses what was read after the last commit (at most ~0.25 s here) and counts what
    # was pending at it; the SIGINT and the completed session lose nothing.
    assert signal_rows <= multi.signal_reads <= signal_rows + lost + 10


def test_a_change_while_down_is_an_action_at_the_first_sample_of_the_next_session(
    multi: Multi,
) -> None:
    out = run_cli("actions", "list", "--run", NAME, "--db", str(multi.db), "--json")
    assert out.returncode == 0, out.stderr
    actions = json.loads(out.stdout)["actions"]
    assert [a["action_idx"] for a in actions] == list(range(len(actions)))
    bias = [a for a in actions if a["spec_label"] == "Bias"]
    assert [a["new_value"] for a in bias] == list(multi.bias_while_down)
    specs = _rows(multi.db, _tables(multi.db)["specs"][1])
    spans = _sessions(multi.db)
    for action, (_, start, _, _), (_, _, prev_end, _) in zip(
        bias, spans[1:], spans[:-1], strict=True
    ):
        first = next(r for r in specs if r[1] >= start)  # first spec sample of the session
        assert (action["sample_idx"], action["dt_s"]) == (first[0], first[1])
        assert action["prev_dt_s"] <= prev_end, "the old value was last read before the outage"
        assert action["window_start_s"] == pytest.approx(action["dt_s"] - WINDOW_BEFORE_S)


def test_a_window_across_an_outage_is_incomplete_with_exactly_the_recorded_rows(
    multi: Multi,
) -> None:
    db = multi.db
    (last,) = [a for a in _actions(db) if a["new_value"] == multi.bias_while_down[1]]
    out = run_cli(
        "actions", "show", str(last["action_idx"]), "--run", NAME, "--db", str(db),
        "--with-signal-window", "--with-spec-window", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    lo, hi = last["window_start_s"], last["window_end_s"]
    tables = _tables(db)
    gaps = {}
    for key in ("signal_window", "spec_window"):
        (group,) = doc[key]
        _, table, interval = tables[group["group"]]
        want = [r for r in _rows(db, table) if lo <= r[1] <= hi]
        assert [(r["sample_idx"], r["dt_s"]) for r in group["rows"]] == [r[:2] for r in want]
        assert group["complete"] is False
        outages = [
            {"from_s": a[1], "to_s": b[1]}
            for a, b in itertools.pairwise(want)
            if b[1] - a[1] > 2 * interval
        ]
        assert group["gaps"] == outages
        # the window may reach back across session 1 into session 0: that outage is a gap too
        resumed = _sessions(db)[-1][1]  # where session 2 starts
        assert outages and outages[-1]["to_s"] == min(r[1] for r in want if r[1] >= resumed)
        gaps[key] = len(outages)
    text = run_cli(
        "actions", "show", str(last["action_idx"]), "--run", NAME, "--db", str(db),
        "--with-signal-window",
    )  # fmt: skip
    assert "INCOMPLETE" in text.stdout and f"gaps: {gaps['signal_window']}" in text.stdout


def _actions(db: Path) -> list[dict[str, Any]]:
    with closing(connect_readonly(db)) as conn:
        return list_actions(conn, resolve_run(conn, NAME))


def test_the_plot_does_not_draw_a_line_across_the_outage(
    multi: Multi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`actions plot` of an action whose window spans the outage between two sessions: the
    line used to run straight from the last sample before the outage to the first after it,
    drawing seconds of values that were never recorded."""
    from trajmon import plotting
    from trajmon.windows import window_columns

    figures: list[Any] = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figures.append(fig))
    (last,) = [a for a in _actions(multi.db) if a["new_value"] == multi.bias_while_down[1]]
    with closing(connect_readonly(multi.db)) as conn:
        ref = resolve_run(conn, NAME)
        groups = window_columns(conn, ref, "signal", last["window_start_s"], last["window_end_s"])
    assert plotting.plot_action_window(last, groups, tmp_path / "p.png", run_name=NAME) == 2
    (fig,) = figures
    limit = 2 * groups[0]["interval_s"]
    for ax in fig.axes:
        (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        drawn = np.isfinite(y[:-1]) & np.isfinite(y[1:])
        assert drawn.any()
        assert (np.diff(x)[drawn] <= limit).all(), "a segment drawn across a gap"


# --------------------------------------------------------------------------------------------
# runs, status, export


def test_runs_and_status_count_what_is_in_the_database(multi: Multi) -> None:
    db = multi.db
    tables = _tables(db)
    counts = {name: len(_rows(db, t)) for name, (_, t, _) in tables.items()}
    ((n_actions,),) = query(db, "SELECT count(*) FROM actions")
    ((n_errors,),) = query(db, "SELECT count(*) FROM monitor_errors")
    ((lost, end_dt),) = query(db, "SELECT lost_samples, end_dt_s FROM runs")
    out = run_cli("runs", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["runs"]
    status = _status(db)
    spans = query(db, "SELECT start_dt_s, end_dt_s FROM sessions ORDER BY session_idx")
    # Both outages' ticks of one group: the crash's is over 2.1 s (the stale wait), the
    # interrupt's about a process start-up (~0.8 s).
    outage_ticks = sum(
        (start - end) / status["groups"][0]["interval_s"]
        for (_, end), (start, _) in itertools.pairwise(spans)
    )
    assert outage_ticks > 40
    for doc in (row, status):
        assert doc["status"] == "completed"
        assert (doc["signal_samples"], doc["spec_samples"]) == (counts["signals"], counts["specs"])
        assert (doc["actions"], doc["errors"], doc["lost_samples"]) == (n_actions, n_errors, lost)
        # Counted as missed, the outages would be every tick of them in each group (this sum
        # over the groups at least twice outage_ticks); a tick or two late on a loaded machine
        # (the poller more than one interval behind) may happen.
        assert doc["missed_ticks"] < outage_ticks, "the outages are not missed ticks"
    assert row["duration_s"] == status["elapsed_s"] == end_dt
    assert status["sessions"] == 3 and status["pending_samples"] == 0
    assert status["requested_duration_s"] == LAST_SESSION_S
    for g in status["groups"]:
        assert g["samples"] == g["samples_read"] == counts[g["name"]]


def test_runs_and_status_agree_on_the_losses_of_a_crashed_run(multi: Multi, tmp_path: Path) -> None:
    """A run killed while samples were waiting for the next commit: `status` counts them as
    lost (nobody will commit them now), and so does the resume. `runs` used to show only the
    stored losses, so the two commands disagreed about the same crashed run."""
    db = tmp_path / "crashed.db"
    with closing(connect_readonly(multi.db)) as src, closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
        dst.execute("UPDATE runs SET status = 'running', heartbeat_epoch = 0, end_dt_s = NULL")
        dst.execute("UPDATE poll_groups SET samples_read = samples + 3 WHERE group_id = 0")
        dst.commit()
    ((stored,),) = query(db, "SELECT lost_samples FROM runs")
    status = _status(db)
    out = run_cli("runs", "--db", str(db), "--json")
    (row,) = json.loads(out.stdout)["runs"]
    assert status["status"] == row["status"] == "crashed"
    assert status["lost_samples"] == stored + 3
    assert row["lost_samples"] == status["lost_samples"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_an_export_is_the_whole_run_on_one_timeline(multi: Multi, tmp_path: Path, fmt: str) -> None:
    out = run_cli(
        "export", NAME, "--db", str(multi.db), "-f", fmt, "-o", str(tmp_path), "--json",
        "--chunk-rows", "16",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    directory = tmp_path / "multi session"
    doc = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    assert (doc["sessions"], doc["rotate_entries"], doc["status"]) == (3, 7, "completed")
    # Where the outages are, and why: the sessions travel with the export.
    spans = [
        (s["session_idx"], s["start_dt_s"], s["end_dt_s"], s["status"])
        for s in doc.get("session_spans", [])
    ]
    assert spans == _sessions(multi.db)
    ext = {"csv": "csv", "parquet": "parquet", "netcdf": "nc"}[fmt]
    for name, (_, table, _) in _tables(multi.db).items():
        rows = _rows(multi.db, table)
        idx, dts = _read_export(directory / f"{name}.{ext}", fmt)
        assert idx == [r[0] for r in rows], name
        assert dts == [r[1] for r in rows], name
    idx, dts = _read_export(directory / f"actions.{ext}", fmt, index="action_idx")
    assert dts == [a["dt_s"] for a in _actions(multi.db)]


def _read_export(path: Path, fmt: str, index: str = "sample_idx") -> tuple[list[int], list[float]]:
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [int(r[index]) for r in rows], [float(r["dt_s [s]"]) for r in rows]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table[index].to_pylist(), table["dt_s"].to_pylist()
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return [int(i) for i in ds[index].values], [float(t) for t in ds["dt_s"].values]


# --------------------------------------------------------------------------------------------
# who may resume


def test_a_live_run_cannot_be_resumed_and_of_two_resumes_one_records(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    with sim_process(tmp_path) as sim:
        resume = [
            *TRAJMON, "run", "--resume", "live", "--host", "127.0.0.1", "--port", str(sim.port),
            "--db", str(db), "--quiet", "--duration", "1",
        ]  # fmt: skip
        live = start_run(db, "live", sim.port, "--interval-s", "0.05")
        wait_for(lambda: committed_samples(db, "live") > 0, what="the first session")
        refused = run_cli(*resume[len(TRAJMON) :])
        assert refused.returncode == 2 and "still recording" in refused.stderr
        before = committed_samples(db, "live")
        wait_for(lambda: committed_samples(db, "live") > before, what="the live run to go on")
        live.send_signal(signal.SIGINT)
        _, err = live.communicate(timeout=30)
        assert live.returncode == 130, err
        both = [
            subprocess.Popen(
                resume, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
            )
            for _ in range(2)
        ]
        outcomes = sorted((p.wait(timeout=60), p.communicate()[1]) for p in both)
        reads = sim.requests("Signals.ValsGet")
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "still recording" in outcomes[1][1]
    sessions = query(db, "SELECT session_idx, status FROM sessions ORDER BY session_idx")
    assert sessions == [(0, "interrupted"), (1, "completed")]
    ((signal_rows, lost),) = query(
        db,
        "SELECT g.samples, r.lost_samples FROM poll_groups g JOIN runs r USING (run_id)"
        " WHERE g.name = 'signals'",
    )
    assert (reads, lost) == (signal_rows, 0), "nothing read was lost, nothing read twice"
