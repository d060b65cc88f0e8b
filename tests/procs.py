"""Helpers for tests that drive trajmon and the simulator as separate processes.

Waiting here is for another *process* to reach a state (a port to listen, rows to appear),
always with a deadline; nothing waits for a fixed time to "let things settle".
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TRAJMON = [sys.executable, "-m", "trajmon"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class SimProcess:
    proc: subprocess.Popen[str]
    port: int
    request_log: Path

    def requests(self, command: str) -> int:
        if not self.request_log.exists():
            return 0
        lines = self.request_log.read_text(encoding="utf-8").splitlines()
        return sum(1 for line in lines if json.loads(line)["command"] == command)


@contextmanager
def sim_process(tmp: Path, *args: str) -> Iterator[SimProcess]:
    """``trajmon sim serve`` on a free port, with a request log."""
    log = tmp / f"requests-{time.monotonic_ns()}.jsonl"
    proc = subprocess.Popen(
        [*TRAJMON, "sim", "serve", "--port", "0", "--request-log", str(log), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, (
            f"simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
        yield SimProcess(proc, int(match.group(1)), log)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def run_args(db: Path, name: str, port: int, *args: str) -> list[str]:
    """The arguments of ``trajmon run`` of run ``name`` into ``db`` from the simulator on
    ``port`` (for :func:`run_cli`, or after :data:`TRAJMON`)."""
    return [
        "run", "--run-name", name, "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
        *args,
    ]  # fmt: skip


def start_run(db: Path, name: str, port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TRAJMON, *run_args(db, name, port, "--quiet", *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


#: A test that sends SIGHUP to a child needs the child to start with SIGHUP at its default.
#: Under ``nohup pytest`` every child inherits it ignored, and trajmon rightly keeps an ignored
#: SIGHUP ignored (test_a_hangup_under_nohup_is_still_ignored), so those tests cannot run there.
needs_sighup = pytest.mark.skipif(
    signal.getsignal(signal.SIGHUP) is signal.SIG_IGN,
    reason="SIGHUP is ignored in this process (nohup): its children cannot receive it",
)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAJMON, *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )


def query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read-only look at the database, as another process would take it."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql, args).fetchall()


def committed_samples(db: Path, name: str) -> int:
    if not db.exists():
        return 0
    try:
        rows = query(
            db,
            "SELECT coalesce(sum(g.samples), 0) FROM poll_groups g JOIN runs r USING (run_id)"
            " WHERE r.run_name = ?",
            (name,),
        )
    except sqlite3.Error:
        return 0
    return int(rows[0][0])


def heartbeat_dt_s(db: Path, name: str) -> float:
    """Seconds into run ``name`` of its last heartbeat; 0.0 until it has one.

    ``trajmon run`` creates the file before it commits the catalog and the run row in it: a
    look in between finds no ``runs`` table (or no row), which means "not yet", as in
    :func:`committed_samples` — not a failure of the run being watched."""
    if not db.exists():
        return 0.0
    try:
        rows = query(db, "SELECT heartbeat_dt_s FROM runs WHERE run_name = ?", (name,))
    except sqlite3.Error:
        return 0.0
    return float(rows[0][0]) if rows and rows[0][0] is not None else 0.0


def group_rows(db: Path, name: str) -> dict[str, tuple[int, int, int]]:
    """group -> (rows in its table, samples committed, samples read)."""
    out = {}
    for group, table, samples, read in query(
        db,
        "SELECT g.name, g.table_name, g.samples, g.samples_read FROM poll_groups g"
        " JOIN runs r USING (run_id) WHERE r.run_name = ?",
        (name,),
    ):
        (count,) = query(db, f'SELECT count(*) FROM "{table}"')[0]
        out[group] = (int(count), int(samples), int(read))
    return out
