"""Strings on the Nanonis wire are one byte per character, in the driver and in the simulator.

The vendor's TCP protocol manual (Data Types) defines ``string`` as "an array of characters,
where every character has a size of one byte", its size prepended as an int; the vendor client
``nanonis_spm`` (``NanonisClass.py``: ``decodeStringPrepended`` and ``decodeSingularString``)
turns each byte into one character with ``chr(byte)``, i.e. Latin-1. Driver and simulator used to
share a UTF-8 codec, so a controller's ``"T (°C)"`` (degree sign = the single byte B0) came out as
``"T (\\ufffdC)"`` and could not be read by name, and the simulator sent a micro sign as two bytes.
Every expected byte string here is written by hand from that layout, never by trajmon's encoder.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from test_driver_conformance import NO_ERROR, REPLY_TAIL, RESPOND, H, RawController, name

from simulators.stm_model import STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.drivers.nanonis import NanonisError, NanonisSTM
from trajmon.drivers.nanonis_protocol import encode_error, pack_body

# Signals.NamesGet: size in bytes 34 (= 3 length fields + 11 + 6 + 5 one-byte characters),
# 3 names; "T (°C)" is six bytes, the degree sign the single byte B0.
NAMES = (
    H("00000022 00000003")
    + H("0000000B")
    + b"Current (A)"
    + H("00000006")
    + b"T (\xb0C)"
    + H("00000005")
    + b"Z (m)"
)
REPLIES: dict[bytes, bytes] = {
    b"Signals.NamesGet": H("00000032") + REPLY_TAIL + NAMES + NO_ERROR,
    # Signals values size 1, float32 21.5.
    b"Signals.ValsGet": H("00000010") + REPLY_TAIL + H("00000001 41AC0000") + NO_ERROR,
    # Bias value float32 0, then error status 1 and the 12-byte description "Z limit 5 µm".
    b"Bias.Get": H("00000018") + REPLY_TAIL + H("00000000 00000001 0000000C") + b"Z limit 5 \xb5m",
}


@pytest.fixture
def stm() -> Iterator[tuple[NanonisSTM, RawController]]:
    fake = RawController(REPLIES)
    try:
        instrument = NanonisSTM("review_bytes_stm", port=fake.port, timeout=2.0)
        try:
            yield instrument, fake
        finally:
            instrument.close()
    finally:
        fake.close()


def test_driver_reads_signal_names_one_byte_per_character(
    stm: tuple[NanonisSTM, RawController],
) -> None:
    instrument, fake = stm
    assert instrument.signal_names() == ["Current (A)", "T (°C)", "Z (m)"]
    assert instrument.read_signals(["T (°C)"]) == [21.5]
    assert fake.requests[-1] == (
        name(b"Signals.ValsGet") + H("0000000C") + RESPOND + H("00000001 00000001 00000000")
    )


def test_driver_reads_error_description_one_byte_per_character(
    stm: tuple[NanonisSTM, RawController],
) -> None:
    instrument, _ = stm
    (result,) = instrument.get_many([instrument.bias])
    assert isinstance(result, NanonisError)
    assert (result.status, result.message) == (1, "Z limit 5 µm")


def test_codec_writes_one_byte_per_character() -> None:
    """The size fields count bytes, and a byte is a character; what Latin-1 lacks becomes '?'."""
    assert pack_body(("str[]",), [["T (°C)"]]) == H("0000000A 00000001 00000006") + b"T (\xb0C)"
    assert encode_error(1, "5 µm ✓") == H("00000001 00000006") + b"5 \xb5m ?"


def test_simulator_sends_error_description_one_byte_per_character() -> None:
    model = STMModel(seed=1, clock=lambda: 0.0, noise=False, drift=False)
    with ThreadedNanonisServer(model) as srv:
        srv.faults.error_next(command="Bias.Get", message="Z limit 5 µm")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as conn:
            conn.sendall(name(b"Bias.Get") + H("00000000") + RESPOND)
            header = conn.recv(40, socket.MSG_WAITALL)
            body = conn.recv(int.from_bytes(header[32:36], "big"), socket.MSG_WAITALL)
    assert header == name(b"Bias.Get") + H("00000018") + REPLY_TAIL
    assert body == H("00000000 00000001 0000000C") + b"Z limit 5 \xb5m"
