"""Shared fixtures: every test must leave no tasks, threads or instruments behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test that leaves an instrument worker or server thread running fails."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name.startswith(("trajmon-", "asyncio_"))
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
