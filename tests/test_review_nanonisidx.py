"""The Nanonis driver's signal index map over a long run: the operator may reconfigure the
controller's signal list (Signals Manager) while trajmon records. The driver looks signals up
by name in ``Signals.NamesGet`` and reads them by index; an index kept after the list changed
reads another signal under the old label. It fetches the list again every ``signal_check_s``
and reports a moved signal once (``SignalListChanged``) before reading it at its new index.

The simulator's ``set_signal_layout`` is the operator's reconfiguration. Time is injected: the
driver's clock decides when the list is due again, and the end-to-end run is on a FakeClock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from simulators.nanonis_server import NanonisServer
from simulators.stm_model import SIGNAL_NAMES, STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon import ChannelSpec, FakeClock, MonitorConfig, Recorder
from trajmon.drivers.nanonis import NanonisError, NanonisSTM

CURRENT, INPUT1, Z = "Current (A)", "Input 1 (V)", "Z (m)"
# The operator swaps the first two entries: index 0, where the driver found the current at
# connect, now serves Input 1 (the preamplifier output: 0.1 V where the current is 1e-10 A).
SWAPPED = [INPUT1, CURRENT, *SIGNAL_NAMES[2:]]


class Now:
    """The driver's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def model() -> STMModel:
    return STMModel(seed=3, clock=lambda: 0.0, noise=False, drift=False)


@pytest.fixture
def server(model: STMModel) -> Iterator[ThreadedNanonisServer]:
    with ThreadedNanonisServer(model) as srv:
        yield srv


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def stm(server: ThreadedNanonisServer, now: Now) -> Iterator[NanonisSTM]:
    instr = NanonisSTM("stm_idx", port=server.port, timeout=2.0, clock=now)
    yield instr
    instr.close()


def test_the_simulator_serves_a_reconfigured_signal_list(
    server: ThreadedNanonisServer, model: STMModel
) -> None:
    """The operator's step, seen by a client that looks the names up after it."""
    server.server.set_signal_layout(SWAPPED, names=["Renamed (V)", *SWAPPED[1:]])
    late = NanonisSTM("stm_late", port=server.port, timeout=2.0)
    try:
        assert late.signal_names()[:2] == ["Renamed (V)", CURRENT]
        assert late.read_signals([CURRENT, "Renamed (V)"]) == [
            model.get_current(),
            model.signal_values([SIGNAL_NAMES.index(INPUT1)])[0],
        ]
    finally:
        late.close()
    with pytest.raises(ValueError, match="unknown sources"):
        server.server.set_signal_layout(["Nope (V)"])
    with pytest.raises(ValueError, match="one name per source"):
        server.server.set_signal_layout([CURRENT], names=[])


def test_a_reordered_signal_list_is_reported_then_followed_by_name(
    server: ThreadedNanonisServer, model: STMModel, stm: NanonisSTM, now: Now
) -> None:
    """After the swap, index 0 is Input 1. The old driver went on reading it as the current
    (0.1 instead of 1e-10), for the rest of the run."""
    true_current = model.get_current()
    assert stm.get_many([stm.current, stm.bias]) == [true_current, model.get_bias()]
    server.server.set_signal_layout(SWAPPED)
    now.t += stm.signal_check_s
    first = stm.get_many([stm.current, stm.bias])
    assert type(first[0]).__name__ == "SignalListChanged", first
    assert "'Current (A)' was at index 0 and is now at index 1" in str(first[0])
    assert first[1] == model.get_bias(), "an entry of another command is not affected"
    for _ in range(3):
        assert stm.get_many([stm.current, stm.bias]) == [true_current, model.get_bias()]
    assert stm.current() == true_current


def test_a_signal_that_leaves_the_list_is_never_read_at_its_old_index(
    server: ThreadedNanonisServer, stm: NanonisSTM, now: Now
) -> None:
    """Renamed in the Signals Manager: 'Z (m)' is no longer listed, its index serves on."""
    assert isinstance(stm.get_many([stm.z_position])[0], float)
    server.server.set_signal_layout(SIGNAL_NAMES, names=[*SIGNAL_NAMES[:6], "Z rel (m)"])
    now.t += stm.signal_check_s
    first, later = stm.get_many([stm.z_position])[0], stm.get_many([stm.z_position])[0]
    assert type(first).__name__ == "SignalListChanged", first
    assert "'Z (m)' was at index 6 and is no longer listed" in str(first)
    assert isinstance(later, ValueError) and "not in the controller's list" in str(later)


def test_read_signals_reports_the_change_too(
    server: ThreadedNanonisServer, model: STMModel, stm: NanonisSTM, now: Now
) -> None:
    assert stm.read_signals([CURRENT, Z]) == [model.get_current(), model.get_z()]
    server.server.set_signal_layout(SWAPPED)
    now.t += stm.signal_check_s
    with pytest.raises(Exception, match=r"'Current \(A\)' was at index 0") as info:
        stm.read_signals([CURRENT, Z])
    assert type(info.value).__name__ == "SignalListChanged"
    assert stm.read_signals([CURRENT, Z]) == [model.get_current(), model.get_z()]


