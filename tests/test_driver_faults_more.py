"""More controller faults: what the Nanonis driver, the simulator and its fault plans do with a
misbehaving peer or a bad setting.

The faults the simulator cannot produce (an error reply without return values, a reply that
stalls between header and body) come from a small scripted controller on 127.0.0.1 whose
answer to each request is a function of the test.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import run_cli
from qcodes.instrument import Instrument

from simulators.faults import FaultPlanError, load_fault_plan
from simulators.nanonis_server import FaultInjector, NanonisServer
from trajmon.drivers.nanonis import NanonisError, NanonisSTM
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    ProtocolError,
    decode_header,
    decode_reply,
    encode_error,
    encode_header,
    pack_body,
    unpack_body,
)

# respond(command, args, conn) -> the reply bytes, or None to close the connection. It may also
# write to ``conn`` itself (part of a reply) before returning the rest.
Respond = Callable[[str, list[Any], socket.socket], bytes | None]


def reply(command: str, values: list[Any], status: int = 0, message: str = "") -> bytes:
    body = pack_body(COMMANDS[command].returns, values) + encode_error(status, message)
    return encode_header(command, len(body)) + body


def error_only(command: str, status: int, message: str) -> bytes:
    """A reply that is nothing but the error section, as for a command the controller lacks."""
    body = encode_error(status, message)
    return encode_header(command, len(body)) + body


def normal(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
    if command == "Signals.NamesGet":
        return reply(command, [["Current (A)", "Z (m)"]])
    if command == "Signals.ValsGet":
        return reply(command, [[float(i) for i in args[0]]])
    return reply(command, [0.25 if code == "f" else 1 for code in COMMANDS[command].returns])


class ScriptedController:
    """Serves every connection on its own thread; ``release`` ends any reply held back."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.release = threading.Event()
        self.requests: list[str] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # listener shut down
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while len(header := conn.recv(HEADER_SIZE, socket.MSG_WAITALL)) == HEADER_SIZE:
                    command, size, _ = decode_header(header)
                    body = conn.recv(size, socket.MSG_WAITALL) if size else b""
                    self.requests.append(command)
                    args, _ = unpack_body(COMMANDS[command].args, body)
                    out = self.respond(command, args, conn)
                    if out is None:
                        return
                    conn.sendall(out)
            except OSError:
                return  # the driver hung up

    def close(self) -> None:
        self.release.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):  # already closed by its thread
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def controller() -> Iterator[Callable[[Respond], ScriptedController]]:
    made: list[ScriptedController] = []

    def make(respond: Respond) -> ScriptedController:
        made.append(ScriptedController(respond))
        return made[-1]

    yield make
    Instrument.close_all()
    for fake in made:
        fake.close()


# -- the driver ---------------------------------------------------------------------------------


