"""The Nanonis driver as a user with a real controller configures it: what it says when the port
is not a Nanonis interface, when it is waiting to reconnect, and what it refuses to connect to.

Controllers here are sockets on 127.0.0.1 scripted per test (or the simulator's server); waits
are for those sockets, the reconnect backoff runs on an injected clock.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from fake_controllers import FakeController
from qcodes.instrument import Instrument
from test_driver_nanonis import FakeClock

from simulators.stm_model import STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.cli.connect import connect_nanonis
from trajmon.config import ConfigError
from trajmon.drivers.nanonis import NanonisSTM
from trajmon.drivers.nanonis_protocol import (
    HEADER_SIZE,
    ProtocolError,
    decode_header,
    encode_error,
    encode_reply_header,
    pack_body,
)

SSH_BANNER = b"SSH-2.0-OpenSSH_9\r\n"


class Banner(FakeController):
    """Sends ``text`` to every connection, reads the request, then closes it (``close``) or
    keeps it open and silent until the test ends."""

    def __init__(self, text: bytes, close: bool) -> None:
        self.text = text
        self.close_after = close
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(self.text)
        conn.recv(HEADER_SIZE, socket.MSG_WAITALL)
        if not self.close_after:
            self.done.wait(60)


@pytest.fixture
def banner() -> Iterator[Callable[[bytes, bool], Banner]]:
    made: list[Banner] = []

    def make(text: bytes, close: bool) -> Banner:
        made.append(Banner(text, close))
        return made[-1]

    yield make
    Instrument.close_all()
    for fake in made:
        fake.close()


# -- 1. a short answer that is not a Nanonis reply ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "close"),
    [(SSH_BANNER, True), (SSH_BANNER, False), (b"HTTP/1.1 400\r\n", True)],
    ids=["ssh-closes", "ssh-waits", "short-http"],
)
async def test_an_answer_shorter_than_a_header_is_not_a_nanonis_reply(
    banner: Callable[[bytes, bool], Banner], text: bytes, close: bool
) -> None:
    """An SSH server's banner (19 bytes, less than a 40-byte header) was reported as "closed it
    without a reply" or "sent no reply (is another program connected to it?)": the bytes read
    were dropped, and the operator was sent to look for another client instead of the port."""
    fake = banner(text, close)
    with pytest.raises(ConfigError) as info:
        async with connect_nanonis("127.0.0.1", fake.port, 0.3):
            pytest.fail("connected")
    said = str(info.value)
    assert "answered, but not as a Nanonis TCP interface" in said
    assert repr(text.decode("latin-1")) in said  # what it answered, as the operator can check
    assert "no reply" not in said and "without a reply" not in said


def test_a_reply_cut_inside_the_echoed_name_is_still_a_lost_connection(
    banner: Callable[[bytes, bool], Banner],
) -> None:
    """The start of a real reply (the echoed name), then the connection closes: the controller
    went away mid-reply, which is not "another protocol"."""
    fake = banner(b"Signals.Na", True)
    with pytest.raises(ConnectionError, match="connection closed by the controller") as info:
        NanonisSTM("stm_cut", port=fake.port, timeout=0.5)
    assert "not as a Nanonis" not in str(info.value) and "reply 'Signals" not in str(info.value)


# -- 2. what a disconnected driver says about its next attempt ----------------------------------


@pytest.fixture
def server() -> Iterator[ThreadedNanonisServer]:
    with ThreadedNanonisServer(STMModel(seed=3, clock=lambda: 0.0)) as srv:
        yield srv


def _waits(message: str) -> list[float]:
    return [float(w) for w in re.findall(r"in (-?[0-9.]+) s", message)]


def test_a_reconnect_due_within_the_shown_precision_is_attempted_not_said_in_0_000_s(
    server: ThreadedNanonisServer,
) -> None:
    """0.2 ms before the next attempt was due, a call said "next reconnect attempt in 0.000 s":
    a wait that is none. It now makes the attempt."""
    clock = FakeClock()
    stm = NanonisSTM(
        "stm_due", port=server.port, timeout=0.5, reconnect_backoff=(0.05, 0.2), clock=clock
    )
    server.stop()
    with pytest.raises(ConnectionError, match="lost"):
        stm.bias()
    with pytest.raises(ConnectionError, match="refused"):
        stm.bias()  # the first attempt: refused, backs off 0.05 s
    clock.now += 0.05 - 0.0002
    with pytest.raises(ConnectionError) as info:
        stm.bias()
    said = str(info.value)
    assert "refused" in said  # attempted
    assert all(w > 0 for w in _waits(said)), said
    assert _waits(said) == [0.1]  # the doubled backoff, from this attempt


def test_a_backoff_below_a_millisecond_is_not_said_as_0_000_s(
    server: ThreadedNanonisServer,
) -> None:
    clock = FakeClock()
    stm = NanonisSTM(
        "stm_tiny", port=server.port, timeout=0.5, reconnect_backoff=(1e-4, 2e-4), clock=clock
    )
    server.stop()
    with pytest.raises(ConnectionError, match="lost"):
        stm.bias()
    for _ in range(3):  # every call attempts: none of these waits is visible at 1 ms
        with pytest.raises(ConnectionError, match="refused") as info:
            stm.bias()
        assert not re.search(r"in -?0\.000 s", str(info.value)), str(info.value)
        assert "next attempt at the next call" in str(info.value)
    server.start()
    assert isinstance(stm.bias(), float)
    assert stm.reconnect_count == 1


# -- 3. ports the socket layer does not refuse ---------------------------------------------------


@pytest.mark.parametrize("port", [70000, 65536, 0, -1, True, 6501.0])
def test_a_port_outside_1_to_65535_is_refused_naming_the_setting(port: object) -> None:
    """``port: 70000`` in a station file connected to port 4464 (70000 - 65536): whatever
    listened there was taken for the controller."""
    with pytest.raises(ValueError, match=rf"port={re.escape(repr(port))}"):
        NanonisSTM("stm_port", port=port)  # type: ignore[arg-type]
    assert "stm_port" not in Instrument._all_instruments


def test_port_70000_would_have_reached_port_4464() -> None:
    """Why the check is needed: the socket layer wraps the port rather than refusing it."""
    try:
        listener = socket.create_server(("127.0.0.1", 70000 - 65536))
    except OSError:
        pytest.skip("port 4464 is taken on this machine")
    with listener, pytest.raises(ValueError, match="1 to 65535"):
        NanonisSTM("stm_wrap", port=70000, timeout=0.3)


# -- 4. an IPv6 address written as it is shown -------------------------------------------------


def _v6_listener() -> socket.socket:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        return socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")


async def test_a_bracketed_ipv6_host_is_the_address_it_shows() -> None:
    """trajmon writes ``[::1]:6501``; ``--host [::1]`` (copied from that) failed with
    "unreachable at [[::1]]:6501: Name or service not known" instead of connecting."""
    with _v6_listener() as listener:
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            # Accepted, never answered: the refusal proves the connection was made.
            async with connect_nanonis("[::1]", port, 0.2):
                pytest.fail("connected")
        said = str(info.value)
        assert said.startswith(f"instrument at [::1]:{port} accepted the connection"), said
        assert "[[" not in said


def test_the_driver_takes_a_bracketed_ipv6_address() -> None:
    with _v6_listener() as listener:
        port = listener.getsockname()[1]
        with pytest.raises(ConnectionError, match=r"no reply to Signals\.NamesGet") as info:
            NanonisSTM("stm_v6b", address="[::1]", port=port, timeout=0.2)
        assert f"Nanonis TCP interface at [::1]:{port}:" in str(info.value)


# -- 5. a reply longer than the layout read ------------------------------------------------------


class OneReply(FakeController):
    """A controller that answers ``Signals.NamesGet`` normally and every other request with
    ``body`` (under the request's own name), keeping the connection open."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        while len(header := conn.recv(HEADER_SIZE, socket.MSG_WAITALL)) == HEADER_SIZE:
            command, size, _ = decode_header(header)
            if size:
                conn.recv(size, socket.MSG_WAITALL)
            body = self.body
            if command == "Signals.NamesGet":
                body = pack_body(("str[]",), [["Current (A)"]]) + encode_error()
            conn.sendall(encode_reply_header(command, len(body)) + body)


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">d", 0.5) + encode_error(),  # a float64 where the manual has a float32
        struct.pack(">f", 0.5) + encode_error() + b"\0\0\0\0",
    ],
    ids=["float64", "trailing"],
)
def test_a_reply_longer_than_its_layout_is_a_protocol_error_not_a_value(body: bytes) -> None:
    """Bias.Get answered with 8 bytes of value: the first four (0x3FE00000) were recorded as
    1.75 V and the rest read as "no error" — a wrong figure, with nothing to say so."""
    fake = OneReply(body)
    stm = NanonisSTM("stm_long", port=fake.port, timeout=0.5)
    try:
        with pytest.raises(ProtocolError, match="4 bytes after the error section"):
            stm.bias()
        out = stm.get_many([stm.bias, stm.z_setpoint])
        assert all(isinstance(v, ProtocolError) for v in out), out
        assert stm.connected and stm.reconnect_count == 0  # read whole: still in step
    finally:
        stm.close()
        fake.close()
