"""Promises 1-3 of the reliability issue, on the real CLI in subprocesses against the TCP
simulator: SIGINT/SIGTERM lose nothing, SIGKILL loses at most one commit interval and leaves a
consistent database, and a killed run can be resumed."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from procs import (
    ENV,
    TRAJMON,
    committed_samples,
    group_rows,
    needs_sighup,
    query,
    run_args,
    run_cli,
    sim_process,
    start_run,
    wait_for,
)

# A random moment, but a reproducible one when a failure needs replaying.
RNG = random.Random(20261121)


def wait_recording(db: Path, name: str, proc: subprocess.Popen[str], samples: int = 4) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"trajmon exited early: {proc.communicate()}")
        return committed_samples(db, name) >= samples

    wait_for(ready, timeout=30, what=f"{name} to commit samples")


@pytest.mark.parametrize(
    ("sig", "code", "twice"),
    [
        (signal.SIGINT, 130, False),
        (signal.SIGTERM, 143, False),
        (signal.SIGINT, 130, True),  # a second Ctrl-C during shutdown
    ],
)
def test_signal_stops_drains_and_loses_nothing(
    tmp_path: Path, sig: signal.Signals, code: int, twice: bool
) -> None:
    db = tmp_path / "sig.db"
    with sim_process(tmp_path) as sim:
        proc = start_run(db, "sig", sim.port)
        wait_recording(db, "sig", proc)
        time.sleep(RNG.uniform(0.0, 0.6))  # the random moment the operator presses Ctrl-C
        proc.send_signal(sig)
        if twice:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert "interrupted" in out, out
        ((status,),) = query(db, "SELECT status FROM runs WHERE run_name = 'sig'")
        assert status == "interrupted"
        rows = group_rows(db, "sig")
        for group, (count, samples, read) in rows.items():
            assert count == samples == read, group
        # Every Signals.ValsGet the simulator answered is a committed signal sample.
        assert sim.requests("Signals.ValsGet") == rows["signals"][0]
        assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_sigkill_keeps_the_database_consistent_and_loses_at_most_one_commit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kill.db"
    interval, commit = 0.1, 0.25
    with sim_process(tmp_path) as sim:
        for attempt in range(3):
            name = f"kill-{attempt}"
            before = sim.requests("Signals.ValsGet")
            proc = start_run(db, name, sim.port, "--stale-after-s", "2.5")
            wait_recording(db, name, proc, samples=2)
            time.sleep(RNG.uniform(0.1, 1.5))
            proc.kill()
            proc.communicate(timeout=10)
            assert query(db, "PRAGMA integrity_check") == [("ok",)]
            rows = group_rows(db, name)
            for group, (count, samples, _) in rows.items():
                assert count == samples, group  # counters are committed with the rows
            answered = sim.requests("Signals.ValsGet") - before
            lost = answered - rows["signals"][0]
            # At most one commit interval of ticks, plus the read in flight.
            assert 0 <= lost <= commit / interval + 2, (answered, rows)
            for table in ("runs", "actions", "monitor_errors", f"{name}/specs"):
                query(db, f'SELECT * FROM "{table}"')  # every committed row is readable
        crashed = run_cli("status", "kill-0", "--db", str(db), "--json")
        if crashed.returncode == 0:  # the status command reports the stale heartbeat
            assert '"crashed"' in crashed.stdout
        from trajmon.queries import connect_readonly, list_runs

        conn = connect_readonly(db)
        try:  # three seconds on, every heartbeat is past the 2.5 s threshold of these runs
            assert {r["status"] for r in list_runs(conn, now=time.time() + 3)} == {"crashed"}
        finally:
            conn.close()

        again = run_cli(*run_args(db, "after", sim.port, "--duration", "1", "--quiet"))
        assert again.returncode == 0, again.stderr
        resumed = run_cli(
            "run",
            "--resume",
            "kill-1",
            "--host",
            "127.0.0.1",
            "--port",
            str(sim.port),
            "--db",
            str(db),
            "--duration",
            "1",
            "--quiet",
        )
        assert resumed.returncode == 0, resumed.stderr
    ((status, sessions),) = query(db, "SELECT status, sessions FROM runs WHERE run_name = 'kill-1'")
    assert (status, sessions) == ("completed", 2)
    idx = [r[0] for r in query(db, 'SELECT sample_idx FROM "kill-1/signals" ORDER BY 1')]
    assert idx == list(range(len(idx)))


def test_resume_of_unknown_or_completed_run_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    done = run_cli("run", "--run-name", "done", "--sim", "--duration", "0.5", "--db", str(db))
    assert done.returncode == 0, done.stderr
    before = db.read_bytes()
    for name, message in (("done", "it is completed"), ("nope", "unknown run 'nope'")):
        refused = run_cli("run", "--resume", name, "--sim", "--db", str(db))
        assert refused.returncode == 2
        assert message in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=needs_sighup)])
def test_an_export_stopped_by_sigterm_or_sighup_removes_its_files(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Only Ctrl-C cleaned up: SIGTERM or a closed terminal killed the process with finished
    files and a .partial file left, and the retry was refused ("already exists")."""
    from benchmarks.fixture import RUN, build

    db, out = tmp_path / "big.db", tmp_path / "out"
    build(db, 200_000)  # a run the export needs a while for, in small chunks
    proc = subprocess.Popen(
        [*TRAJMON, "export", RUN, "--db", str(db), "-o", str(out), "--chunk-rows", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        wait_for(lambda: any(out.rglob("*.partial")) or proc.poll() is not None, what="export")
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "export stopped; its files were removed" in err
    assert not [p for p in out.rglob("*") if p.is_file()]
    retry = run_cli("export", RUN, "--db", str(db), "-o", str(out))
    assert retry.returncode == 0, retry.stderr
