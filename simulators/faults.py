"""Timed fault plans for ``trajmon sim serve --faults FILE``.

Tests of a *separate* trajmon process cannot call the server's fault-injection methods, so the
same faults can be scheduled from a YAML file instead::

    faults:
      - {at_s: 2.0, fault: drop, command: Signals.ValsGet}     # close the connection
      - {at_s: 3.0, fault: error, n: 3, message: "overload"}   # error replies
      - {at_s: 4.0, fault: hang, seconds: 5}                   # no reply for 5 s
      - {at_s: 6.0, fault: outage, seconds: 10}                # server gone, then back
      - {at_s: 8.0, fault: relayout, signals: [Input 1 (V), Current (A)]}  # signals reordered

Times count from when the server starts listening. ``relayout`` is the operator reconfiguring
the Signals Manager (:meth:`NanonisServer.set_signal_layout`): from then on the signal list is
exactly ``signals`` (here two entries), index ``i`` serving the model's signal ``signals[i]``
under the name ``names[i]`` (default: the signal's own name).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path

from simulators.nanonis_server import NanonisServer
from simulators.numbers import is_finite_number, yaml_number_hint
from simulators.stm_model import SIGNAL_NAMES
from trajmon.drivers.nanonis_protocol import COMMANDS
from trajmon.yamlfile import YamlFileError, read_yaml

__all__ = ["FaultPlanError", "FaultPlanStopped", "FaultStep", "load_fault_plan", "play_faults"]

_KINDS = ("drop", "error", "hang", "outage", "relayout")
_KEYS = {"at_s", "fault", "n", "command", "seconds", "message", "signals", "names"}
_REQUIRED = {"at_s", "fault"}
#: The keys each kind uses. Any other would be ignored, and the plan would not do what it says:
#: ``{fault: outage, command: Bias.Get}`` takes the whole server away, ``{fault: drop, seconds:
#: 10}`` drops one request, not ten seconds of them.
_KIND_KEYS = {
    "drop": _REQUIRED | {"n", "command"},
    "error": _REQUIRED | {"n", "command", "message"},
    "hang": _REQUIRED | {"n", "command", "seconds"},
    "outage": _REQUIRED | {"seconds"},
    "relayout": _REQUIRED | {"signals", "names"},
}


class FaultPlanError(ValueError):
    """A fault plan file is malformed; one line naming the file and the entry."""


class FaultPlanStopped(RuntimeError):
    """After an outage the server could not listen again (its port was taken meanwhile)."""


@dataclass(frozen=True, slots=True)
class FaultStep:
    at_s: float
    fault: str
    n: int = 1
    command: str | None = None
    seconds: float = 5.0
    message: str = "injected error"
    #: relayout: the model's signal served at each index, and the name shown for it (None: itself)
    signals: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None


def load_fault_plan(path: str | Path) -> list[FaultStep]:
    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlFileError as exc:
        raise FaultPlanError(f"{path}: cannot read fault plan: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        raise FaultPlanError(f"{path}: top level must be a mapping with a 'faults' list")
    unknown = set(data) - {"faults"}
    if unknown:  # as in a scenario: a misplaced key would be a part of the plan never played
        raise FaultPlanError(
            f"{path}: unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}"
        )
    steps: list[FaultStep] = []
    for idx, entry in enumerate(data["faults"]):
        where = f"{path}: faults[{idx}]"
        if not isinstance(entry, dict) or not _REQUIRED <= entry.keys() <= _KEYS:
            raise FaultPlanError(f"{where}: needs 'at_s' and 'fault', may have {sorted(_KEYS)}")
        kind = entry["fault"]
        if not isinstance(kind, str) or kind not in _KINDS:
            raise FaultPlanError(f"{where}: fault must be one of {', '.join(_KINDS)}")
        extra = entry.keys() - _KIND_KEYS[kind]
        if extra:
            raise FaultPlanError(
                f"{where}: {', '.join(sorted(extra))} does not apply to fault {kind}"
                f" (it takes {', '.join(sorted(_KIND_KEYS[kind]))})"
            )
        message = entry.get("message", "injected error")
        if isinstance(message, bool) or not isinstance(message, str | int | float):
            raise FaultPlanError(f"{where}: message must be text, got {message!r}")
        command = entry.get("command")
        if command is not None and (not isinstance(command, str) or command not in COMMANDS):
            # A typo would otherwise be a fault that silently never fires.
            raise FaultPlanError(
                f"{where}: unknown command {command!r} (known: {', '.join(COMMANDS)})"
            )
        step = FaultStep(
            at_s=_seconds(where, "at_s", entry["at_s"]),
            fault=entry["fault"],
            n=_count(where, entry.get("n", 1)),
            command=command,
            seconds=_seconds(where, "seconds", entry.get("seconds", 5.0)),
            message=str(message),
        )
        if kind == "relayout":
            signals, names = _layout(where, entry)
            step = replace(step, signals=signals, names=names)
        steps.append(step)
    steps.sort(key=lambda s: s.at_s)
    _check_outages(path, steps)
    return steps


def _check_outages(path: Path, steps: list[FaultStep]) -> None:
    """Refuse an outage that starts while another is still on: the plan is played in order, so
    it would begin only when the first ends, and the server would be gone longer than written."""
    end: FaultStep | None = None
    for step in steps:
        if step.fault != "outage":
            continue
        if end is not None and step.at_s < end.at_s + end.seconds:
            raise FaultPlanError(
                f"{path}: the outage at {step.at_s:g} s starts during the one at {end.at_s:g} s"
                f" (server back at {end.at_s + end.seconds:g} s); merge them into one outage"
            )
        end = step


def _seconds(where: str, key: str, value: object) -> float:
    """A finite number >= 0: NaN or infinity would hang the server (or the plan) for ever."""
    bad = FaultPlanError(
        f"{where}: {key} must be a finite number >= 0, got {value!r}{yaml_number_hint(value)}"
    )
    if not is_finite_number(value) or value < 0:
        raise bad
    return float(value)


def _layout(
    where: str, entry: dict[object, object]
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The ``signals`` and ``names`` of a relayout, checked now: the server would refuse them
    (or send a name the driver never sees as written) only when the step is played."""
    if "signals" not in entry:
        raise FaultPlanError(
            f"{where}: fault relayout needs signals: the model's signal at each index, in order"
        )
    signals = _texts(where, "signals", entry["signals"])
    unknown = [s for s in signals if s not in SIGNAL_NAMES]
    if unknown:
        raise FaultPlanError(
            f"{where}: unknown signal {unknown[0]!r} (known: {', '.join(SIGNAL_NAMES)})"
        )
    if "names" not in entry:
        return signals, None
    names = _texts(where, "names", entry["names"])
    if len(names) != len(signals):
        raise FaultPlanError(
            f"{where}: names must give one name per signal ({len(signals)}), got {len(names)}"
        )
    for name in names:
        try:
            name.encode("latin-1")  # the protocol's strings: another character is sent as '?'
        except UnicodeEncodeError:
            raise FaultPlanError(
                f"{where}: name {name!r} cannot be sent: the protocol's text is Latin-1"
            ) from None
    return signals, names


