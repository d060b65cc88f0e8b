"""Reading a poll group: one hop per instrument per tick, on that instrument's own thread.

Each instrument's calls run on its :class:`~trajmon.workers.InstrumentWorker` thread. A poll
group's channels on one instrument are read in a single hop — through the driver's
``get_many`` where it has one (e.g. Nanonis Signals.ValsGet) — and different instruments are
read concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from .channels import Channel, PollGroup
from .clock import ThreadClock
from .records import IMMUTABLE_TYPES, owned_value
from .workers import CallTimeoutError, InstrumentBusyError, InstrumentWorker

__all__ = ["GroupReader", "ReadFailure", "error_message"]


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """Why one channel has no value in a sample."""

    channel: str
    instrument: str
    error_type: str
    message: str


def error_message(exc: BaseException) -> str:
    """``str(exc)``, except for the context QCoDeS adds: a parameter's ``get()`` appends
    ``"getting g_bad"`` to the exception's args, and ``str()`` of two args is their tuple —
    ``('sensor unplugged', 'getting g_bad')`` on every error line; this gives
    ``sensor unplugged (getting g_bad)``. Exceptions that print themselves (an ``OSError``'s
    ``[Errno 111] …``) are left as they are."""
    args: tuple[Any, ...] = exc.args
    context: list[str] = []
    while len(args) > 1 and isinstance(args[-1], str) and args[-1].startswith(_CONTEXT):
        context.insert(0, args[-1])
        args = args[:-1]
    if not context or len(args) != 1 or type(exc).__str__ not in _PLAIN_STR:
        return str(exc)
    return f"{args[0]} ({', '.join(context)})"


_CONTEXT = ("getting ", "setting ")
_PLAIN_STR = (BaseException.__str__, KeyError.__str__)


def _owning(fn: Callable[[], Sequence[Any]]) -> Callable[[], Sequence[Any]]:
    """``fn`` with its values made the sample's own on the instrument's thread, before that
    thread's next read (of this group or another) can change them."""
    return lambda: tuple(map(owned_value, fn()))


def _read_each(params: Sequence[Any]) -> tuple[Any, ...]:
    """Each parameter's value, or what it raised — any exception: on the instrument's thread
    even a KeyboardInterrupt or SystemExit is the driver's own, and fails only its channel."""
    out: list[Any] = []
    for param in params:
        try:
            out.append(param.get())
        except BaseException as exc:
            out.append(exc)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _InstrumentPlan:
    instrument: str
    worker: InstrumentWorker
    fn: Callable[[], Sequence[Any]]
    positions: tuple[int, ...]
    labels: tuple[str, ...]


def _make_read(instrument: Any, params: tuple[Any, ...]) -> Callable[[], tuple[Any, ...]]:
    """The one call that reads ``params``. Values come back as a tuple: a tuple of numbers is
    one the garbage collector stops tracking at its first pass, so a sample waiting for the
    disk costs no collector work after that (a list would be walked at every pass).

    ``get_many`` counts only as a method of the driver's class: a QCoDeS instrument also
    answers ``instrument.get_many`` with a parameter or function of that name (through its
    ``__getattr__``), and calling a parameter with an argument *sets* it."""
    if callable(getattr(type(instrument), "get_many", None)):
        get_many = instrument.get_many
        return lambda: tuple(get_many(params))
    return lambda: _read_each(params)


