"""The Nanonis driver against the simulator's TCP server (and a byte-dribbling fake for framing).

The server runs on its own event-loop thread (``ThreadedNanonisServer``) because the driver is
blocking, exactly as it is used by trajmon's per-instrument worker threads. The model's clock is
frozen, so every read of a signal returns the same value and individual gets can be compared
with batched reads exactly.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from qcodes.instrument import Instrument
from qcodes.parameters import Parameter

from simulators.stm_model import SIGNAL_NAMES, STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.drivers.nanonis import SIGNAL_CHANNELS, NanonisError, NanonisSTM
from trajmon.drivers.nanonis_params import SPECS
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    decode_header,
    encode_error,
    encode_header,
    pack_body,
    unpack_body,
)

FRAME = [
    "scan_frame_center_x",
    "scan_frame_center_y",
    "scan_frame_width",
    "scan_frame_height",
    "scan_frame_angle",
]
GAINS = ["z_p_gain", "z_time_constant", "z_i_gain"]
ALL = ["bias", "current", "z_position", "z_setpoint", "z_controller_enabled", *GAINS]
ALL += ["scan_status", *FRAME]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def model() -> STMModel:
    m = STMModel(seed=7, clock=lambda: 0.0)
    m.set_scan_frame(1e-9, -2e-9, 40e-9, 30e-9, 15.0)
    return m


@pytest.fixture
def server(model: STMModel) -> Iterator[ThreadedNanonisServer]:
    with ThreadedNanonisServer(model) as srv:
        yield srv
        # trajmon's promise: the driver never sends a command that changes the instrument.
        assert not [c for c in srv.server.request_counts if c.endswith(("Set", "Action"))]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stm(server: ThreadedNanonisServer, clock: FakeClock) -> Iterator[NanonisSTM]:
    instr = NanonisSTM(
        "stm", port=server.port, timeout=1.0, reconnect_backoff=(0.05, 0.2), clock=clock
    )
    yield instr
    Instrument.close_all()


def params(stm: NanonisSTM, names: list[str]) -> list[Parameter]:
    return [getattr(stm, n) for n in names]


def expected(model: STMModel) -> dict[str, object]:
    p, t, i = model.get_gains()
    cur, z = model.signal_values([SIGNAL_NAMES.index("Current (A)"), SIGNAL_NAMES.index("Z (m)")])
    return {
        "bias": model.get_bias(),
        "current": cur,
        "z_position": z,
        "z_setpoint": model.get_setpoint(),
        "z_controller_enabled": model.get_feedback_on(),
        "z_p_gain": p,
        "z_time_constant": t,
        "z_i_gain": i,
        "scan_status": model.get_scan_status(),
        **dict(zip(FRAME, model.get_scan_frame(), strict=True)),
    }


def test_every_parameter_reads_the_model_with_the_right_type(stm: NanonisSTM, model: STMModel):
    want = expected(model)
    for name in ALL:
        got = getattr(stm, name)()
        assert got == want[name], name
        kind = {"z_controller_enabled": bool, "scan_status": int}.get(name, float)
        assert type(got) is kind, name
    assert stm.z_position.unit == "m" and stm.z_i_gain.unit == "m/s"
    assert stm.scan_frame_angle.unit == "deg"


def test_get_many_equals_gets_and_batches(stm: NanonisSTM, server: ThreadedNanonisServer):
    counts = server.server.request_counts
    individual = [p() for p in params(stm, ALL)]
    assert stm.get_many(params(stm, ALL)) == individual
    before = counts.copy()
    assert stm.get_many(params(stm, ["current", "z_position"])) == individual[1:3]
    assert counts - before == {"Signals.ValsGet": 1}
    before = counts.copy()
    assert stm.get_many(params(stm, FRAME)) == individual[-5:]
    assert counts - before == {"Scan.FrameGet": 1}
    before = counts.copy()
    stm.get_many(params(stm, ALL))
    assert (
        sum((counts - before).values()) == 7
    )  # bias, signals, setpoint, on/off, gains, status, frame
    assert stm.current.cache.get(get_if_invalid=False) == individual[1]


def test_get_many_unknown_parameter(stm: NanonisSTM):
    stray = Parameter("stray", get_cmd=lambda: 1.0, set_cmd=False)
    out = stm.get_many([stm.bias, stray, stm.IDN])
    assert isinstance(out[0], float)
    assert isinstance(out[1], ValueError) and isinstance(out[2], ValueError)


def test_signal_names_and_read_signals(
    stm: NanonisSTM, server: ThreadedNanonisServer, model: STMModel
):
    names = stm.signal_names()
    assert set(SIGNAL_CHANNELS.values()) | {"Bias (V)"} <= set(names)
    before = server.server.request_counts["Signals.ValsGet"]
    got = stm.read_signals(["Bias (V)", "Current (A)", "Z (m)"])
    assert server.server.request_counts["Signals.ValsGet"] == before + 1
    assert got == model.signal_values(
        [names.index(n) for n in ("Bias (V)", "Current (A)", "Z (m)")]
    )
    with pytest.raises(ValueError, match="Nope"):
        stm.read_signals(["Nope"])


def test_concurrent_callers_never_interleave_requests(stm: NanonisSTM, model: STMModel):
    want = [expected(model)[n] for n in ALL]
    results: list[list[object]] = []

    def poll() -> None:
        results.extend(stm.get_many(params(stm, ALL)) for _ in range(100))

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 300 and all(r == want for r in results)


def test_parameters_are_not_settable(stm: NanonisSTM):
    for p in params(stm, ALL):
        assert not p.settable
        with pytest.raises((NotImplementedError, AttributeError, TypeError)):
            p(0)


def test_snapshot_is_batched_and_names_the_endpoint(stm: NanonisSTM, server: ThreadedNanonisServer):
    before = server.server.total_requests
    snap = stm.snapshot(update=True)
    assert server.server.total_requests - before == 7
    assert snap["address"] == "127.0.0.1" and snap["port"] == server.port
    assert snap["parameters"]["bias"]["value"] == stm.bias.cache.get(get_if_invalid=False)
    before = server.server.total_requests
    stm.snapshot(update=False)
    assert server.server.total_requests == before


@pytest.mark.parametrize(
    ("update", "every"), [("Never", False), ("Only_invalid", False), ("All", True)]
)
def test_snapshot_takes_the_update_names_of_newer_qcodes(
    stm: NanonisSTM, monkeypatch: pytest.MonkeyPatch, update: str, every: bool
) -> None:
    """QCoDeS 0.59+ (what Python 3.12+ installs) hands ``update`` on as a name: "Never" and
    "Only_invalid" were read as truthy, and every snapshot read every spec. Only this driver's
    batched read is counted; QCoDeS's own part is left out (0.58 has no names)."""
    stm.snapshot(update=True)  # every cache valid
    counted: list[int] = []
    batched = NanonisSTM.get_many

    def get_many(self: NanonisSTM, params: list[Parameter]) -> list[object]:
        counted.append(len(params))
        return batched(self, params)

    monkeypatch.setattr(NanonisSTM, "get_many", get_many)
    monkeypatch.setattr(Instrument, "snapshot_base", lambda self, **_: {})
    stm.snapshot_base(update=update)
    assert sum(counted) == (len(SPECS) if every else 0)


