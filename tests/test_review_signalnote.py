"""A channel whose Nanonis signal the controller does not list at the start of a run.

The operator's Signals Manager may name the current otherwise ("Current (nA)" after a relayout,
or another station's layout). ``trajmon run --host H --port P`` recorded nothing but failed reads
of that channel and exited 0: the operator found out hours later. Now the run says so before its
first read, one ``trajmon: note:`` line per channel (label, signal, closest listed names), and
records the other channels; ``list-signals`` with a station says the same.

The simulator's ``set_signal_layout`` is the operator's relayout, made before the run connects.
The CLI run is recorded on a FakeClock and stopped once every group has read once: no timing.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from qcodes.instrument import Instrument
from qcodes.parameters import Parameter
from typer.testing import CliRunner

from simulators.qcodes_sim import SimulatedSTM
from simulators.stm_model import SIGNAL_NAMES
from simulators.threaded_server import ThreadedNanonisServer
from trajmon import FakeClock, MonitorConfig, Recorder
from trajmon.cli import app
from trajmon.cli.runner import RunOutcome
from trajmon.drivers.nanonis import NanonisSTM
from trajmon.resolve import build_groups

CURRENT = "Current (A)"
RENAMED = [n.replace(CURRENT, "Current (nA)") for n in SIGNAL_NAMES]
NOTE = (
    "trajmon: note: 'Tunnel Current' (stm.current) cannot be read now: signal 'Current (A)' is"
    " not in the controller's list (closest listed: 'Current (nA)'); its reads fail until that"
    " changes; the other channels are recorded"
)


@pytest.fixture
def relayout() -> Iterator[ThreadedNanonisServer]:
    """A controller whose Signals Manager calls the current "Current (nA)"."""
    with ThreadedNanonisServer() as srv:
        srv.server.set_signal_layout(SIGNAL_NAMES, names=RENAMED)
        yield srv


def _stderr_so_far() -> str:
    """What the command wrote to stderr until now (CliRunner's capture)."""
    sys.stderr.flush()
    return bytes(sys.stderr.buffer.getvalue()).decode()  # CliRunner's stream is a BytesIO


def test_a_run_notes_an_unlisted_signal_before_its_first_read_and_records_the_rest(
    relayout: ThreadedNanonisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said_before_recording: list[str] = []

    async def record_once(config: MonitorConfig, instruments: dict[str, Any], **_: Any) -> Any:
        said_before_recording.append(_stderr_so_far())
        recorder = Recorder(config, instruments, clock=FakeClock())
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(20):
                await recorder.wait_until(lambda: min(s.samples_read for s in recorder.stats) >= 1)
            recorder.request_stop()
            with anyio.fail_after(20):
                await recorder.ended.wait()
        assert recorder.summary is not None
        return RunOutcome(recorder.summary, None)

    monkeypatch.setattr("trajmon.cli.run_cmd.record", record_once)
    db = tmp_path / "r.db"
    args = ["run", "--host", "127.0.0.1", "--port", str(relayout.port)]
    result = CliRunner().invoke(app, [*args, "--db", str(db), "--run-name", "r", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [NOTE]
    assert said_before_recording == [NOTE + "\n"]
    with closing(sqlite3.connect(db)) as conn:
        current, z = conn.execute(
            'SELECT "Tunnel Current", "Z Position" FROM "r/signals"'
        ).fetchone()
        (errors,) = conn.execute("SELECT count(*) FROM monitor_errors").fetchone()
    assert current is None and isinstance(z, float), "the other signal is recorded"
    assert errors >= 1, "the failed reads are recorded as errors"


def test_the_driver_reports_nothing_of_a_listed_layout() -> None:
    """The note names only what is missing: a controller with the usual layout gets none."""
    with ThreadedNanonisServer() as srv:
        stm = NanonisSTM("stm_listed", port=srv.port, timeout=2.0)
        try:
            assert stm.unavailable(list(stm.parameters.values())) == {}
        finally:
            stm.close()


def test_the_driver_names_the_closest_listed_signals(relayout: ThreadedNanonisServer) -> None:
    stm = NanonisSTM("stm_unl", port=relayout.port, timeout=2.0)
    other = SimulatedSTM("stm_other")
    try:
        assert stm.unavailable([stm.current, stm.z_position, stm.bias, other.current]) == {
            stm.current: "signal 'Current (A)' is not in the controller's list"
            " (closest listed: 'Current (nA)')"
        }
        (failed,) = stm.get_many([stm.current])  # each failed read, as `trajmon status` shows
        assert (
            isinstance(failed, ValueError)
            and str(failed) == stm.unavailable([stm.current])[stm.current]
        )
        relayout.server.set_signal_layout(["Input 1 (V)"], names=["Aux"])
        stm.signal_check_s = 0.0
        stm.get_many([stm.bias, stm.current])  # a signal read fetches the list again
        assert stm.unavailable([stm.z_position]) == {
            stm.z_position: "signal 'Z (m)' is not in the controller's list"
            " (none of its 1 signals has a similar name)"
        }
    finally:
        stm.close()
        other.close()


def test_list_signals_with_a_nanonis_station_notes_it_too(
    relayout: ThreadedNanonisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("station.yaml").write_text(
        "instruments:\n  stm:\n    type: trajmon.drivers.nanonis.NanonisSTM\n"
        f"    address: 127.0.0.1\n    port: {relayout.port}\n",
        encoding="utf-8",
    )
    Path("channels.yaml").write_text(
        "channels:\n"
        "  - {parameter: stm.current, label: I, kind: signal}\n"
        "  - {parameter: stm.z_position, label: Z, kind: signal}\n"
        "  - {parameter: stm.bias, label: Bias, kind: spec}\n",
        encoding="utf-8",
    )
    where = ["--station", "station.yaml", "--channels", "channels.yaml", "--config-path", "c.yaml"]
    listed = CliRunner().invoke(app, ["list-signals", *where, "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"label": "I"' in listed.stdout and '"label": "Z"' in listed.stdout
    assert listed.stderr.splitlines() == [
        "trajmon: note: 'I' (stm.current) cannot be read now: signal 'Current (A)' is not in"
        " the controller's list (closest listed: 'Current (nA)'); a run records only failed"
        " reads of it until that changes"
    ]
    specs = CliRunner().invoke(app, ["list-specs", *where])
    assert specs.exit_code == 0 and specs.stderr == "", specs.output


class _Asks(Instrument):
    """A driver with the optional method, and one whose ``unavailable`` is a parameter."""

    def __init__(self, name: str, answer: Any) -> None:
        super().__init__(name)
        self.answer = answer
        self.v: Parameter = self.add_parameter("v", get_cmd=lambda: 1.0, set_cmd=False)

    def unavailable(self, params: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return {p: self.answer for p in params}


class _ParamNamedUnavailable(Instrument):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sets: list[object] = []
        self.v: Parameter = self.add_parameter("v", get_cmd=lambda: 1.0, set_cmd=False)
        self.add_parameter("unavailable", get_cmd=lambda: {}, set_cmd=self.sets.append)


def test_drivers_are_asked_only_through_a_method_and_their_faults_only_noted() -> None:
    from trajmon import ChannelSpec
    from trajmon.cli.sources import unavailable_notes

    says, fails = _Asks("says", "offline"), _Asks("fails", OSError("boom"))
    plain = _ParamNamedUnavailable("plain")
    try:
        instruments: dict[str, Any] = {"says": says, "fails": fails, "plain": plain}
        config = MonitorConfig(
            run_name="n",
            channels=[
                ChannelSpec(source=f"{n}.v", label=f"{n} v", kind="signal") for n in instruments
            ],
        )
        channels = [ch for g in build_groups(config, instruments) for ch in g.channels]
        assert unavailable_notes(channels, instruments, "then") == [
            "trajmon: note: 'says v' (says.v) cannot be read now: offline; then",
            "trajmon: note: fails: cannot tell which channels it can read (OSError: boom)",
        ]
        assert plain.sets == [], "a parameter called unavailable is never called (set)"
    finally:
        for instrument in (says, fails, plain):
            instrument.close()
