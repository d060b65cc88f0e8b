"""Connecting to a Nanonis controller from the command line: off the event loop, stoppable.

Connecting is the one step of a run that blocks for long (a name lookup, a host that does not
answer, a reply awaited for the whole timeout) before there is a run to stop gracefully: a stop
signal then ends the command at once. A refusal says which of two things happened, as they
need different fixes: nothing answered at the address, or something answered but not usably.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import typer

from ..config import ConfigError
from ..workers import InstrumentWorker
from . import runner
from .runner import say, signal_exit_code, stop_signal_numbers

__all__ = ["connect_nanonis"]


@asynccontextmanager
async def connect_nanonis(
    host: str, port: int, timeout: float, name: str = "stm"
) -> AsyncIterator[dict[str, Any]]:
    """Connect the Nanonis TCP driver off the event loop (the simulator may be running on it).

    A stop signal while connecting ends the command at once with one line and 128 + the signal:
    there is no run yet, so there is nothing to stop gracefully. The failures are told apart:
    nothing answering at the address, or something that answered but not usably."""
    from ..drivers.nanonis import HandshakeError, NanonisSTM

    host = host[1:-1] if host[:1] + host[-1:] == "[]" else host  # [::1], as we print it: ::1
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6: [::1]:6501

    def connect() -> Any:
        return NanonisSTM(name, address=host, port=port, timeout=timeout)

    try:
        instrument = await _unless_stopped(connect, where)
    except HandshakeError as exc:
        raise ConfigError(_unusable(where, exc)) from exc
    except (ConnectionError, OSError) as exc:
        raise ConfigError(f"instrument unreachable at {where}: {exc}") from exc
    try:
        yield {name: instrument}
    finally:
        await anyio.to_thread.run_sync(instrument.close)


def _unusable(where: str, exc: BaseException) -> str:
    """The refusal of an instrument that accepted the connection, by what its answer was."""
    from ..drivers.nanonis import NanonisError, ProtocolError

    cause = exc.__cause__
    if isinstance(cause, NanonisError):
        what = "answered with an error"
    elif isinstance(cause, TimeoutError):
        what = "accepted the connection but sent no reply (is another program connected to it?)"
    elif isinstance(cause, ProtocolError):
        what = (
            "answered, but not as a Nanonis TCP interface (is this the port of the controller's"
            " TCP programming interface?)"
        )
    else:
        what = "accepted the connection, then closed it without a reply"
    return f"instrument at {where} {what}: {cause or exc}"


async def _unless_stopped(connect: Callable[[], Any], where: str) -> Any:
    """``connect()`` on a worker thread of its own; a stop signal meanwhile abandons it and
    ends the command: one line, exit code 128 + the signal, no run and nothing written.

    A blocking connect (a name lookup, a host that does not answer, a reply awaited for the
    whole timeout) cannot be interrupted, and Python's KeyboardInterrupt waited for it and then
    reported the instrument as unreachable. The worker's thread is a daemon: abandoned in its
    connect, it cannot keep the process alive until its timeout."""
    loop = asyncio.get_running_loop()
    received: list[int] = []
    worker = InstrumentWorker("connect")
    try:
        with anyio.CancelScope() as scope:

            def handler(signum: int, _frame: object) -> None:
                runner.received_signals.append(signum)  # signals_restored: the process leaves
                received.append(signum)
                loop.call_soon_threadsafe(scope.cancel)

            with _signals_to(handler):
                return await worker.call(connect)
    finally:
        worker.close(timeout=0.0)  # done, or abandoned in its connect: not waited for
    say(f"trajmon: interrupted while connecting to {where}; nothing was recorded")
    raise typer.Exit(signal_exit_code(received[0]))


@contextmanager
def _signals_to(handler: Callable[[int, object], None]) -> Iterator[None]:
    """The stop signals to ``handler`` for the block's duration; the handlers found are put
    back after it."""
    saved: dict[int, Any] = {}
    for sig in stop_signal_numbers():
        with contextlib.suppress(ValueError, OSError):  # not the main thread; not supported
            saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            with contextlib.suppress(ValueError, OSError, TypeError):  # None: not from Python
                signal.signal(sig, old)
