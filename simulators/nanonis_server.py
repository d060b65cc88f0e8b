"""A Nanonis TCP programming-interface server over :class:`~simulators.stm_model.STMModel`.

It speaks the framing of :mod:`trajmon.drivers.nanonis_protocol` (one codec for driver and
simulator) and is checked against the vendor's own client, so the driver is tested against
something that behaves like the controller: one request at a time per connection, every reply
ending with an error section, replies written in a single write because the vendor client reads
the 40-byte header with one ``recv``. Latency, jitter and injected faults let tests exercise the
driver's timeouts and reconnects without hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from simulators.request_log import RequestLog
from simulators.stm_model import STMModel
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    ProtocolError,
    decode_header,
    encode_error,
    encode_reply_header,
    pack_body,
    unpack_body,
)

__all__ = ["HOST", "FaultInjector", "NanonisServer"]

HOST = "127.0.0.1"
ERROR_STATUS = 1
_MAX_BODY = 1 << 20
_EMPTY = {"f": 0.0, "d": 0.0, "i": 0, "I": 0, "h": 0, "H": 0, "str": ""}


@dataclass
class _Rule:
    kind: str  # "drop" | "error" | "hang"
    remaining: int
    command: str | None
    message: str = ""
    seconds: float = 0.0


def _check_delay(name: str, seconds: float) -> None:
    """NaN or infinity would withhold every reply for ever (``asyncio.sleep(nan)`` never ends)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")