class GroupReader:
    """Reads all channels of one poll group: one hop per instrument, instruments concurrently."""

    def __init__(
        self,
        group: PollGroup,
        instruments: dict[str, Any],
        workers: dict[str, InstrumentWorker],
        read_timeout_s: float | None,
    ) -> None:
        self.size = len(group.channels)
        self._timeout = read_timeout_s
        by_instrument: dict[str, list[tuple[int, Channel]]] = {}
        for pos, channel in enumerate(group.channels):
            by_instrument.setdefault(channel.instrument, []).append((pos, channel))
        self._plans = tuple(
            _InstrumentPlan(
                instrument=name,
                worker=workers[name],
                fn=_make_read(instruments[name], tuple(c.parameter for _, c in members)),
                positions=tuple(p for p, _ in members),
                labels=tuple(c.label for _, c in members),
            )
            for name, members in by_instrument.items()
        )

    async def read(self) -> tuple[list[Any], list[ReadFailure]]:
        return await self._read_all(None, self._timeout)

    @property
    def timeout_s(self) -> float | None:
        return self._timeout

    def thread_plan(self) -> tuple[InstrumentWorker, Callable[[], Any]] | None:
        """The one instrument's worker and read, when the group reads a single instrument:
        then its schedule can run on that worker's thread (:mod:`trajmon.threaded`)."""
        if len(self._plans) != 1:
            return None
        return self._plans[0].worker, self._plans[0].fn

    def parse(
        self, results: Any, error: BaseException | None
    ) -> tuple[Sequence[Any], Sequence[ReadFailure]]:
        """Values and failures of a single-instrument read that returned ``results`` or raised
        ``error`` (the same rules as the loop-driven path; one instrument, so its positions are
        0..size-1). The thread has already taken a full tuple of plain values as it is
        (:meth:`ThreadedGroup.tick`); one of other types (numpy scalars, say) with no exception
        among them is taken as it is here, checked per type rather than per value."""
        types = set(map(type, results)) if type(results) is tuple else set()
        if (
            error is None
            and type(results) is tuple
            and len(results) == self.size
            and not any(issubclass(t, BaseException) for t in types)
        ):
            if all(t in IMMUTABLE_TYPES or issubclass(t, np.generic) for t in types):
                return results, ()
            return tuple(map(owned_value, results)), ()
        values: list[Any] = [None] * self.size
        failures: list[ReadFailure] = []
        plan = self._plans[0]
        if error is not None:
            failures.extend(
                ReadFailure(lbl, plan.instrument, type(error).__name__, error_message(error))
                for lbl in plan.labels
            )
            return values, failures
        self._fill(plan, tuple(map(owned_value, results)), values, failures)
        return values, failures

    def failures(self, error_type: str, message: str) -> list[ReadFailure]:
        """The same failure for every channel (a timeout or a busy instrument)."""
        plan = self._plans[0]
        return [ReadFailure(lbl, plan.instrument, error_type, message) for lbl in plan.labels]

    async def read_at(
        self, due: float, clock: ThreadClock
    ) -> tuple[list[Any], list[ReadFailure], float]:
        """Read at ``due`` precisely: each instrument's thread waits out the last stretch itself
        (``clock.block_until``) and notes when its read began.

        Returns the values, the failures and the read's start instant — the earliest
        instrument's, which becomes the sample's ``dt_s`` (see docs/trajectory_model.md). When
        no instrument started (busy, or abandoned before it began) the start is the tick itself,
        or now if the tick is already past. The timeout counts from the tick.
        """
        submitted = clock.monotonic()
        starts: list[float] = []  # appended from the worker threads (list.append is atomic)

        def at_due(fn: Callable[[], Sequence[Any]]) -> Callable[[], Sequence[Any]]:
            def run() -> Sequence[Any]:
                clock.block_until(due)
                starts.append(clock.monotonic())
                return fn()

            return run

        timeout = None if self._timeout is None else self._timeout + max(0.0, due - submitted)
        values, failures = await self._read_all(at_due, timeout)
        return values, failures, min(starts, default=max(due, submitted))

    async def _read_all(
        self,
        wrap: Callable[[Callable[[], Sequence[Any]]], Callable[[], Sequence[Any]]] | None,
        timeout: float | None,
    ) -> tuple[list[Any], list[ReadFailure]]:
        values: list[Any] = [None] * self.size
        failures: list[ReadFailure] = []
        if len(self._plans) == 1:
            await self._read_one(self._plans[0], values, failures, wrap, timeout)
        else:
            async with anyio.create_task_group() as tg:
                for plan in self._plans:
                    tg.start_soon(self._read_one, plan, values, failures, wrap, timeout)
        return values, failures

    async def _read_one(
        self,
        plan: _InstrumentPlan,
        values: list[Any],
        failures: list[ReadFailure],
        wrap: Callable[[Callable[[], Sequence[Any]]], Callable[[], Sequence[Any]]] | None,
        timeout: float | None,
    ) -> None:
        try:
            fn = _owning(plan.fn if wrap is None else wrap(plan.fn))
            results = await plan.worker.call(fn, timeout)
        except CallTimeoutError:
            # Only the worker's deadline: a driver's own TimeoutError (a socket's, after its own
            # wait) keeps its type and words below, as on the instrument's thread (parse).
            message = f"no answer within {self._timeout} s"
            failures.extend(
                ReadFailure(lbl, plan.instrument, "timeout", message) for lbl in plan.labels
            )
            return
        except BaseException as exc:
            # A driver's KeyboardInterrupt or SystemExit (a get_many's) comes back from its
            # thread like any exception: a failed read, not the event loop's end with the run
            # left unfinished. Only this task's own cancellation goes on.
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            kind = "busy" if isinstance(exc, InstrumentBusyError) else type(exc).__name__
            failures.extend(
                ReadFailure(lbl, plan.instrument, kind, error_message(exc)) for lbl in plan.labels
            )
            return
        try:
            self._fill(plan, results, values, failures)
        except ValueError as exc:  # a driver's get_many fault: this instrument's read failed
            failures.extend(
                ReadFailure(lbl, plan.instrument, type(exc).__name__, error_message(exc))
                for lbl in plan.labels
            )

    @staticmethod
    def _fill(
        plan: _InstrumentPlan, results: Any, values: list[Any], failures: list[ReadFailure]
    ) -> None:
        """Raises ``ValueError``, having filled nothing, when ``results`` (a driver's
        ``get_many`` answer) does not have one entry per parameter."""
        if len(results) != len(plan.labels):
            raise ValueError(
                f"get_many answered {len(results)} values for {len(plan.labels)} parameters"
            )
        for pos, label, result in zip(plan.positions, plan.labels, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(
                    ReadFailure(
                        label, plan.instrument, type(result).__name__, error_message(result)
                    )
                )
            else:
                values[pos] = result