def test_error_reply_fails_only_the_affected_entries(
    stm: NanonisSTM, server: ThreadedNanonisServer
):
    server.faults.error_next(command="Scan.FrameGet", message="frame busy")
    out = stm.get_many(params(stm, ALL))
    for name, value in zip(ALL, out, strict=True):
        if name in FRAME:
            assert isinstance(value, NanonisError) and "frame busy" in str(value)
        else:
            assert not isinstance(value, BaseException), name
    server.faults.error_next(command="Bias.Get")
    with pytest.raises(NanonisError, match="injected error"):
        stm.bias()
    assert stm.bias() == pytest.approx(0.1)  # same connection, still in sync
    assert server.server.total_connections == 1 and stm.reconnect_count == 0


def test_hang_times_out_then_reconnects(server: ThreadedNanonisServer):
    stm = NanonisSTM("stm_hang", port=server.port, timeout=0.3)
    try:
        server.faults.hang_next(command="ZCtrl.GainGet", seconds=60)
        t0 = time.monotonic()
        out = stm.get_many(params(stm, [*GAINS, "bias"]))
        assert time.monotonic() - t0 < 1.0
        assert all(isinstance(v, TimeoutError) for v in out[:3])
        assert isinstance(out[3], ConnectionError)  # not sent: the stream was out of sync
        assert "0.3 s" in str(out[0]) and not stm.connected
        assert stm.get_many(params(stm, GAINS)) == list(server.server.model.get_gains())
        assert stm.reconnect_count == 1 and server.server.total_connections == 2
    finally:
        stm.close()