def test_timeout_bounds_the_whole_reply_not_each_part(
    controller: Callable[[Respond], ScriptedController],
) -> None:
    """A header late in the timeout, then no body: the request ends at its timeout, not nearly
    two timeouts later (the body's wait used to start afresh once the header was in)."""

    def stall(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
        full = normal(command, args, conn)
        assert full is not None
        if command == "Bias.Get":
            fake.release.wait(0.6)  # a slow controller: the header comes 0.6 s into 1.0 s
            conn.sendall(full[:HEADER_SIZE])
            fake.release.wait(30)  # ... and the body only when the test is over
            return full[HEADER_SIZE:]
        return full

    fake = controller(stall)
    stm = NanonisSTM("stm_stall", port=fake.port, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"Bias.Get: no reply .* within 1.0 s"):
        stm.bias()
    assert time.monotonic() - t0 < 1.4  # the old code waited 0.6 + 1.0 s
    assert not stm.connected
    fake.release.set()
    assert stm.bias() == 0.25  # the next call reconnects, a fresh stream
    assert stm.reconnect_count == 1


def test_error_section_only_reply_is_the_controllers_error(
    controller: Callable[[Respond], ScriptedController],
) -> None:
    """A reply carrying only the error section (no return values) used to surface as
    ``ProtocolError: body truncated: need 1114202495 bytes`` instead of the controller's text."""

    def lacks_gain(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
        if command == "ZCtrl.GainGet":
            return error_only(command, 1, "Unknown command: ZCtrl.GainGet")
        return normal(command, args, conn)

    fake = controller(lacks_gain)
    stm = NanonisSTM("stm_old_firmware", port=fake.port, timeout=1.0)
    out = stm.get_many([stm.z_p_gain, stm.z_i_gain, stm.bias])
    for value in out[:2]:
        assert isinstance(value, NanonisError)
        assert value.status == 1 and value.message == "Unknown command: ZCtrl.GainGet"
    assert out[2] == 0.25
    assert stm.bias() == 0.25 and fake.connections == 1  # the stream stayed in sync


def test_decode_reply_keeps_protocol_errors_for_undecodable_bodies() -> None:
    returns = COMMANDS["Bias.Get"].returns
    assert decode_reply(returns, pack_body(returns, [0.5]) + encode_error()) == ([0.5], 0, "")
    assert decode_reply(returns, encode_error(3, "busy")) == ([], 3, "busy")
    assert decode_reply(returns, encode_error(0, "warn")) == ([], 0, "warn")
    for body in (b"", b"\0\0", encode_error(0, ""), encode_error(2, "x") + b"junk"):
        with pytest.raises(ProtocolError):
            decode_reply(returns, body)


def test_accepted_but_silent_port_names_what_was_not_answered(
    controller: Callable[[Respond], ScriptedController],
) -> None:
    """A port that accepts but never answers (e.g. held by another client) used to be refused
    with a bare "timed out"."""

    def silent(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
        fake.release.wait(30)  # until the test is over
        return None

    fake = controller(silent)
    with pytest.raises(ConnectionError) as info:
        NanonisSTM("stm_silent", port=fake.port, timeout=0.3)
    assert str(info.value) == (
        f"cannot connect to Nanonis TCP interface at 127.0.0.1:{fake.port}: "
        "no reply to Signals.NamesGet within 0.3 s"
    )
    assert "stm_silent" not in Instrument._all_instruments


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"timeout": math.inf}, "timeout=inf"),
        ({"timeout": math.nan}, "timeout=nan"),
        ({"reconnect_backoff": (0.1, math.inf)}, "reconnect_backoff=(0.1, inf)"),
    ],
)
def test_non_finite_timeouts_are_refused_with_the_setting(
    kwargs: dict[str, Any], shown: str
) -> None:
    """``timeout: .inf`` in a station file used to fail with "timestamp out of range for
    platform time_t" (an OverflowError from the socket), an infinite backoff cap was taken."""
    with pytest.raises(ValueError, match="finite") as info:
        NanonisSTM("stm_bad", port=1, **kwargs)
    assert shown in str(info.value)
    assert "stm_bad" not in Instrument._all_instruments


# -- the simulator and its fault plans ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"latency_s": math.inf}, "latency_s"), ({"jitter_s": math.nan}, "jitter_s")],
)
def test_server_refuses_delays_that_never_end(kwargs: dict[str, float], name: str) -> None:
    """``asyncio.sleep(inf)``/``sleep(nan)`` never return: every reply was withheld for ever
    (or, for an infinite jitter, each request killed its connection with an OverflowError)."""
    with pytest.raises(ValueError, match=f"{name} must be a finite"):
        NanonisServer(**kwargs)


