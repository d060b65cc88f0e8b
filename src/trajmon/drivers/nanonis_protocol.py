"""Nanonis TCP programming-interface framing, shared by the driver and the simulator.

The controller speaks a request/response protocol over one TCP socket: a 40-byte header
(32-byte NUL-padded command name, big-endian uint32 body size, uint16 "send response" flag,
two zero bytes) followed by a big-endian body. A response header has the same name and body-size
fields, then four unused bytes that are zero (no flag: the vendor's TCP protocol manual), and its
body ends with an error section (uint32 status, int32 description size, description bytes).

Keeping the codec in one module means the simulator cannot drift from what the driver parses;
that both read the manual right is pinned by tests/test_driver_conformance.py, which compares
them with bytes written out by hand from the manual.

Body formats are tuples of codes:

``f`` float32, ``d`` float64, ``i`` int32, ``I`` uint32, ``h`` int16, ``H`` uint16,
``str`` (int32 byte length + that many one-byte characters), ``i[]`` / ``f[]`` (int32 count +
items), ``str[]`` (int32 total byte size, int32 count, then each string as ``str``).

The manual's ``string`` is "an array of characters, where every character has a size of one
byte" (the controller's LabVIEW strings are bytes, not UTF-8). Strings, error descriptions
included, are therefore Latin-1: every byte is one character and back, as in the vendor client's
string decoding, so a signal name such as ``"T (°C)"`` arrives whole and two different names never
decode to the same text. A character outside Latin-1 is sent as ``?``.
"""

from __future__ import annotations

import functools
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS",
    "HEADER_SIZE",
    "MAX_REPLY_BODY",
    "CommandSpec",
    "HandshakeError",
    "NanonisError",
    "ProtocolError",
    "StreamError",
    "decode_error",
    "decode_header",
    "decode_reply",
    "encode_error",
    "encode_header",
    "encode_reply_header",
    "exchange",
    "pack_body",
    "recv_exact",
    "reply_values",
    "unpack_body",
]

HEADER_SIZE = 40
_HEADER = struct.Struct(">32sIHH")
_SCALARS = {
    "f": struct.Struct(">f"),
    "d": struct.Struct(">d"),
    "i": struct.Struct(">i"),
    "I": struct.Struct(">I"),
    "h": struct.Struct(">h"),
    "H": struct.Struct(">H"),
}
_INT32 = _SCALARS["i"]
_ERROR_HEAD = struct.Struct(">Ii")
_log = logging.getLogger(__name__)
_TEXT = "latin-1"  # one byte per character, every byte valid: see the module docstring


class ProtocolError(Exception):
    """The byte stream does not follow the framing (truncated, oversized, unknown command)."""


class StreamError(ProtocolError, ConnectionError):
    """The reply stream is out of step (a garbled header, the reply to another command): the
    bytes are not this protocol, and the connection cannot be used any more — hence also a
    ``ConnectionError``, which makes the driver drop it."""


class HandshakeError(ConnectionError):
    """Something accepted the connection, but its answer to the first request
    (``Signals.NamesGet``) was not usable: an error reply, bytes that are not this protocol, no
    reply in time, or the connection closed. A ``ConnectionError`` like any failed connect; its
    own type (and its ``__cause__``) lets a caller tell an address where nothing listens from
    one where something answered — "unreachable" would send the operator to the wrong cable."""


class NanonisError(Exception):
    """The controller answered with a non-zero error status or an error description."""

    def __init__(self, command: str, status: int, message: str) -> None:
        super().__init__(f"{command}: {message or 'error status ' + str(status)}")
        self.command = command
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """Argument and return formats of one command, as in the vendor's TCP protocol manual."""

    args: tuple[str, ...]
    returns: tuple[str, ...]


_F5 = ("f", "f", "f", "f", "f")
COMMANDS: dict[str, CommandSpec] = {
    "Bias.Get": CommandSpec((), ("f",)),
    "Bias.Set": CommandSpec(("f",), ()),
    "Current.Get": CommandSpec((), ("f",)),
    "ZCtrl.ZPosGet": CommandSpec((), ("f",)),
    "ZCtrl.SetpntGet": CommandSpec((), ("f",)),
    "ZCtrl.SetpntSet": CommandSpec(("f",), ()),
    "ZCtrl.OnOffGet": CommandSpec((), ("I",)),
    "ZCtrl.OnOffSet": CommandSpec(("I",), ()),
    "ZCtrl.GainGet": CommandSpec((), ("f", "f", "f")),
    "ZCtrl.GainSet": CommandSpec(("f", "f", "f"), ()),
    "Scan.Action": CommandSpec(("H", "I"), ()),
    "Scan.StatusGet": CommandSpec((), ("I",)),
    "Scan.FrameGet": CommandSpec((), _F5),
    "Scan.FrameSet": CommandSpec(_F5, ()),
    "Signals.NamesGet": CommandSpec((), ("str[]",)),
    "Signals.ValGet": CommandSpec(("i", "I"), ("f",)),
    "Signals.ValsGet": CommandSpec(("i[]", "I"), ("f[]",)),
}