def test_the_list_is_fetched_once_per_signal_check_period_not_per_read(
    server: ThreadedNanonisServer, stm: NanonisSTM, now: Now
) -> None:
    """The guard's cost: one Signals.NamesGet per ``signal_check_s`` of signal reads, none for
    reads without a signal (the spec group's)."""
    counts = server.server.request_counts
    assert counts["Signals.NamesGet"] == 1  # the connect
    for _ in range(5):
        stm.get_many([stm.current, stm.z_position])
        stm.get_many([stm.bias])
        now.t += stm.signal_check_s / 10
    assert counts["Signals.NamesGet"] == 1
    now.t += stm.signal_check_s
    stm.get_many([stm.bias])
    assert counts["Signals.NamesGet"] == 1, "a read without signals does not check"
    stm.get_many([stm.current, stm.z_position])
    stm.get_many([stm.current, stm.z_position])
    assert counts["Signals.NamesGet"] == 2


def test_a_failed_list_fetch_fails_the_signals_not_the_other_entries(
    server: ThreadedNanonisServer, model: STMModel, stm: NanonisSTM, now: Now
) -> None:
    """Without the list, the indexes cannot be trusted: no value is read at them."""
    server.faults.error_next(1, "Signals.NamesGet", "busy")
    now.t += stm.signal_check_s
    vals_before = server.server.request_counts["Signals.ValsGet"]
    out = stm.get_many([stm.current, stm.bias])
    assert isinstance(out[0], NanonisError) and "busy" in str(out[0])
    assert out[1] == model.get_bias()
    assert server.server.request_counts["Signals.ValsGet"] == vals_before
    assert stm.get_many([stm.current])[0] == model.get_current(), "checked again next time"


def test_a_changed_list_after_a_reconnect_is_reported_too(
    server: ThreadedNanonisServer, model: STMModel, stm: NanonisSTM
) -> None:
    """The controller restarted with another layout: the reconnect's fresh list moves the
    index, and the record says so rather than re-mapping silently."""
    assert stm.get_many([stm.current])[0] == model.get_current()
    server.stop()
    server.server.set_signal_layout(SWAPPED)
    server.start()
    first = stm.get_many([stm.current])[0]  # the dropped connection: reconnects at once
    if isinstance(first, ConnectionError):
        first = stm.get_many([stm.current])[0]
    assert type(first).__name__ == "SignalListChanged", first
    assert stm.get_many([stm.current])[0] == model.get_current()


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_signal_check_s_is_validated(server: ThreadedNanonisServer, value: float) -> None:
    with pytest.raises(ValueError, match="signal_check_s"):
        NanonisSTM("stm_bad", port=server.port, signal_check_s=value)


# -- end to end: a recording on a FakeClock -------------------------------------------------


async def test_a_recording_never_stores_another_signal_under_the_label(db_path: Path) -> None:
    """trajmon run with ``signal_check_s=0`` (the list checked before every signal read): the
    swap mid-run is one ``SignalListChanged`` row, and every stored current is a current."""
    clock = FakeClock()
    model = STMModel(seed=5, clock=clock.monotonic, noise=False, drift=False)
    channels = [
        ChannelSpec(label="Current", source="stm_e2e.current", kind="signal"),
        ChannelSpec(label="Z", source="stm_e2e.z_position", kind="signal"),
        ChannelSpec(label="Bias", source="stm_e2e.bias", kind="spec"),
    ]
    config = MonitorConfig(run_name="relayout", db=db_path, channels=channels, interval_s=0.1)
    async with NanonisServer(model) as srv:
        stm = await anyio.to_thread.run_sync(
            lambda: NanonisSTM(
                "stm_e2e", port=srv.port, timeout=5.0, clock=clock.monotonic, signal_check_s=0.0
            )
        )
        try:
            recorder = Recorder(config, {"stm_e2e": stm}, clock=clock)
            summary: list[Any] = []

            async def ticks(n: int) -> None:
                for _ in range(n):
                    target = min(s.samples_read for s in recorder.stats) + 1
                    await clock.advance(0.1)
                    with anyio.fail_after(10):
                        await recorder.wait_until(
                            lambda t=target: min(s.samples_read for s in recorder.stats) >= t
                        )

            async def record() -> None:
                summary.append(await recorder.run())

            async with anyio.create_task_group() as tg:
                tg.start_soon(record)
                with anyio.fail_after(10):
                    await recorder.wait_until(
                        lambda: min(s.samples_read for s in recorder.stats) >= 1
                    )
                await ticks(3)
                srv.set_signal_layout(SWAPPED)
                await ticks(4)
                recorder.request_stop()
        finally:
            await anyio.to_thread.run_sync(stm.close)
    assert summary[0].status == "interrupted", summary[0].status  # request_stop: no duration
    with closing(sqlite3.connect(db_path)) as conn:
        table = next(
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if name.startswith("relayout/") and "spec" not in name
        )
        currents = [r[0] for r in conn.execute(f'SELECT "Current" FROM "{table}"')]
        errors = conn.execute("SELECT channel, error_type, message FROM monitor_errors").fetchall()
    assert len(currents) >= 8
    stored = [c for c in currents if c is not None]
    assert stored and all(abs(c) < 1e-6 for c in stored), f"Input 1 stored as current: {stored}"
    assert currents[-1] is not None, "read again at its new index"
    assert [(c, t) for c, t, _ in errors] == [("Current", "SignalListChanged")], errors
    assert "was at index 0 and is now at index 1" in errors[0][2]