def test_hang_fault_needs_a_finite_duration() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="seconds must be a finite"):
        faults.hang_next(seconds=math.nan)
    assert faults.pending == 0


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("{at_s: 1, fault: drop, command: Bias.Gte}", "unknown command 'Bias.Gte'"),
        ("{at_s: 1, fault: drop, command: 5}", "unknown command 5"),
        ("{at_s: 1, fault: hang, seconds: .nan}", "seconds must be a finite number"),
        ("{at_s: 1, fault: outage, seconds: .inf}", "seconds must be a finite number"),
        ("{at_s: .inf, fault: drop}", "at_s must be a finite number"),
        ("{at_s: true, fault: drop}", "at_s must be a finite number"),
        ("{at_s: 1, fault: error, n: 1.5}", "n must be a whole number >= 1, got 1.5"),
        ("{at_s: 1, fault: error, n: true}", "n must be a whole number >= 1, got True"),
        ("{fault: drop}", "needs 'at_s' and 'fault'"),
    ],
)
def test_fault_plan_refuses_entries_that_would_never_fire_or_never_end(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"faults:\n  - {{at_s: 0.5, fault: drop}}\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: faults\[1\]: ") as info:
        load_fault_plan(plan)
    assert complaint in str(info.value)


def test_fault_plan_keeps_valid_entries(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "faults:\n"
        "  - {at_s: 2, fault: hang, seconds: 0, command: Scan.FrameGet}\n"
        "  - {at_s: 0.5, fault: error, n: 3, message: 7}\n",
        encoding="utf-8",
    )
    first, second = load_fault_plan(plan)
    assert (first.at_s, first.fault, first.n, first.message) == (0.5, "error", 3, "7")
    assert (second.at_s, second.seconds, second.command) == (2.0, 0.0, "Scan.FrameGet")


def test_sim_serve_refuses_a_fault_plan_with_a_typo(tmp_path: Path) -> None:
    plan = tmp_path / "faults.yaml"
    plan.write_text("faults:\n  - {at_s: 1, fault: drop, command: Signals.ValGets}\n")
    done = run_cli("sim", "serve", "--port", "0", "--faults", str(plan), timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown command 'Signals.ValGets'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "listening" not in done.stdout


def test_a_note_with_status_0_keeps_the_values_and_is_logged_once(
    controller: Callable[[Respond], ScriptedController], caplog: pytest.LogCaptureFixture
) -> None:
    """Status 0 is "no error" (the manual), and the vendor client returns the values beside a
    description: the driver raised instead, and every sample of that channel was lost. An
    error-only reply with status 0 and a description is still an error: it has no values."""

    def noting(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
        if command == "Bias.Get":
            body = pack_body(COMMANDS[command].returns, [0.5]) + encode_error(0, "Bias limited")
            return encode_header(command, len(body)) + body
        if command == "ZCtrl.SetpntGet":
            return error_only(command, 0, "Setpoint not available")
        return normal(command, args, conn)

    fake = controller(noting)
    stm = NanonisSTM("stm_noting", port=fake.port, timeout=1.0)
    with caplog.at_level("WARNING", logger="trajmon.drivers.nanonis_protocol"):
        assert [stm.bias(), stm.bias()] == [0.5, 0.5]
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "Bias.Get: the controller answered with a note (status 0, values kept): Bias limited"
    ]
    with pytest.raises(NanonisError, match="Setpoint not available") as caught:
        stm.z_setpoint()
    assert caught.value.status == 0
    assert stm.bias() == 0.5 and fake.connections == 1  # the stream stayed in sync


def test_a_signal_name_listed_twice_is_read_at_its_first_index(
    controller: Callable[[Respond], ScriptedController],
) -> None:
    """The driver took the last of two equal names; a search of the list, as the vendor's
    examples do, finds the first."""

    def twice(command: str, args: list[Any], conn: socket.socket) -> bytes | None:
        if command == "Signals.NamesGet":
            return reply(command, [["Current (A)", "Z (m)", "Current (A)"]])
        return normal(command, args, conn)  # ValsGet answers each index as its value

    fake = controller(twice)
    stm = NanonisSTM("stm_twice", port=fake.port, timeout=1.0)
    assert stm.read_signals(["Current (A)", "Z (m)"]) == [0.0, 1.0]
