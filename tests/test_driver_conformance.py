"""Byte-level conformance of the Nanonis driver and simulator with the public protocol reference.

The driver and the simulator share one codec, so a shared misunderstanding of the protocol would
pass every other test. Here every expected byte string is written out by hand from the vendor's
"TCP Protocol" manual (Nanonis TCP Programming Interface, R5.1.14718, as transcribed in
kronberger-droid/nanonis-rs ``docs/tcp-protocol.md``; the same layouts are in the vendor's
``nanonis_spm`` client, SPECS-Zurich-GmbH/nanonis_spm ``nanonis_spm/NanonisClass.py``), never
produced by trajmon's encoder:

- request header: 32-byte command name padded with zero bytes, body size (int, 4 bytes),
  "send response back" (unsigned int16) = 1, two unused zero bytes;
- response header: command name, body size, four unused zero bytes;
- response body: the return arguments, then error status (unsigned int32), error description
  size (int) and the description;
- big-endian throughout; float32 for every value the driver reads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from simulators.stm_model import STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.drivers.nanonis import NanonisError, NanonisSTM
from trajmon.drivers.nanonis_protocol import (
    decode_header,
    decode_reply,
    encode_header,
    encode_reply_header,
)

H = bytes.fromhex
NO_ERROR = H("00000000 00000000")  # error status 0, description size 0, no description
RESPOND = H("0001 0000")  # request header tail: send response back = 1, two unused bytes
REPLY_TAIL = H("00000000")  # response header tail: four unused bytes


def name(command: bytes) -> bytes:
    """The 32-byte command-name field: the name, then zero bytes up to 32."""
    assert len(command) <= 32
    return command + bytes(32 - len(command))


# -- the manual's own worked example (FolMe.XYPosGet) -----------------------------------------

# Request and response exactly as printed in the manual's "Examples" section.
MANUAL_REQUEST = H(
    "466F 6C4D 652E 5859 506F 7347 6574 0000 0000 0000 0000 0000 0000 0000 0000 0000"
    "0000 0004 0001 0000"  # body size 4, send response back = True, not used
    "0000 0001"  # Wait for newest data = True
)
MANUAL_RESPONSE_HEADER = H(
    "466F 6C4D 652E 5859 506F 7347 6574 0000 0000 0000 0000 0000 0000 0000 0000 0000"
    "0000 0018 0000 0000"  # body size 24, not used (4 bytes)
)
MANUAL_RESPONSE_BODY = H(
    "3E35 798E E230 8C3A BE35 798E E230 8C3A 0000 0000 0000 0000"  # X=5n, Y=-5n (float64), no error
)


def test_request_header_matches_the_manual_example() -> None:
    assert encode_header("FolMe.XYPosGet", 4) + H("00000001") == MANUAL_REQUEST


def test_reply_header_matches_the_manual_example() -> None:
    """A response header ends in four zero bytes: no send-response flag is echoed."""
    assert encode_reply_header("FolMe.XYPosGet", 24) == MANUAL_RESPONSE_HEADER
    assert decode_header(MANUAL_RESPONSE_HEADER)[:2] == ("FolMe.XYPosGet", 24)
    values, status, message = decode_reply(("d", "d"), MANUAL_RESPONSE_BODY)
    assert values == [5e-9, -5e-9] and (status, message) == (0, "")


# -- what the driver sends, and how it reads the controller's answers -------------------------

# Signals.NamesGet reply: names size in bytes (each string's 4-byte length included, as the
# vendor client's parser needs), number of names, then each name as int32 length + bytes.
NAMES_BODY = (
    H("00000024 00000003")  # 36 bytes, 3 names
    + H("00000008")
    + b"Bias (V)"
    + H("0000000B")
    + b"Current (A)"
    + H("00000005")
    + b"Z (m)"
    + NO_ERROR
)

# Hand-written replies (header + body) for every command the driver sends.
REPLIES: dict[bytes, bytes] = {
    b"Signals.NamesGet": H("00000034") + REPLY_TAIL + NAMES_BODY,
    # Signals values size 2, then float32 0.25 and -1.5.
    b"Signals.ValsGet": H("00000014") + REPLY_TAIL + H("00000002 3E800000 BFC00000") + NO_ERROR,
    b"Bias.Get": H("0000000C") + REPLY_TAIL + H("3F000000") + NO_ERROR,  # 0.5 V
    b"ZCtrl.SetpntGet": H("0000000C") + REPLY_TAIL + H("3E000000") + NO_ERROR,  # 0.125
    b"ZCtrl.OnOffGet": H("0000000C") + REPLY_TAIL + H("00000001") + NO_ERROR,  # uint32 1 = On
    # P-gain 0.5, time constant 2 s, I-gain 0.25 (float32 each).
    b"ZCtrl.GainGet": H("00000014") + REPLY_TAIL + H("3F000000 40000000 3E800000") + NO_ERROR,
    b"Scan.StatusGet": H("0000000C") + REPLY_TAIL + H("00000001") + NO_ERROR,  # 1 = running
    # Center X 1, center Y -1, width 2, height 4 (m), angle 90 deg (float32 each).
    b"Scan.FrameGet": H("0000001C")
    + REPLY_TAIL
    + H("3F800000 BF800000 40000000 40800000 42B40000")
    + NO_ERROR,
}


class RawController:
    """A fake controller that knows nothing of trajmon's codec: it slices the header by hand,
    records each raw request and answers with the hand-written reply for its command name."""

    def __init__(self, replies: dict[bytes, bytes]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="raw-nanonis", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conns.append(conn)
        with conn:
            while len(header := conn.recv(40, socket.MSG_WAITALL)) == 40:
                size = int.from_bytes(header[32:36], "big")
                body = conn.recv(size, socket.MSG_WAITALL) if size else b""
                self.requests.append(header + body)
                command = header[:32].rstrip(b"\0")
                conn.sendall(name(command) + self.replies[command])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


@pytest.fixture
def raw() -> Iterator[RawController]:
    fake = RawController(REPLIES)
    yield fake
    fake.close()


@pytest.fixture
def stm(raw: RawController) -> Iterator[NanonisSTM]:
    instrument = NanonisSTM("conformance_stm", port=raw.port, timeout=2.0)
    yield instrument
    instrument.close()


def test_connect_sends_signals_names_get_and_reads_the_string_array(
    stm: NanonisSTM, raw: RawController
) -> None:
    assert raw.requests == [name(b"Signals.NamesGet") + H("00000000") + RESPOND]
    assert stm.signal_names() == ["Bias (V)", "Current (A)", "Z (m)"]


def test_signals_vals_get_request_and_reply(stm: NanonisSTM, raw: RawController) -> None:
    """Signals indexes size (int), indexes (1D array int) taken from the NamesGet list, then
    Wait for newest data (unsigned int32) = 0; the reply is a size-prefixed float32 array."""
    assert stm.get_many([stm.current, stm.z_position]) == [0.25, -1.5]
    assert raw.requests[-1] == (
        name(b"Signals.ValsGet")
        + H("00000010")
        + RESPOND
        + H("00000002 00000001 00000002 00000000")
    )


@pytest.mark.parametrize(
    ("command", "params", "expected"),
    [
        (b"Bias.Get", ["bias"], [0.5]),
        (b"ZCtrl.SetpntGet", ["z_setpoint"], [0.125]),
        (b"ZCtrl.OnOffGet", ["z_controller_enabled"], [True]),
        (b"ZCtrl.GainGet", ["z_p_gain", "z_time_constant", "z_i_gain"], [0.5, 2.0, 0.25]),
        (b"Scan.StatusGet", ["scan_status"], [1]),
        (
            b"Scan.FrameGet",
            [
                "scan_frame_center_x",
                "scan_frame_center_y",
                "scan_frame_width",
                "scan_frame_height",
                "scan_frame_angle",
            ],
            [1.0, -1.0, 2.0, 4.0, 90.0],
        ),
    ],
)
def test_argumentless_get_request_and_reply(
    stm: NanonisSTM, raw: RawController, command: bytes, params: list[str], expected: list[object]
) -> None:
    values = stm.get_many([stm.parameters[p] for p in params])
    assert values == expected
    assert [type(v) for v in values] == [type(v) for v in expected]
    assert raw.requests[-1] == name(command) + H("00000000") + RESPOND


def test_error_after_return_values_is_raised_with_its_description(
    stm: NanonisSTM, raw: RawController
) -> None:
    """Return values first, then error status 1 and its description: the driver reports it."""
    raw.replies[b"Bias.Get"] = (
        H("00000017") + REPLY_TAIL + H("00000000 00000001 0000000B") + b"Bias locked"
    )
    (result,) = stm.get_many([stm.bias])
    assert isinstance(result, NanonisError)
    assert (result.command, result.status, result.message) == ("Bias.Get", 1, "Bias locked")


def test_error_section_alone_is_raised_too(stm: NanonisSTM, raw: RawController) -> None:
    """Signals.ValsGet answered with the error section only (no values array)."""
    raw.replies[b"Signals.ValsGet"] = (
        H("0000000F") + REPLY_TAIL + H("00000001 00000007") + b"bad idx"
    )
    results = stm.get_many([stm.current, stm.z_position])
    assert all(isinstance(r, NanonisError) and r.message == "bad idx" for r in results)
    assert stm.connected  # an error reply is read whole: the stream stays in sync


# -- what the simulator answers to hand-written requests --------------------------------------


@pytest.fixture
def sim() -> Iterator[tuple[ThreadedNanonisServer, STMModel]]:
    model = STMModel(seed=1, clock=lambda: 0.0, noise=False, drift=False)
    with ThreadedNanonisServer(model) as srv:
        yield srv, model


def exchange(port: int, request: bytes) -> bytes:
    """Send one raw request; return the raw response (header and body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        header = conn.recv(40, socket.MSG_WAITALL)
        size = int.from_bytes(header[32:36], "big")
        return header + conn.recv(size, socket.MSG_WAITALL)


def test_simulator_reply_header_has_four_zero_unused_bytes(
    sim: tuple[ThreadedNanonisServer, STMModel],
) -> None:
    srv, model = sim
    model.set_bias(0.5)
    got = exchange(srv.port, name(b"Bias.Get") + H("00000000") + RESPOND)
    assert got == name(b"Bias.Get") + H("0000000C") + REPLY_TAIL + H("3F000000") + NO_ERROR


def test_simulator_signals_names_get_layout(sim: tuple[ThreadedNanonisServer, STMModel]) -> None:
    srv, _ = sim
    got = exchange(srv.port, name(b"Signals.NamesGet") + H("00000000") + RESPOND)
    names = (
        H("0000000B")
        + b"Current (A)"
        + H("0000000B")
        + b"Input 1 (V)"
        + H("0000000B")
        + b"Input 2 (V)"
        + H("00000008")
        + b"Bias (V)"
        + H("00000005")
        + b"X (m)"
        + H("00000005")
        + b"Y (m)"
        + H("00000005")
        + b"Z (m)"
    )
    # size in bytes 84 (= 7 length fields + 56 characters), 7 names; body 100 bytes.
    expected = H("00000064") + REPLY_TAIL + H("00000054 00000007") + names + NO_ERROR
    assert got == name(b"Signals.NamesGet") + expected


def test_simulator_signals_vals_get_layout(sim: tuple[ThreadedNanonisServer, STMModel]) -> None:
    srv, model = sim
    model.set_bias(-1.5)
    request = name(b"Signals.ValsGet") + H("0000000C") + RESPOND + H("00000001 00000003 00000000")
    got = exchange(srv.port, request)  # index 3 is "Bias (V)"
    body = H("00000001 BFC00000") + NO_ERROR  # values size 1, float32 -1.5
    assert got == name(b"Signals.ValsGet") + H("00000010") + REPLY_TAIL + body


def test_simulator_scan_frame_and_flags_layout(sim: tuple[ThreadedNanonisServer, STMModel]) -> None:
    srv, model = sim
    model.set_scan_frame(center_x=1.0, center_y=-1.0, width=2.0, height=4.0, angle=90.0)
    model.set_feedback_on(False)
    got = exchange(srv.port, name(b"Scan.FrameGet") + H("00000000") + RESPOND)
    frame = H("3F800000 BF800000 40000000 40800000 42B40000")
    assert got == name(b"Scan.FrameGet") + H("0000001C") + REPLY_TAIL + frame + NO_ERROR
    got = exchange(srv.port, name(b"ZCtrl.OnOffGet") + H("00000000") + RESPOND)
    assert got == name(b"ZCtrl.OnOffGet") + H("0000000C") + REPLY_TAIL + H("00000000") + NO_ERROR
    got = exchange(srv.port, name(b"Scan.StatusGet") + H("00000000") + RESPOND)
    assert got == name(b"Scan.StatusGet") + H("0000000C") + REPLY_TAIL + H("00000000") + NO_ERROR


def test_simulator_error_reply_layout(sim: tuple[ThreadedNanonisServer, STMModel]) -> None:
    """Error status (unsigned int32) 1, description size (int), description, after the (zeroed)
    return values of a known command."""
    srv, _ = sim
    srv.faults.error_next(command="Bias.Get", message="Bias locked")
    got = exchange(srv.port, name(b"Bias.Get") + H("00000000") + RESPOND)
    body = H("00000000 00000001 0000000B") + b"Bias locked"
    assert got == name(b"Bias.Get") + H("00000017") + REPLY_TAIL + body
