"""Crash consistency and recovery as an operator meets it: a hangup, a terminal or log pipe that
went away, a resume killed before its first commit."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import anyio
import pytest
from procs import (
    ENV,
    TRAJMON,
    SimProcess,
    committed_samples,
    group_rows,
    heartbeat_dt_s,
    needs_sighup,
    query,
    run_args,
    run_cli,
    sim_process,
    wait_for,
)

from simulators.qcodes_sim import SimulatedSTM
from trajmon import ConfigError, MonitorConfig, Recorder, RunSummary
from trajmon.cli.runner import RunOutcome, exit_code_for
from trajmon.connection import open_connection
from trajmon.queries import connect_readonly, list_runs
from trajmon.resolve import build_groups
from trajmon.resume import load_resume_config, resume_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


#: Seconds between ``trajmon run``'s progress lines under :data:`TRAJMON_FAST_PROGRESS`.
PROGRESS_EVERY_S = 0.25

#: ``trajmon`` whose ``run`` prints its progress line every :data:`PROGRESS_EVERY_S` instead of
#: every 5 s: the same command and code path, so a test that needs progress lines to be written
#: (or to fail) gets several within a second instead of waiting 5 s for the first.
TRAJMON_FAST_PROGRESS = [
    sys.executable,
    "-c",
    "import functools, sys\n"
    "from trajmon.cli import main, run_cmd\n"
    f"run_cmd.record = functools.partial(run_cmd.record, progress_every_s={PROGRESS_EVERY_S})\n"
    "sys.argv[0] = 'trajmon'\n"
    "main()\n",
]


@contextmanager
def recording(
    db: Path,
    name: str,
    port: int,
    *args: str,
    shell_prefix: str | None = None,
    trajmon: Sequence[str] = TRAJMON,
) -> Iterator[subprocess.Popen[str]]:
    """``trajmon run`` against the simulator on ``port``; killed if the test leaves it running.
    ``shell_prefix`` runs it through ``sh -c '<prefix>; exec trajmon …'`` (a ``trap``);
    ``trajmon`` is the command (:data:`TRAJMON_FAST_PROGRESS` for frequent progress lines)."""
    argv = [*trajmon, *run_args(db, name, port, "--interval-s", "0.05", *args)]
    if shell_prefix is not None:
        argv = ["sh", "-c", f'{shell_prefix}; exec "$@"', "sh", *argv]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulator process for the module (starting one takes ~0.7 s): the tests here only
    record from it, each into its own database; none changes it or counts its requests."""
    with sim_process(tmp_path_factory.mktemp("sim")) as running:
        yield running


def stored_status(db: Path, name: str) -> str:
    return str(query(db, "SELECT status FROM runs WHERE run_name = ?", (name,))[0][0])


@needs_sighup
def test_a_hangup_stops_the_run_like_sigterm(tmp_path: Path, sim: SimProcess) -> None:
    """SIGHUP — the terminal or ssh session the run was started from has gone — used to kill
    the process outright: the run stayed `running`, then `crashed`, the last commit interval
    of samples lost. Now it is a stop request: drained, committed, `interrupted`, exit 129."""
    db = tmp_path / "hup.db"
    with recording(db, "H", sim.port, "--json") as rec:
        wait_for(lambda: committed_samples(db, "H") > 0, timeout=30, what="committed samples")
        rec.send_signal(signal.SIGHUP)
        out, err = rec.communicate(timeout=30)
    assert rec.returncode == 129, err
    assert json.loads(out)["status"] == "interrupted"
    assert stored_status(db, "H") == "interrupted"
    assert all(rows == samples == read for rows, samples, read in group_rows(db, "H").values())


def test_a_hangup_under_nohup_is_still_ignored(tmp_path: Path, sim: SimProcess) -> None:
    """``nohup trajmon run …`` (SIGHUP ignored when trajmon starts) keeps recording when the
    terminal closes: trajmon does not put a handler over the ignored signal."""
    db = tmp_path / "nohup.db"
    with recording(db, "N", sim.port, "--json", shell_prefix="trap '' HUP") as rec:
        wait_for(lambda: committed_samples(db, "N") > 0, timeout=30, what="committed samples")
        rec.send_signal(signal.SIGHUP)
        after_hup = committed_samples(db, "N")
        wait_for(lambda: committed_samples(db, "N") > after_hup + 10, what="more samples")
        rec.send_signal(signal.SIGTERM)
        out, err = rec.communicate(timeout=30)
    assert rec.returncode == 143, err
    assert json.loads(out)["status"] == "interrupted"


