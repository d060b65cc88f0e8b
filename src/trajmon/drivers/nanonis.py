"""Read-only QCoDeS driver for the Nanonis SPM controller's TCP programming interface.

trajmon only watches the controller, so every parameter is get-only: the driver has no code path
that sends a ``*Set`` command. It is blocking on purpose: trajmon runs each instrument on its own
worker thread, and a plain socket with a deadline is easier to reason about than an event loop
shared with the pollers.

Pollers read through :meth:`NanonisSTM.get_many`, which groups parameters by the Nanonis command
that returns them (one ``Signals.ValsGet`` for every signal, one ``Scan.FrameGet`` for the frame,
one ``ZCtrl.GainGet`` for the gains), so a fast poll costs a handful of round trips, not one per
parameter.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from qcodes.instrument import Instrument, InstrumentBaseKWArgs
from qcodes.parameters import Parameter, ParameterBase

from trajmon.drivers.nanonis_params import (
    SIGNAL_CHANNELS,
    SIGNALS_GET,
    SPEC_BY_NAME,
    SPECS,
    Plan,
    PlannedRequest,
)
from trajmon.drivers.nanonis_protocol import (
    HandshakeError,
    NanonisError,
    ProtocolError,
    exchange,
)
from trajmon.drivers.nanonis_signals import (
    SignalListChanged,
    SignalMap,
    check_count,
    unlisted,
    unlisted_signals,
)

__all__ = [
    "SIGNAL_CHANNELS",
    "HandshakeError",
    "NanonisError",
    "NanonisSTM",
    "ProtocolError",
    "SignalListChanged",
]

# A reconnect due within this is made now: a wait shown as "0.000 s" would be no wait at all.
_DUE_S = 0.0005


class NanonisSTM(Instrument):
    """Get-only view of a Nanonis controller over its TCP programming interface.

    The socket is guarded by a lock although trajmon calls each instrument from one worker thread:
    a stray call from another thread must never interleave two requests on the stream.
    """

    bias: Parameter
    current: Parameter
    z_position: Parameter
    z_setpoint: Parameter
    z_controller_enabled: Parameter
    z_p_gain: Parameter
    z_time_constant: Parameter
    z_i_gain: Parameter
    scan_status: Parameter
    scan_frame_center_x: Parameter
    scan_frame_center_y: Parameter
    scan_frame_width: Parameter
    scan_frame_height: Parameter
    scan_frame_angle: Parameter

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1",
        port: int = 6501,
        timeout: float = 2.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        clock: Callable[[], float] = time.monotonic,
        signal_check_s: float = 1.0,
        **kwargs: Unpack[InstrumentBaseKWArgs],
    ) -> None:
        # A port past 65535 is not refused by the socket layer: 70000 silently connects to 4464.
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"need a TCP port from 1 to 65535, got port={port!r}")
        first, cap = reconnect_backoff
        if not (math.isfinite(timeout) and timeout > 0 and 0 < first <= cap < math.inf):
            raise ValueError(
                "need a finite timeout > 0 and 0 < initial backoff <= maximum backoff, got "
                f"timeout={timeout!r}, reconnect_backoff={reconnect_backoff!r}"
            )
        if not (math.isfinite(signal_check_s) and signal_check_s >= 0):
            raise ValueError(f"need a finite signal_check_s >= 0, got {signal_check_s!r}")
        super().__init__(name, **kwargs)
        # '[::1]', as this driver and URLs write an IPv6 address next to a port, is ::1.
        self.address = address[1:-1] if address[:1] + address[-1:] == "[]" else address
        self.port = port
        self.timeout = timeout
        self.reconnect_backoff = (first, cap)
        self.reconnect_count = 0
        self.signal_check_s = signal_check_s
        self._meta_attrs += ["address", "port", "timeout", "signal_check_s"]
        self._clock = clock
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._signals = SignalMap()
        self._plans: dict[tuple[ParameterBase, ...], Plan] = {}
        self._delay = 0.0  # current backoff step; 0 means "next attempt is immediate"
        self._next_attempt = 0.0
        self._last_error = ""
        for spec in SPECS:
            param = self.add_parameter(
                spec.name,
                parameter_class=Parameter,
                label=spec.label,
                unit=spec.unit,
                get_cmd=self._getter(spec.name),
                set_cmd=False,
                vals=spec.validator(),
                docstring=f"{spec.doc} ({spec.command}, read-only)",
                # Every parameter here is get-only, so settable cannot tell a setting from a
                # measurement: `trajmon channels init` takes the kind from this instead.
                metadata={"trajmon_kind": spec.trajmon_kind},
            )
            setattr(self, spec.name, param)
        with self._lock:
            self._connect()  # raises ConnectionError; the metaclass then never registers us

    # -- public API -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def get_idn(self) -> dict[str, str | None]:
        """Static identity: the TCP interface has no *IDN?, and snapshots must not cost requests."""
        return {
            "vendor": "SPECS Nanonis",
            "model": "SPM controller (TCP interface)",
            "serial": f"{self.address}:{self.port}",
            "firmware": None,
        }

    def signal_names(self) -> list[str]:
        """The controller's signal list, fetched at connect, on every reconnect and before a
        signal read once ``signal_check_s`` has passed since the last fetch."""
        return list(self._signals.names)

    def read_signals(self, names: Sequence[str]) -> list[float]:
        """Read several signals by name with one Signals.ValsGet request (after fetching the
        signal list again when it is due: :class:`SignalListChanged` if one of ``names`` moved)."""
        with self._lock:
            self._ensure_connected()
            self._signals.read.update(names)
            if self._clock() - self._signals.checked_at >= self.signal_check_s:
                self._check_signals()
            moved = self._signals.take(names)
            if moved:
                raise SignalListChanged("; ".join(moved.values()))
            index = self._signals.index
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(f"signals {unknown} are not in the controller's list")
            indexes = [index[n] for n in names]
            values = self._request(SIGNALS_GET, (indexes, 0))[0]
            return check_count(values, len(indexes))

    def unavailable(self, params: Sequence[ParameterBase]) -> dict[ParameterBase, str]:
        """Those of ``params`` backed by a signal the controller's list (as last fetched) lacks,
        with why: trajmon notes them before a run's first read, not after hours of failures."""
        signals = {p: SIGNAL_CHANNELS.get(p.short_name) for p in params if p.instrument is self}
        return unlisted_signals(signals, self._signals.names)  # a tuple, replaced whole: no lock

    def get_many(self, params: Sequence[ParameterBase]) -> list[object]:
        """Read ``params`` in as few requests as possible; failures are returned, not raised.

        Each entry is the value or the exception for that entry, so one failed request never
        costs the other entries. After a timeout or a lost connection the remaining requests of
        the call are not sent (they would each wait for the timeout): they fail fast with a
        ``ConnectionError`` and the next call reconnects. Parameter caches are updated as ``get``
        would update them.
        """
        key = tuple(params)
        out = self._read(key)
        for param, value in zip(key, out, strict=True):
            if not isinstance(value, BaseException):
                param.cache._update_with(value=value, raw_value=value)
        return out

    def snapshot_base(
        self, update: bool | str | None = False, params_to_skip_update: Sequence[str] | None = None
    ) -> dict[Any, Any]:
        """Snapshot with batched reads: update=True costs seven requests, not fourteen.

        QCoDeS 0.59+ (on Python 3.12+) passes ``update`` on as ``"All"``, ``"Only_invalid"`` or
        ``"Never"``: read as truthy, "Never" made every snapshot read all seven. The type takes
        both versions' (0.58 has only bool and None), and goes to QCoDeS as it came."""
        skip = list(params_to_skip_update or ())
        if update not in (False, "Never"):
            every = update is True or update == "All"
            todo = [self.parameters[s.name] for s in SPECS if s.name not in skip]
            todo = [p for p in todo if every or not p.cache.valid]
            self.get_many(todo)
            skip += [p.short_name for p in todo]  # already attempted once; don't retry one by one
        as_given: Any = update  # QCoDeS' own type for it differs between 0.58 and 0.59+
        return super().snapshot_base(update=as_given, params_to_skip_update=skip)

    def close(self) -> None:
        """Close the socket, then let QCoDeS unregister the instrument."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            with lock:
                self._drop()
        super().close()

    # -- plans ----------------------------------------------------------------------------------

    def _getter(self, name: str) -> Callable[[], object]:
        def get() -> object:
            value = self._read((self.parameters[name],))[0]
            if isinstance(value, BaseException):
                raise value
            return value

        return get

    def _read(self, key: tuple[ParameterBase, ...]) -> list[object]:
        with self._lock:
            try:
                self._ensure_connected()
            except ConnectionError as exc:
                return [exc] * len(key)
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plan(key)
            if not plan.signals or self._clock() - self._signals.checked_at < self.signal_check_s:
                return self._execute(plan, None)
            try:
                self._check_signals()
            except Exception as exc:  # the list is unknown: no signal value can be trusted
                return self._execute(plan, exc)
            return self._execute(self._plans.get(key) or self._plan(key), None)

    def _plan(self, key: tuple[ParameterBase, ...]) -> Plan:
        """Group ``key`` by command. Built after connecting, since signal indexes may change."""
        groups: dict[str, list[tuple[int, int, Callable[[Any], object]]]] = {}
        signals: list[int] = []
        errors: list[tuple[int, str]] = []
        names: list[tuple[int, str]] = []
        for pos, param in enumerate(key):
            spec = SPEC_BY_NAME.get(param.short_name)
            if spec is None or param.instrument is not self:
                errors.append((pos, f"{param.full_name} is not a parameter of {self.name}"))
                continue
            index = spec.slot
            if spec.command == SIGNALS_GET:
                signal = SIGNAL_CHANNELS[spec.name]
                names.append((pos, signal))
                self._signals.read.add(signal)
                if (why := unlisted(signal, self._signals.names)) is not None:
                    errors.append((pos, why))  # with the names to look for, as status shows it
                    continue
                index = len(signals)
                signals.append(self._signals.index[signal])
            groups.setdefault(spec.command, []).append((pos, index, spec.kind))
        requests = tuple(
            PlannedRequest(cmd, (signals, 0) if cmd == SIGNALS_GET else (), tuple(picks))
            for cmd, picks in groups.items()
        )
        if len(self._plans) >= 64:  # callers use a few fixed tuples; don't grow without bound
            self._plans.clear()
        plan = self._plans[key] = Plan(len(key), requests, tuple(errors), tuple(names))
        return plan

    def _execute(self, plan: Plan, unchecked: BaseException | None) -> list[object]:
        """Send ``plan``'s requests. ``unchecked``: why the signal list could not be fetched;
        the signal request is then not sent (its indexes may be stale) and fails with it."""
        out: list[object] = [None] * plan.size
        for pos, message in plan.errors:
            out[pos] = ValueError(message)
        broken = unchecked if isinstance(unchecked, TimeoutError | ConnectionError) else None
        for req in plan.requests:
            if req.command == SIGNALS_GET and unchecked is not None:
                exc: BaseException = unchecked
            elif broken is not None:
                exc = ConnectionError(f"{req.command} not sent: {broken}")
            else:
                try:
                    reply = self._request(req.command, req.args)
                    if req.command == SIGNALS_GET:
                        reply = check_count(reply[0], len(req.args[0]))
                except (TimeoutError, ConnectionError) as e:
                    exc = broken = e
                except Exception as e:  # NanonisError / ProtocolError: this request only
                    exc = e
                else:
                    for pos, index, convert in req.picks:
                        out[pos] = convert(reply[index])
                    continue
            for pos, _, _ in req.picks:
                out[pos] = exc
        notes = self._signals.take(name for _, name in plan.signals)
        for pos, name in plan.signals:  # read at its new index, but the change must be seen
            if name in notes:
                out[pos] = SignalListChanged(notes[name])
        return out

    # -- connection -----------------------------------------------------------------------------

    def _where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address  # IPv6: [::1]:6501
        return f"Nanonis TCP interface at {host}:{self.port}"

    def _connect(self) -> None:
        """Open the socket and fetch the signal list; any failure leaves us disconnected."""
        sock: socket.socket | None = None
        try:
            try:
                sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"no connection within {self.timeout} s") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                names = tuple(exchange(sock, "Signals.NamesGet", (), self.timeout)[0])
            except TimeoutError as exc:  # accepted, but nobody answers on this port
                raise TimeoutError(f"no reply to Signals.NamesGet within {self.timeout} s") from exc
        except (OSError, NanonisError, ProtocolError) as exc:
            failed = ConnectionError if sock is None else HandshakeError  # None: not connected
            if sock is not None:
                sock.close()
            raise failed(f"cannot connect to {self._where()}: {exc}") from exc
        self._sock = sock
        self._adopt(names)

    def _check_signals(self) -> None:
        """Fetch the signal list again: the operator may reconfigure it during a run."""
        self._adopt(tuple(self._request("Signals.NamesGet", ())[0]))

    def _adopt(self, names: tuple[str, ...]) -> None:
        if self._signals.adopt(names, self._clock()):
            self._plans.clear()

    def _ensure_connected(self) -> None:
        """Reconnect if needed, with capped exponential backoff that never sleeps."""
        if self._sock is not None:
            return
        wait = self._next_attempt - self._clock()
        if wait >= _DUE_S:
            raise ConnectionError(
                f"not connected to {self._where()}; next reconnect attempt in "
                f"{wait:.3f} s (last error: {self._last_error})"
            )
        try:
            self._connect()
        except ConnectionError as exc:
            first, cap = self.reconnect_backoff
            self._delay = min(cap, self._delay * 2) if self._delay else first
            self._next_attempt = self._clock() + self._delay
            self._last_error = str(exc)
            when = f"in {self._delay:.3f} s" if self._delay >= _DUE_S else "at the next call"
            raise ConnectionError(f"{exc}; next attempt {when}") from exc
        self._delay = 0.0
        self.reconnect_count += 1

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(self, command: str, args: tuple[Any, ...]) -> list[Any]:
        """One round trip on the open socket; drops the connection when the stream is unusable."""
        sock = self._sock
        if sock is None:
            raise ConnectionError(f"not connected to {self._where()}")
        try:
            return exchange(sock, command, args, self.timeout)
        except TimeoutError as exc:
            self._drop()
            self._last_error = f"{command} timed out"
            raise TimeoutError(
                f"{command}: no reply from {self._where()} within {self.timeout} s; "
                "connection closed, the next call reconnects"
            ) from exc
        except OSError as exc:  # not ProtocolError: a body that does not decode was read whole
            self._drop()
            self._last_error = f"{command}: {exc}"
            raise ConnectionError(
                f"{command}: connection to {self._where()} lost ({exc}); the next call reconnects"
            ) from exc