def encode_header(command: str, body_size: int, *, send_response: bool = True) -> bytes:
    name = command.encode("ascii")
    if len(name) > 32:
        raise ProtocolError(f"command name longer than 32 bytes: {command!r}")
    return _HEADER.pack(name, body_size, 1 if send_response else 0, 0)


def encode_reply_header(command: str, body_size: int) -> bytes:
    """Header of a response: name and body size, then four unused zero bytes (no flag)."""
    return encode_header(command, body_size, send_response=False)


def decode_header(data: bytes) -> tuple[str, int, bool]:
    """Return (command, body size, send-response flag) of a 40-byte header.

    The flag only means something in a request; in a response those bytes are unused (zero).
    """
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"header must be {HEADER_SIZE} bytes, got {len(data)}")
    raw, size, flag, _ = _HEADER.unpack(data)
    try:
        command = raw.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("command name is not ASCII") from exc
    return command, size, bool(flag)


def _encode_text(text: str) -> bytes:
    return text.encode(_TEXT, errors="replace")


def _pack_str(text: str) -> bytes:
    data = _encode_text(text)
    return _INT32.pack(len(data)) + data


def pack_body(formats: Sequence[str], values: Sequence[Any]) -> bytes:
    if len(formats) != len(values):
        raise ProtocolError(f"{len(formats)} formats for {len(values)} values")
    out = bytearray()
    for code, value in zip(formats, values, strict=True):
        scalar = _SCALARS.get(code)
        if scalar is not None:
            out += scalar.pack(value)
        elif code == "str":
            out += _pack_str(str(value))
        elif code in ("i[]", "f[]"):
            items = list(value)
            out += _INT32.pack(len(items))
            out += struct.pack(f">{len(items)}{code[0]}", *items)
        elif code == "str[]":
            packed = b"".join(_pack_str(s) for s in value)
            out += _INT32.pack(len(packed)) + _INT32.pack(len(value)) + packed
        else:
            raise ProtocolError(f"unknown body format {code!r}")
    return bytes(out)


def _take(body: bytes, offset: int, size: int) -> int:
    end = offset + size
    if size < 0:  # a count or length field read as negative: "need -16 bytes" said nothing
        raise ProtocolError(f"negative size {size} at byte {offset} of the body")
    if end > len(body):
        raise ProtocolError(f"body truncated: need {end} bytes, have {len(body)}")
    return end


def unpack_body(formats: Sequence[str], body: bytes, offset: int = 0) -> tuple[list[Any], int]:
    """Decode ``formats`` from ``body`` at ``offset``; return the values and the next offset."""
    values: list[Any] = []
    for code in formats:
        scalar = _SCALARS.get(code)
        if scalar is not None:
            end = _take(body, offset, scalar.size)
            values.append(scalar.unpack_from(body, offset)[0])
            offset = end
        elif code == "str":
            text, offset = _unpack_str(body, offset)
            values.append(text)
        elif code in ("i[]", "f[]"):
            end = _take(body, offset, 4)
            (count,) = _INT32.unpack_from(body, offset)
            end = _take(body, end, 4 * count)
            values.append(list(struct.unpack_from(f">{count}{code[0]}", body, offset + 4)))
            offset = end
        elif code == "str[]":
            _take(body, offset, 8)
            _size, count = struct.unpack_from(">ii", body, offset)
            offset += 8
            names = []
            for _ in range(count):
                text, offset = _unpack_str(body, offset)
                names.append(text)
            values.append(names)
        else:
            raise ProtocolError(f"unknown body format {code!r}")
    return values, offset


def _unpack_str(body: bytes, offset: int) -> tuple[str, int]:
    end = _take(body, offset, 4)
    (length,) = _INT32.unpack_from(body, offset)
    stop = _take(body, end, length)
    return body[end:stop].decode(_TEXT), stop


def encode_error(status: int = 0, message: str = "") -> bytes:
    data = _encode_text(message)
    return _ERROR_HEAD.pack(status, len(data)) + data


def decode_error(body: bytes, offset: int) -> tuple[int, str]:
    """Read the error section that ends every response body."""
    end = _take(body, offset, _ERROR_HEAD.size)
    status, length = _ERROR_HEAD.unpack_from(body, offset)
    stop = _take(body, end, length)
    return status, body[end:stop].decode(_TEXT)


