"""A TCP listener on 127.0.0.1 that plays a controller in driver tests: it accepts connections
on a daemon thread and hands each to :meth:`FakeController.serve`, which a test's subclass
writes (answer, stay silent, send a banner); :meth:`close` ends it whatever it is blocked in."""

from __future__ import annotations

import contextlib
import socket
import threading


class FakeController:
    """Subclasses write :meth:`serve`; one connection at a time, in order of arrival. ``done``
    is set at :meth:`close`: a ``serve`` that keeps a connection open and silent waits on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with conn, contextlib.suppress(OSError):  # the client went away: the next one
                self.serve(conn)

    def close(self) -> None:
        self.done.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(timeout=5)
