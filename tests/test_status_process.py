"""``trajmon status`` from a second process while ``trajmon run`` records: never locked, right
status through the run's whole life — running, interrupted by SIGINT, crashed by SIGKILL."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from procs import ENV, TRAJMON, committed_samples, run_cli, wait_for
from typer.testing import CliRunner

from trajmon.cli import app

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
runner = CliRunner()


def start_sim_run(db: Path, name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TRAJMON, "run", "--run-name", name, "--sim", "--db", str(db), "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def status_of(db: Path, *args: str) -> dict[str, Any] | None:
    """``status --json`` as a separate process, as a supervising script would run it."""
    proc = run_cli("status", *args, "--db", str(db), "--json")
    assert "locked" not in proc.stderr
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_status_from_another_process_while_recording_then_sigint(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    rec = start_sim_run(db, "X")
    watch: subprocess.Popen[str] | None = None
    try:
        doc = wait_for(
            # Both kinds: the first commit can come between the instrument's signal read and
            # its spec read of the first tick (one thread reads both, one after the other).
            lambda: (
                (d := status_of(db, "X")) is not None
                and d["signal_samples"] > 0
                and d["spec_samples"] > 0
                and d
            ),
            timeout=60,
            what="a running run with samples of both kinds",
        )
        assert doc["schema"] == 1 and doc["status"] == "running" and doc["running"] is True
        assert doc["pid"] == rec.pid and doc["ended_utc"] is None
        assert doc["heartbeat_age_s"] < doc["stale_after_s"]
        assert doc["elapsed_s"] > 0 and doc["spec_samples"] > 0
        assert all(g["achieved_rate_hz"] is not None for g in doc["groups"])
        watch = subprocess.Popen(
            [*TRAJMON, "status", "X", "--db", str(db), "--watch", "--json", "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["status"] == "running"
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 130, err
        rest, werr = watch.communicate(timeout=30)
        assert watch.returncode == 0, werr
        assert json.loads(rest.splitlines()[-1])["status"] == "interrupted"
    finally:
        for proc in (rec, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    final = status_of(db, "X")
    assert final is not None and final["status"] == "interrupted"
    assert final["lost_samples"] == 0 and final["pending_samples"] == 0
    assert final["signal_samples"] >= doc["signal_samples"]


def test_killed_run_becomes_crashed(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    stale_after_s = 2.1  # the smallest allowed (two heartbeats): the wait below is that long
    rec = start_sim_run(db, "K", "--stale-after-s", str(stale_after_s))
    try:
        wait_for(lambda: committed_samples(db, "K") > 0, timeout=60, what="committed samples")
        rec.send_signal(signal.SIGKILL)
        rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.communicate()
    assert rec.returncode == -signal.SIGKILL

    def crashed() -> dict[str, Any] | None:
        result = runner.invoke(app, ["status", "K", "--db", str(db), "--json"])
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc if doc["status"] == "crashed" else None

    doc = wait_for(crashed, timeout=30, what="the heartbeat to go stale")
    assert doc["stored_status"] == "running" and doc["heartbeat_age_s"] > stale_after_s
    assert doc["signal_samples"] > 0 and doc["running"] is False
    runs = json.loads(runner.invoke(app, ["runs", "--db", str(db), "--json"]).stdout)
    assert runs["runs"][0]["status"] == "crashed"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_impatient_signal_storm_keeps_the_summary_and_the_exit_code(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C held down: the first signal stops the run; the rest, arriving while it drains,
    closes the instrument, prints the summary and exits, must not cut any of that short."""
    db = tmp_path / "storm.db"
    rec = start_sim_run(db, "S", "--json")
    try:
        wait_for(lambda: committed_samples(db, "S") > 0, timeout=60, what="committed samples")
        deadline = time.monotonic() + 20
        while rec.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                rec.send_signal(sig)
            time.sleep(0.01)
        out, err = rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.communicate()
    assert rec.returncode == code, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and summary["lost_samples"] == 0