class FaultInjector:
    """Faults armed by tests, consumed by the next matching requests (first armed, first used).

    Thread-safe so a test may arm faults while a blocking driver talks to the server from a thread.
    """

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def drop_next(self, n: int = 1, command: str | None = None) -> None:
        """Close the connection instead of replying to the next ``n`` (matching) requests."""
        self._arm(_Rule("drop", n, command))

    def error_next(
        self, n: int = 1, command: str | None = None, message: str = "injected error"
    ) -> None:
        """Reply with a non-zero error status and ``message`` (the set is not applied)."""
        self._arm(_Rule("error", n, command, message=message))

    def hang_next(self, n: int = 1, seconds: float = 30.0, command: str | None = None) -> None:
        """Withhold the reply for ``seconds``; afterwards the (late) reply is sent."""
        _check_delay("seconds", seconds)
        self._arm(_Rule("hang", n, command, seconds=seconds))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def pending(self) -> int:
        """Number of armed fault occurrences not used yet."""
        with self._lock:
            return sum(r.remaining for r in self._rules)

    def _arm(self, rule: _Rule) -> None:
        if rule.remaining < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._rules.append(rule)

    def take(self, command: str) -> _Rule | None:
        """Consume and return the first rule that matches ``command``, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.command is None or rule.command == command:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None


async def _stop_accepting(server: asyncio.Server) -> None:
    """Stop accepting before ``server.close()``, and let connections already accepted get their
    transports while the server is still open.

    On Python 3.11 a connection accepted in the loop iteration before ``close()`` gets its
    transport one iteration later, and that transport's constructor fails (``Server._attach``
    asserts the server is still open) after the socket has been handed to it; asyncio swallows
    the error and the half-built transport is later collected unclosed — a ResourceWarning that
    failed a fault test now and then. Removing the listener's reader cancels an accept not yet
    run, and one pass of the loop lets the pending ones finish; ``_on_connection`` then closes
    them, since ``_server`` is already None.
    """
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # a proactor loop (Windows) has no readers
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)


class NanonisServer:
    """asyncio TCP server; ``async with NanonisServer(model) as srv: srv.port``.

    ``stop()`` closes the listener and every client connection; ``start()`` again listens on the
    same port (an outage as seen by the driver).
    """

    def __init__(
        self,
        model: STMModel | None = None,
        port: int = 0,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        seed: int = 0,
        log_path: str | Path | None = None,
        on_log_error: Callable[[str], object] | None = None,
    ) -> None:
        _check_delay("latency_s", latency_s)
        _check_delay("jitter_s", jitter_s)
        self.model = model if model is not None else STMModel(seed=seed)
        self.host = HOST
        self.port = port
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.faults = FaultInjector()
        self.request_counts: Counter[str] = Counter()
        self.total_requests = 0
        self.total_connections = 0
        self._rng = np.random.default_rng(seed)
        said = on_log_error or (lambda line: print(line, file=sys.stderr, flush=True))
        self._requests_log = None if log_path is None else RequestLog(Path(log_path), said)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed: asyncio.Condition | None = None
        self._listened = False  # started once: a later start() is a restart after an outage
        # (names served by Signals.NamesGet, the model's index of each): see set_signal_layout
        names = self.model.signal_names()
        self._layout: tuple[tuple[str, ...], tuple[int, ...]] = (
            tuple(names),
            tuple(range(len(names))),
        )
        self._handlers: dict[str, Callable[[list[Any]], list[Any]]] = self._make_handlers()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._server is not None:
            return
        if self._requests_log is not None:
            self._requests_log.open(restart=self._listened)
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._listened = True

    async def stop(self) -> None:
        """Stop listening and close all client connections (pending replies are abandoned)."""
        server, self._server = self._server, None
        if server is not None:
            await _stop_accepting(server)
            server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._requests_log is not None:
            self._requests_log.close()

    @property
    def log_error(self) -> str | None:
        """Why the request log stopped (a full disk), or None while it is written."""
        return None if self._requests_log is None else self._requests_log.error

    @property
    def running(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> NanonisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_requests(self, total: int, command: str | None = None) -> None:
        """Wait until ``total`` requests (of ``command``, if given) have been received."""
        cond = self._condition()
        async with cond:
            await cond.wait_for(
                lambda: (self.request_counts[command] if command else self.total_requests) >= total
            )

    def set_signal_layout(self, sources: Sequence[str], names: Sequence[str] | None = None) -> None:
        """Reconfigure the signal list mid-run, as an operator can in the Signals Manager.

        Index ``i`` of ``Signals.NamesGet`` becomes ``names[i]`` (default ``sources[i]``) and
        ``Signals.ValGet``/``ValsGet`` at index ``i`` read the model's signal ``sources[i]``: a
        client that keeps the indexes it looked up earlier reads another signal under the old
        name. Takes effect at the next request; thread-safe (one attribute is replaced)."""
        known = self.model.signal_names()
        unknown = [s for s in sources if s not in known]
        shown = tuple(sources if names is None else names)
        if unknown or len(shown) != len(sources):
            problem = f"unknown sources {unknown}" if unknown else "one name per source needed"
            raise ValueError(f"signal layout: {problem} (the model's signals: {known})")
        self._layout = (shown, tuple(known.index(s) for s in sources))

    def _signal_values(self, indexes: Sequence[int]) -> list[float]:
        """Values at the served indexes, each read from the model signal the layout puts there."""
        source = self._layout[1]
        for index in indexes:
            if not 0 <= index < len(source):
                raise IndexError(f"signal index {index} out of range 0..{len(source) - 1}")
        return self.model.signal_values([source[i] for i in indexes])

    # ------------------------------------------------------------------ connection handling
    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._server is None:
            # Accepted just as stop() began: it could not see this connection to close it, and
            # an unclosed transport would only be noticed (as a ResourceWarning) when collected.
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.total_connections += 1
        try:
            await self._serve_client(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError):
            pass  # client left or broke the framing: drop the connection, as the controller does
        except asyncio.CancelledError:
            # stop() cancels us. Ending normally matters: asyncio (3.11) calls task.exception() on
            # this task when done, which raises and logs an error if the task ended cancelled.
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            command, size, want_reply = decode_header(await reader.readexactly(HEADER_SIZE))
            if size > _MAX_BODY:
                raise ProtocolError(f"body of {size} bytes is too large")
            body = await reader.readexactly(size)
            await self._count(command)
            rule = self.faults.take(command)
            delay = self.latency_s + (
                float(self._rng.uniform(0, self.jitter_s)) if self.jitter_s else 0
            )
            if rule is not None and rule.kind == "hang":
                delay += rule.seconds
            if delay > 0:
                await asyncio.sleep(delay)
            if rule is not None and rule.kind == "drop":
                self._log(command, "dropped")
                return
            if rule is not None and rule.kind == "error":
                reply, status = self._error_reply(command, rule.message), "error"
            else:
                reply, status = self._dispatch(command, body)
            self._log(command, status)
            if want_reply:
                # One write, header and body; a response header's last four bytes are zero.
                writer.write(encode_reply_header(command, len(reply)) + reply)
                await writer.drain()

    async def _count(self, command: str) -> None:
        self.request_counts[command] += 1
        self.total_requests += 1
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def _log(self, command: str, status: str) -> None:
        if self._requests_log is not None:
            self._requests_log.write(command, status)

    # ------------------------------------------------------------------ commands
    @staticmethod
    def _error_reply(command: str, message: str) -> bytes:
        """Zero-valued return arguments followed by a non-zero error section.

        Known commands keep their reply layout on error, so a client that parses the return values
        before the error section (the vendor's does) still finds the error text.
        """
        spec = COMMANDS.get(command)
        values = (
            [[] if code.endswith("[]") else _EMPTY[code] for code in spec.returns] if spec else []
        )
        returns = pack_body(spec.returns, values) if spec else b""
        return returns + encode_error(ERROR_STATUS, message)

    def _dispatch(self, command: str, body: bytes) -> tuple[bytes, str]:
        spec = COMMANDS.get(command)
        handler = self._handlers.get(command)
        if spec is None or handler is None:
            return self._error_reply(command, f"Unknown command: {command}"), "unknown"
        try:
            args, _ = unpack_body(spec.args, body)
            values = handler(args)
            return pack_body(spec.returns, values) + encode_error(0, ""), "ok"
        except (ProtocolError, ValueError, IndexError, OverflowError) as exc:
            return self._error_reply(command, str(exc)), "error"  # the client names the command

    def _make_handlers(self) -> dict[str, Callable[[list[Any]], list[Any]]]:
        m = self.model

        def setter(apply: Callable[[list[Any]], object]) -> Callable[[list[Any]], list[Any]]:
            def handle(args: list[Any]) -> list[Any]:
                apply(args)
                return []

            return handle

        return {
            "Bias.Get": lambda a: [m.get_bias()],
            "Bias.Set": setter(lambda a: m.set_bias(a[0])),
            "Current.Get": lambda a: [m.get_current()],
            "ZCtrl.ZPosGet": lambda a: [m.get_z()],
            "ZCtrl.SetpntGet": lambda a: [m.get_setpoint()],
            "ZCtrl.SetpntSet": setter(lambda a: m.set_setpoint(a[0])),
            "ZCtrl.OnOffGet": lambda a: [int(m.get_feedback_on())],
            "ZCtrl.OnOffSet": setter(lambda a: m.set_feedback_on(bool(a[0]))),
            "ZCtrl.GainGet": lambda a: list(m.get_gains()),
            # P and I are authoritative; the model recomputes T = P/I (as the GUI does).
            "ZCtrl.GainSet": setter(lambda a: m.set_gains(p_gain=a[0], i_gain=a[2])),
            "Scan.Action": setter(lambda a: m.scan_action(a[0], direction_up=bool(a[1]))),
            "Scan.StatusGet": lambda a: [m.get_scan_status()],
            "Scan.FrameGet": lambda a: list(m.get_scan_frame()),
            "Scan.FrameSet": setter(lambda a: m.set_scan_frame(*a)),
            "Signals.NamesGet": lambda a: [list(self._layout[0])],
            "Signals.ValGet": lambda a: self._signal_values([a[0]]),
            "Signals.ValsGet": lambda a: [self._signal_values(a[0])],
        }