def test_output_gone_never_ends_the_run_nor_its_record(tmp_path: Path, sim: SimProcess) -> None:
    """A closed terminal or a log pipe whose reader died (``trajmon run … | tee log``, the tee
    killed): writes to stdout and stderr fail. The first progress line (after 5 s) used to end
    the process with exit 1 and the run unrecorded (`running`, then `crashed`); a stop signal
    was lost in its note's failing write, so the run could not be stopped but by SIGKILL; the
    summary's failing write turned exit 143 into 1. Now the output stops, the recording does
    not: the stop signal ends it `interrupted`, with its exit code.

    The progress lines come every :data:`PROGRESS_EVERY_S` here, not every 5 s: the run is
    watched past four of them (1 s) instead of past the first (6 s)."""
    db = tmp_path / "gone.db"
    with recording(db, "G", sim.port, trajmon=TRAJMON_FAST_PROGRESS) as rec:
        assert rec.stdout is not None and rec.stderr is not None
        rec.stdout.close()
        rec.stderr.close()
        wait_for(
            lambda: rec.poll() is not None or heartbeat_dt_s(db, "G") > 4 * PROGRESS_EVERY_S,
            timeout=30,
            what="a run past its first progress lines",
        )
        assert rec.poll() is None, "the run ended when its progress line could not be written"
        rec.send_signal(signal.SIGTERM)
        rec.wait(timeout=30)
    assert rec.returncode == 143
    assert stored_status(db, "G") == "interrupted"
    assert all(rows == samples == read for rows, samples, read in group_rows(db, "G").values())


def test_a_demo_whose_output_is_gone_still_records_and_exits_0(tmp_path: Path) -> None:
    """Its first line ("Recording …") failed and ended the demo with exit 1, nothing recorded."""
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [*TRAJMON, "demo", "--duration", "1", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ((name, status),) = query(db, "SELECT run_name, status FROM runs")
    assert status == "completed" and group_rows(db, name)["signals"][0] > 0


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=2)
    yield instrument
    instrument.close()


async def record_until_committed(config: MonitorConfig, stm: SimulatedSTM, n: int) -> None:
    """Record until the spec group has committed ``n`` samples, then stop."""
    async with anyio.create_task_group() as tg:
        recorder = Recorder(config, {"stm": stm})
        tg.start_soon(recorder.run)
        with anyio.fail_after(30):
            await recorder.wait_until(lambda: recorder.stats[1].samples_committed >= n)
        recorder.request_stop()


@pytest.mark.parametrize(("ended_as", "lost"), [("running", 3), ("failed", 5)])
async def test_a_resume_killed_before_its_first_commit_counts_no_loss_twice(
    db_path: Path, stm: SimulatedSTM, ended_as: str, lost: int
) -> None:
    """A crash left 3 samples read but not committed (or a failed run counted its 5 at its
    end). A resume claims the run, then dies before its first commit; the next resume must
    not count those samples again (it used to: 3 + 3, or 5 + 3)."""
    config = MonitorConfig(run_name="twice", db=db_path, interval_s=0.02)
    await record_until_committed(config, stm, 5)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        # As a crash leaves its last commit (or finish_run a failed run's end).
        lost_before = 0 if ended_as == "running" else 5
        conn.execute(
            "UPDATE runs SET status = ?, lost_samples = ?, heartbeat_epoch = 0",
            (ended_as, lost_before),
        )
        conn.execute("UPDATE poll_groups SET samples_read = samples + 3 WHERE group_id = 0")

    resumed = load_resume_config(db_path, "twice")
    conn = await open_connection(db_path)
    try:  # the claim of a resume whose process is then killed: nothing else is written
        await resume_run(
            conn, "twice", build_groups(resumed, {"stm": stm}), now_mono=0.0, now_wall=1000.0
        )
    finally:
        await conn.close()
    (read_after_claim,) = query(db_path, "SELECT samples_read - samples FROM poll_groups")[0]
    assert read_after_claim == 0, "the pending samples are counted as lost at the claim"

    resumed = load_resume_config(db_path, "twice").updated(duration_s=0.2)
    summary = await Recorder(resumed, {"stm": stm}, resume=True).run()
    assert summary.status == "completed"
    with closing(connect_readonly(db_path)) as ro:
        (run,) = list_runs(ro)
    assert run["lost_samples"] == lost


#: A child process that opens a transaction on a new database file and is then killed inside
#: it: ``hang()`` marks the moment and blocks. ``cache_size = 1`` makes SQLite write pages out
#: before the commit, as a large transaction (or one killed in its commit) does.
_KILLED_IN_TRANSACTION = """
import pathlib, sqlite3, sys, time
from trajmon import schema
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
def hang():
    pathlib.Path(sys.argv[2]).write_text("in the transaction")
    time.sleep(120)
conn.create_function("hang", 0, hang)
conn.execute("PRAGMA cache_size = 1")
schema._CATALOG += "SELECT hang();"
if sys.argv[3] == "migrate":
    schema.migrate(conn)
else:  # the catalog written as a rollback-journal transaction, as older trajmon versions did
    conn.executescript("BEGIN;" + schema._CATALOG)
"""


def kill_in_catalog_transaction(tmp_path: Path, db: Path, how: str) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_IN_TRANSACTION, str(db), str(marker), how], env=ENV
    )
    try:
        wait_for(marker.exists, timeout=30, what="the child inside its transaction")
    finally:
        child.kill()
        child.wait()