def decode_reply(returns: Sequence[str], body: bytes) -> tuple[list[Any], int, str]:
    """Return values, error status and error description of a whole reply body.

    A reply that is only an error section (non-zero status or a description, nothing before
    it: what a controller answers to a command it does not know) gives no values and its error,
    rather than a misleading "body truncated" from reading the error section as return values.
    Bytes after the error section mean the reply does not have the layout read (a float64 where
    a float32 was expected reads as another number, the rest as "no error"): a ProtocolError,
    never those values.
    """
    try:
        values, offset = unpack_body(returns, body)
        status, message = decode_error(body, offset)
    except ProtocolError:
        if len(body) >= _ERROR_HEAD.size:
            status, length = _ERROR_HEAD.unpack_from(body, 0)
            if (status or length) and _ERROR_HEAD.size + length == len(body):
                return [], status, body[_ERROR_HEAD.size :].decode(_TEXT)
        raise
    extra = len(body) - (offset + _ERROR_HEAD.size + len(message))  # Latin-1: 1 char, 1 byte
    if extra:
        raise ProtocolError(
            f"{extra} bytes after the error section: the reply is not laid out as "
            f"({', '.join(returns)}) + error section"
        )
    return values, status, message


@functools.lru_cache(maxsize=64)  # once per distinct note, not at every poll
def _note(command: str, note: str) -> None:
    _log.warning(
        "%s: the controller answered with a note (status 0, values kept): %s", command, note
    )


def reply_values(command: str, body: bytes) -> list[Any]:
    """The return values of a whole reply body to ``command``; a note beside them is logged.

    Status 0 is "no error" (the manual); a description next to complete return values with
    status 0 is a note — the vendor client prints it and returns the values, and so does this:
    dropping them would lose the sample. A non-zero status, or a description where the return
    values should be (the error-only reply to a command the controller does not know), is a
    :class:`NanonisError`. A reply that does not decode names its command: the error row of a
    spec read through several commands says which reply was malformed."""
    returns = COMMANDS[command].returns
    try:
        values, status, message = decode_reply(returns, body)
    except ProtocolError as exc:
        raise ProtocolError(f"{command} reply: {exc}") from None
    if status or (message and len(values) != len(returns)):
        raise NanonisError(command, status, message)
    if message:
        _note(command, message)
    return values


def recv_exact(sock: socket.socket, size: int, deadline: float, expect: bytes = b"") -> bytes:
    """TCP may split a reply anywhere; loop until ``size`` bytes arrived or the deadline.

    Every ``recv`` waits only for what is left until ``deadline``, so header and body
    together never take longer than the request's timeout. Bytes that arrived before the
    end and do not begin with ``expect`` (the echoed command name) are not a late or cut
    reply but another protocol (an SSH banner is 20 bytes): a :class:`StreamError` says so.
    """
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    try:
        while got < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("reply incomplete at the deadline")
            sock.settimeout(remaining)
            n = sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError("connection closed by the controller")
            got += n
    except (TimeoutError, ConnectionError) as exc:
        start = bytes(buf[: min(got, len(expect))])
        if start != expect[: len(start)]:
            then = "nothing more in time" if isinstance(exc, TimeoutError) else "closed"
            text = bytes(buf[:got]).decode("latin-1")
            raise StreamError(
                f"reply {text!r} ({got} bytes, then {then}) to a {expect.decode('ascii')!r} request"
            ) from exc
        raise
    return bytes(buf)


MAX_REPLY_BODY = 16 * 1024 * 1024  # a larger size field means the stream is corrupt, not a reply


def exchange(sock: socket.socket, command: str, args: tuple[Any, ...], timeout: float) -> list[Any]:
    """Send one request and read its reply: one sendall, exact reads under one deadline
    (``timeout`` for the whole reply), leaving the socket's own timeout at ``timeout``."""
    body = pack_body(COMMANDS[command].args, args)
    deadline = time.monotonic() + timeout
    sock.sendall(encode_header(command, len(body)) + body)
    try:
        header = recv_exact(sock, HEADER_SIZE, deadline, command.encode("ascii"))
        try:
            echoed, size, _ = decode_header(header)
        except ProtocolError as exc:
            raise StreamError(f"garbled reply header: {exc}") from exc
        if echoed != command or size > MAX_REPLY_BODY:  # the stream is out of sync
            raise StreamError(f"reply {echoed!r} ({size} bytes) to a {command!r} request")
        payload = recv_exact(sock, size, deadline)
    finally:
        if sock.gettimeout() != timeout:
            sock.settimeout(timeout)
    return reply_values(command, payload)