def test_dropped_connection_then_reconnect(stm: NanonisSTM, server: ThreadedNanonisServer):
    server.faults.drop_next(command="Bias.Get")
    with pytest.raises(ConnectionError, match="lost"):
        stm.bias()
    assert stm.bias() == pytest.approx(0.1)
    assert stm.reconnect_count == 1 and server.server.total_connections == 2


def test_outage_backoff_then_resume(
    stm: NanonisSTM, server: ThreadedNanonisServer, clock: FakeClock
):
    server.stop()
    with pytest.raises(ConnectionError, match="lost"):
        stm.bias()
    delays = []
    for _ in range(4):  # each attempt is refused and doubles the wait, capped at 0.2 s
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{server.port}") as info:
            stm.bias()
        assert "refused" in str(info.value)
        delays.append(float(re.findall(r"next attempt in ([0-9.]+) s", str(info.value))[-1]))
        # In backoff: no attempt (it would double the wait), the remaining wait is reported.
        out = stm.get_many(params(stm, ["bias", "current"]))
        for value in out:
            assert isinstance(value, ConnectionError)
            assert f"next reconnect attempt in {delays[-1]:.3f} s" in str(value)
        clock.now += delays[-1]
    assert delays == [0.05, 0.1, 0.2, 0.2]
    server.start()
    assert stm.bias() == pytest.approx(0.1)
    assert stm.reconnect_count == 1
    server.faults.drop_next()
    with pytest.raises(ConnectionError):
        stm.current()
    assert isinstance(stm.current(), float)  # backoff was reset: reconnects at once
    assert stm.reconnect_count == 2


def test_unreachable_at_init_is_a_clear_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            NanonisSTM("stm_nowhere", port=port, timeout=0.5)
    assert "stm_nowhere" not in Instrument._all_instruments


class DribblingServer:
    """Answers with every reply split into 1-byte sends, so the driver must loop on recv."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while header := conn.recv(HEADER_SIZE, socket.MSG_WAITALL):
                command, size, _ = decode_header(header)
                body = conn.recv(size, socket.MSG_WAITALL) if size else b""
                args, _ = unpack_body(COMMANDS[command].args, body)
                if command == "Signals.ValsGet":
                    values: list[object] = [[float(i) for i in args[0]]]  # echo the indexes
                elif command == "Signals.NamesGet":
                    values = [["Bias (V)", "Current (A)"]]  # no "Z (m)"
                else:
                    values = [0.25]
                body = pack_body(COMMANDS[command].returns, values) + encode_error()
                for byte in encode_header(command, len(body)) + body:
                    conn.sendall(bytes([byte]))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


def test_partial_reads_are_reassembled():
    fake = DribblingServer()
    try:
        stm = NanonisSTM("stm_dribble", port=fake.port, timeout=2.0)
        assert stm.signal_names() == ["Bias (V)", "Current (A)"]
        assert stm.bias() == 0.25
        current, z = stm.get_many([stm.current, stm.z_position])
        assert current == 1.0  # the fake echoes the index: "Current (A)" is entry 1 of its list
        assert isinstance(z, ValueError) and "Z (m)" in str(z)
        stm.close()
    finally:
        fake.close()