def record_briefly(sim: SimProcess, db: Path, name: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*run_args(db, name, sim.port, "--duration", "0.3", "--quiet"))


def test_a_run_killed_while_creating_the_catalog_leaves_no_hot_journal(
    tmp_path: Path, sim: SimProcess
) -> None:
    """Killed while creating a new file's catalog, the recorder used to leave a hot rollback
    journal, which read-only connections cannot roll back: `trajmon runs` (and `status`, and
    the next `run`'s name check) failed with 'attempt to write a readonly database' until a
    writer came. The catalog is now written in WAL mode: nothing hot is left behind."""
    db = tmp_path / "new.db"
    kill_in_catalog_transaction(tmp_path, db, "migrate")
    assert not db.with_name("new.db-journal").exists()
    listed = run_cli("runs", "--db", str(db))
    assert "readonly" not in listed.stderr
    assert listed.returncode == 0 and f"runs in {db} (0)" in listed.stdout  # empty: no runs
    assert record_briefly(sim, db, "after").returncode == 0
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert stored_status(db, "after") == "completed"


def test_a_hot_journal_does_not_block_the_next_run(tmp_path: Path, sim: SimProcess) -> None:
    """Whatever left a hot rollback journal (a writer killed in a rollback-mode transaction),
    `trajmon run` used to refuse the file in its read-only name check ('cannot read …: attempt
    to write a readonly database', exit 2), forever. Its own writer rolls the journal back."""
    db = tmp_path / "hot.db"
    kill_in_catalog_transaction(tmp_path, db, "rollback")
    assert db.with_name("hot.db-journal").exists()
    result = record_briefly(sim, db, "after")
    assert result.returncode == 0, result.stderr
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert stored_status(db, "after") == "completed"
    assert all(rows == samples == read for rows, samples, read in group_rows(db, "after").values())


async def test_a_wall_clock_set_back_never_puts_a_resumed_session_before_the_recorded_one(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """The wall clock was stepped back 20 s while the run recorded (an NTP step; a PC that
    lost its time). The resumed session used to start at dt_s -19 on the run's timeline: its
    first tick lay 19 s in the future, so a resume with --duration recorded nothing at all
    (and one without would have written dt_s overlapping the recorded ones). It now starts
    where the recording stopped."""
    config = MonitorConfig(run_name="clock", db=db_path, interval_s=0.02)
    await record_until_committed(config, stm, 5)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET run_start_epoch = run_start_epoch + 20")
    before = {table: n for table, (n, _, _) in group_rows(db_path, "clock").items()}

    resumed = load_resume_config(db_path, "clock").updated(duration_s=0.3)
    summary = await Recorder(resumed, {"stm": stm}, resume=True).run()
    assert summary.status == "completed"
    (_, end0), (start1, _) = query(
        db_path, "SELECT start_dt_s, end_dt_s FROM sessions ORDER BY session_idx"
    )
    assert start1 >= end0
    for group, (rows, samples, read) in group_rows(db_path, "clock").items():
        assert rows == samples == read and rows > before[group], "the resume recorded"
        dts = [dt for (dt,) in query(db_path, f'SELECT dt_s FROM "clock/{group}" ORDER BY 1')]
        in_order = [dt for (dt,) in query(db_path, f'SELECT dt_s FROM "clock/{group}"')]
        assert in_order == dts and dts[0] >= 0, "dt_s rises with sample_idx"


def test_a_heartbeat_from_the_future_is_explained(db_path: Path) -> None:
    """A run whose heartbeat lies ahead of this computer's clock (set back after a crash)
    looks live; resuming it was refused as 'still recording (heartbeat -3600.0 s ago)'."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executescript(
            "CREATE TABLE runs (run_name TEXT, status TEXT, heartbeat_epoch REAL,"
            " stale_after_s REAL);"
            "INSERT INTO runs VALUES ('late', 'running', 1e9 + 3600, 5.0);"
        )
    with pytest.raises(ConfigError, match=r"3600\.0 s in the future .* correct the clock"):
        load_resume_config(db_path, "late", now=1e9)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_after_the_duration_ended_keeps_exit_code_0(sig: signal.Signals) -> None:
    """SIGTERM arriving while a `--duration` run wrote its last commit (reproduced with
    `run --duration 1`, SIGTERM once `last_dt_s` reached 0.99 s: 6 of 6) left the run
    `completed` — in the database and the --json summary — but exited 143, which says
    `interrupted` to a script. The exit code follows the recorded status."""
    summary = RunSummary(run_name="d", run_id=1, db="x.db", status="completed", duration_s=1.0)
    assert exit_code_for(RunOutcome(summary, int(sig))) == 0
    stopped = RunSummary(run_name="d", run_id=1, db="x.db", status="interrupted", duration_s=0.5)
    assert exit_code_for(RunOutcome(stopped, int(sig))) == 128 + int(sig)