def _texts(where: str, key: str, value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise FaultPlanError(f"{where}: {key} must be a non-empty list of names, got {value!r}")
    return tuple(value)


def _count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FaultPlanError(f"{where}: n must be a whole number >= 1, got {value!r}")
    return value


async def play_faults(server: NanonisServer, steps: list[FaultStep]) -> None:
    """Apply each step at its time; an outage stops the server and restarts it on its port.

    Raises :class:`FaultPlanStopped` when the restart fails: the server is then down for good,
    which must not pass for an outage that never ends.
    """
    start = time.monotonic()
    for step in steps:
        delay = start + step.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if step.fault == "drop":
            server.faults.drop_next(step.n, step.command)
        elif step.fault == "error":
            server.faults.error_next(step.n, step.command, step.message)
        elif step.fault == "hang":
            server.faults.hang_next(step.n, step.seconds, step.command)
        elif step.fault == "relayout":
            server.set_signal_layout(step.signals, step.names)
        else:
            await server.stop()
            await asyncio.sleep(step.seconds)
            try:
                await server.start()
            except OSError as exc:
                raise FaultPlanStopped(
                    f"fault plan: after the outage at {step.at_s:g} s the server cannot listen"
                    f" on {server.host}:{server.port} again: {exc.strerror or exc}"
                ) from exc
