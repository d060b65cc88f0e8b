"""Promise 5: storage faults end the run with one clear line and exit code 1, and keep
everything committed before the fault."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from procs import committed_samples, group_rows, query, run_cli, sim_process, start_run, wait_for

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder, RunFailedError
from trajmon import connection as connection_module
from trajmon.schema import migrate


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("trajmon: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_unwritable_path_is_exit_1_with_one_line(tmp_path: Path) -> None:
    db = Path("/proc/trajmon-cannot-write-here.db")
    result = run_cli("run", "--run-name", "x", "--sim", "--duration", "1", "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert "database" in one_line_error(result.stderr)


@pytest.mark.parametrize("parent", ["missing", "a-file"])
def test_a_database_in_a_directory_that_is_not_one_says_so(tmp_path: Path, parent: str) -> None:
    """It said "<dir> is not writable" for a directory that does not exist."""
    (tmp_path / "a-file").touch()
    db = tmp_path / parent / "runs.db"
    result = run_cli("run", "--run-name", "x", "--sim", "--duration", "1", "--db", str(db))
    assert result.returncode == 1, result.stderr
    expected = "does not exist" if parent == "missing" else "is not a directory"
    assert f"{tmp_path / parent} {expected}" in one_line_error(result.stderr)
    assert not (tmp_path / "missing").exists()


def test_read_only_filesystem_keeps_existing_runs(small_fs: Path) -> None:
    db = small_fs / "ro.db"
    first = run_cli("run", "--run-name", "a", "--sim", "--duration", "0.5", "--db", str(db))
    assert first.returncode == 0, first.stderr
    before = group_rows(db, "a")
    # As an archived copy arrives: the database file alone (every connection closed, so the
    # write-ahead log is checkpointed and gone, and the -shm index can go too).
    wal, shm = (db.with_name(db.name + suffix) for suffix in ("-wal", "-shm"))
    assert not wal.exists() or wal.stat().st_size == 0
    shm.unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    result = run_cli("run", "--run-name", "b", "--sim", "--duration", "1", "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert "not writable" in one_line_error(result.stderr)
    # Still readable, unchanged, where SQLite cannot create the -shm file a WAL database needs.
    listed = run_cli("runs", "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)["runs"]
    assert run["run_name"] == "a"
    assert (run["signal_samples"], run["spec_samples"]) == (
        before["signals"][1],
        before["specs"][1],
    )
    exported = run_cli("export", "a", "--db", str(db), "--out", str(small_fs.parent / "out"))
    assert exported.returncode == 0, exported.stderr


def test_disk_filling_mid_run_fails_cleanly(small_fs: Path, tmp_path: Path) -> None:
    db = small_fs / "full.db"
    with sim_process(tmp_path) as sim:
        proc = start_run(db, "full", sim.port, "--interval-s", "0.002")
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, (out, err)
    assert "full" in one_line_error(err)
    copy = tmp_path / "copy.db"  # read what survived without touching the full filesystem
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    assert query(copy, "PRAGMA integrity_check") == [("ok",)]
    for group, (count, samples, _) in group_rows(copy, "full").items():
        assert count == samples > 0, group


def test_foreign_writer_lock_is_exit_1_and_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    with sim_process(tmp_path) as sim:
        proc = start_run(db, "locked", sim.port)
        wait_for(lambda: committed_samples(db, "locked") >= 4, what="samples")
        with closing(sqlite3.connect(db, isolation_level=None)) as foreign:
            foreign.execute("BEGIN IMMEDIATE")  # another program grabs the write lock
            committed = group_rows(db, "locked")
            out, err = proc.communicate(timeout=60)
            foreign.execute("ROLLBACK")
    assert proc.returncode == 1, (out, err)
    assert "locked" in one_line_error(err)
    after = group_rows(db, "locked")
    for group, (count, samples, _) in after.items():
        assert count == samples >= committed[group][0], group
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_two_recorders_creating_one_new_database_together_both_get_it(tmp_path: Path) -> None:
    """Switching a new file to WAL gets "database is locked" at once (no busy wait) while the
    other creator holds a lock: about 1 try in 10 failed before migrate retried it."""
    failures: list[str] = []
    for attempt in range(60):
        db = tmp_path / f"new{attempt}.db"
        together = threading.Barrier(2)

        def create(db: Path = db, together: threading.Barrier = together) -> None:
            with closing(sqlite3.connect(db, timeout=2.0)) as conn:
                together.wait()
                try:
                    migrate(conn)
                    conn.execute("SELECT count(*) FROM runs").fetchone()
                except sqlite3.Error as exc:
                    failures.append(f"{db.name}: {exc}")

        threads = [threading.Thread(target=create) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


async def test_full_database_marks_the_run_failed(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLite's max_page_count as the "disk", the run row itself can still be updated."""
    real_open = connection_module.open_connection

    async def small_disk(path: Path) -> object:
        conn = await real_open(path)
        (pages,) = await (await conn.execute("PRAGMA page_count")).fetchone()  # type: ignore[misc]
        await conn.execute(f"PRAGMA max_page_count = {int(pages) + 40}")
        return conn

    monkeypatch.setattr("trajmon.recorder.open_connection", small_disk)
    stm = SimulatedSTM("stm", seed=3)
    try:
        config = MonitorConfig(run_name="small", db=db_path, interval_s=0.001)
        with pytest.raises(RunFailedError, match="full") as info:
            with anyio.fail_after(60):
                await Recorder(config, {"stm": stm}).run()
    finally:
        stm.close()
    assert info.value.summary.status == "failed"
    with closing(sqlite3.connect(db_path)) as conn:
        status, message = conn.execute("SELECT status, message FROM runs").fetchone()
        counts = conn.execute("SELECT table_name, samples FROM poll_groups").fetchall()
        for table, samples in counts:
            assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == samples > 0
    assert status == "failed" and "full" in message


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_export_to_a_full_disk_is_exit_1_and_leaves_no_partial_file(
    small_fs: Path, tmp_path: Path, fmt: str
) -> None:
    """HDF5 retries its failed writes at close and, failing again, left h5py to crash the
    interpreter at exit (exit 139 after the error line): every format ends with exit 1."""
    db = tmp_path / "ok.db"
    first = run_cli("run", "--run-name", "a", "--sim", "--duration", "0.5", "--db", str(db))
    assert first.returncode == 0, first.stderr
    before = group_rows(db, "a")
    filler = small_fs / "filler"
    with filler.open("wb") as f:  # leave a few kilobytes: the export runs out part way
        f.write(b"\0" * (600 * 1024 - 12 * 1024))
    result = run_cli("export", "a", "--db", str(db), "-f", fmt, "--out", str(small_fs))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "No space left" in one_line_error(result.stderr)
    assert "Traceback" not in result.stderr
    assert not list(small_fs.rglob("*.partial"))
    assert group_rows(db, "a") == before
