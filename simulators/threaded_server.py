"""A :class:`~simulators.nanonis_server.NanonisServer` on its own event-loop thread.

Synchronous code (the QCoDeS driver and its tests) cannot await the server's start and stop;
this runs the server's loop on a daemon thread and offers blocking calls instead.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from simulators.nanonis_server import FaultInjector, NanonisServer
from simulators.stm_model import STMModel

__all__ = ["ThreadedNanonisServer"]


class ThreadedNanonisServer:
    """A :class:`NanonisServer` on its own event-loop thread, for synchronous tests and drivers.

    ``with ThreadedNanonisServer(model) as srv:`` exposes ``srv.port``, ``srv.server`` (its
    ``faults`` and counters) and blocking ``stop()``/``start()`` for outages.
    """

    def __init__(self, model: STMModel | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nanonis-sim", daemon=True
        )
        self.server = NanonisServer(model, **kwargs)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def faults(self) -> FaultInjector:
        return self.server.faults

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self.server.start())

    def stop(self) -> None:
        self._call(self.server.stop())

    def close(self) -> None:
        if self._thread.is_alive():
            self.stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> ThreadedNanonisServer:
        try:
            self.start()
        except BaseException:  # a port in use: no __exit__ follows to end the loop's thread
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
