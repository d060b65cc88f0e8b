"""Shared fixtures: every test must leave no tasks, threads or instruments behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_CONFIG_DIR = tempfile.mkdtemp(prefix="trajmon-test-config-")


def pytest_configure(config: pytest.Config) -> None:
    """No test reads or clears the operator's real staged config (~/.config/trajmon), not
    even subprocesses whose environment was copied at import time (tests/procs.py)."""
    os.environ["TRAJMON_CONFIG"] = os.path.join(_CONFIG_DIR, "config.json")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CONFIG_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _staged_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Each test stages into its own file (``trajmon config``), empty at the start."""
    path = tmp_path / "trajmon-config.json"
    monkeypatch.setenv("TRAJMON_CONFIG", str(path))
    return path


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test that leaves an instrument worker, simulator server or SQLite connection thread
    running fails."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and (
            t.name.startswith(("trajmon-", "asyncio_", "nanonis-sim"))
            or t.name.endswith("(_connection_worker_thread)")  # aiosqlite's, never closed
        )
    ]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Like ophyd-async's fixture: a test that leaves tasks running on its loop fails."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for t in leaked:
        t.cancel()
    assert not leaked, f"test leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture(autouse=True)
def _close_instruments() -> Iterator[None]:
    yield
    from qcodes.instrument import Instrument

    Instrument.close_all()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs: a disk that really fills (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
