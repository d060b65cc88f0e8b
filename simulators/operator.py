"""Scenario files and a scripted operator that applies them through the Nanonis protocol.

trajmon infers operator actions by polling, so it can only be scored against an independent
record of what was really done. The scripted operator is that record: it acts like a person at
the GUI (its own TCP connection, one change at a time, frame edits as a whole Scan.FrameSet), reads
every affected setting back over the wire before and after, and logs one ground-truth entry per
channel label whose value actually changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from simulators.numbers import is_finite_number, yaml_number_hint
from simulators.stm_model import MAX_BIAS_V, MAX_SETPOINT_A, float32_setting
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    NanonisError,
    ProtocolError,
    decode_error,
    decode_header,
    encode_header,
    pack_body,
    unpack_body,
)
from trajmon.yamlfile import YamlFileError, read_yaml

__all__ = [
    "FRAME_FIELDS",
    "SPEC_LABELS",
    "AsyncNanonisClient",
    "Change",
    "Scenario",
    "ScenarioError",
    "ScriptedOperator",
    "TruthEntry",
    "default_scenario_path",
    "load_scenario",
    "quick_scenario_path",
]

FRAME_FIELDS = ("center_x", "center_y", "width", "height", "angle")
_FRAME_LABELS = {
    "center_x": "Scan Frame Center X",
    "center_y": "Scan Frame Center Y",
    "width": "Scan Frame Width",
    "height": "Scan Frame Height",
    "angle": "Scan Frame Angle",
}
_FLOAT_LABELS = {"Bias", "Z Setpoint", "Z Controller I Gain", *_FRAME_LABELS.values()}
_POSITIVE_LABELS = {"Z Setpoint", "Z Controller I Gain", "Scan Frame Width", "Scan Frame Height"}
SPEC_LABELS: frozenset[str] = frozenset(
    {*_FLOAT_LABELS, "Z Controller Enabled", "Scan Status Code", "Scan Frame"}
)
"""Labels a scenario may change (trajmon's default spec channel labels)."""

SleepFn = Callable[[float], Awaitable[None]]
# A change that fails with one of these is logged in ``errors`` and skipped; the scenario goes on.
# ValueError: a value the wire format cannot encode (AsyncNanonisClient.request).
_CHANGE_FAILURES = (OSError, EOFError, TimeoutError, NanonisError, ProtocolError, ValueError)
# Reads after an acknowledged set: the change happened, so its read-back is tried this often.
_READ_BACK_ATTEMPTS = 3


class ScenarioError(ValueError):
    """A scenario file is malformed; the message is one line naming the file and the entry."""


@dataclass(frozen=True, slots=True)
class Change:
    at_s: float
    spec: str
    value: float | int | bool | dict[str, float]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int | None
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class TruthEntry:
    """One spec channel whose value the operator changed, as read back over the wire."""

    change_idx: int
    at_s: float
    label: str
    old: float | int | bool
    new: float | int | bool
    t_sent_mono: float
    t_acked_mono: float
    t_sent_epoch: float


def _check_value(spec: str, value: object) -> Change | str:
    """Return the problem with ``value`` for ``spec`` as text, or a Change with at_s 0."""
    if spec not in SPEC_LABELS:
        return f"unknown spec {spec!r} (known: {', '.join(sorted(SPEC_LABELS))})"
    if spec == "Z Controller Enabled":
        return Change(0.0, spec, value) if isinstance(value, bool) else "value must be a boolean"
    if spec == "Scan Status Code":
        ok = isinstance(value, int) and not isinstance(value, bool) and value in (0, 1)
        return Change(0.0, spec, value) if ok else "value must be the integer 0 or 1"  # type: ignore[arg-type]
    if spec == "Scan Frame":
        if not isinstance(value, Mapping) or not value:
            return f"value must be a non-empty mapping with keys from {', '.join(FRAME_FIELDS)}"
        fields: dict[str, float] = {}
        for key, item in value.items():
            if key not in FRAME_FIELDS:
                return f"unknown Scan Frame field {key!r} (known: {', '.join(FRAME_FIELDS)})"
            problem = _check_value(_FRAME_LABELS[key], item)
            if isinstance(problem, str):
                return f"field {key}: {problem}"
            fields[key] = float(item)
        return Change(0.0, spec, fields)
    if not is_finite_number(value):
        return "value must be a finite number"
    number = float(value)
    if spec in _POSITIVE_LABELS and number <= 0:
        return "value must be positive"
    # What the simulator would refuse, refused now: at run time the change would be skipped.
    try:
        stored = float32_setting(spec, number, positive=spec in _POSITIVE_LABELS)
    except ValueError:
        return "value is out of float32 range (the Nanonis wire format)"
    if spec == "Bias" and abs(stored) > MAX_BIAS_V:
        return f"value must be within ±{MAX_BIAS_V:g} V"
    if spec == "Z Setpoint" and stored > MAX_SETPOINT_A:
        return f"value must be at most {MAX_SETPOINT_A:g} A"
    return Change(0.0, spec, number)


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario YAML file; raise :class:`ScenarioError` on any problem."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlFileError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: top level must be a mapping with name and changes")
    unknown = set(data) - {"name", "description", "seed", "changes"}
    if unknown:  # as text: YAML keys may be numbers or null, which join() and sorted() refuse
        shown = ", ".join(sorted(map(str, unknown)))
        raise ScenarioError(f"{path}: unknown top-level key(s): {shown}")
    name, description, seed = data.get("name"), data.get("description", ""), data.get("seed")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{path}: 'name' must be a non-empty string")
    if not isinstance(description, str):
        raise ScenarioError(f"{path}: 'description' must be a string")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ScenarioError(f"{path}: 'seed' must be a whole number >= 0")
    raw = data.get("changes")
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(f"{path}: 'changes' must be a non-empty list")
    changes: list[Change] = []
    previous = 0.0
    for idx, entry in enumerate(raw):
        where = f"{path}: changes[{idx}]"
        if not isinstance(entry, dict) or set(entry) != {"at_s", "spec", "value"}:
            raise ScenarioError(f"{where}: must be a mapping with exactly at_s, spec and value")
        where += f" ({entry['spec']!r})"
        at_s = entry["at_s"]
        if not is_finite_number(at_s) or at_s < 0:
            hint = yaml_number_hint(at_s)
            raise ScenarioError(f"{where}: at_s must be a non-negative number, got {at_s!r}{hint}")
        if at_s < previous:
            raise ScenarioError(f"{where}: at_s {at_s} is before the previous entry ({previous})")
        spec = str(entry["spec"])
        checked = _check_value(spec, entry["value"])
        if isinstance(checked, str):
            value = entry["value"]
            fields = value.values() if isinstance(value, Mapping) else [value]
            hint = next((h for v in fields if (h := yaml_number_hint(v))), "")
            got = f", got {value!r}{hint}" if spec in SPEC_LABELS else ""  # a value problem
            raise ScenarioError(f"{where}: {checked}{got}")
        changes.append(Change(float(at_s), checked.spec, checked.value))
        previous = float(at_s)
    return Scenario(name.strip(), description, seed, tuple(changes))


def _scenario_file(name: str) -> Path:
    return Path(str(resources.files("simulators") / "scenarios" / name))


def default_scenario_path() -> Path:
    """The 20-second demo scenario shipped with the package."""
    return _scenario_file("default.yaml")


def quick_scenario_path() -> Path:
    """The ~10-second scenario used by integration tests."""
    return _scenario_file("quick.yaml")


class AsyncNanonisClient:
    """Minimal asyncio client for the Nanonis protocol: one request in flight at a time."""

    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout_s
                )
            except TimeoutError as exc:
                where = f"{self.host}:{self.port}"
                raise TimeoutError(
                    f"cannot connect to {where} within {self.timeout_s:g} s"
                ) from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # a reset peer: the connection is closed anyway
                await writer.wait_closed()

    async def request(self, command: str, *args: Any) -> list[Any]:
        """Send one command and return its return values; raise NanonisError on error status."""
        spec = COMMANDS[command]
        try:  # before connecting: an unencodable value (1e300 as float32) sends nothing
            body = pack_body(spec.args, args)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{command}: cannot encode {args}: {exc}") from exc
        await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(encode_header(command, len(body)) + body)
        try:
            await self._writer.drain()
            header = await asyncio.wait_for(self._reader.readexactly(HEADER_SIZE), self.timeout_s)
            name, size, _ = decode_header(header)
            reply = await asyncio.wait_for(self._reader.readexactly(size), self.timeout_s)
            if name != command:
                raise ProtocolError(f"reply to {name!r} while waiting for {command!r}")
            values, offset = unpack_body(spec.returns, reply)
            status, message = decode_error(reply, offset)
        except asyncio.IncompleteReadError as exc:  # a dropped connection or an outage
            await self.close()
            raise ConnectionError(f"{command}: connection closed before the reply") from exc
        except TimeoutError as exc:  # bare TimeoutError() would name neither request nor wait
            await self.close()
            raise TimeoutError(f"{command}: no reply within {self.timeout_s:g} s") from exc
        except BaseException:
            await self.close()  # the stream position is unknown after a failure
            raise
        if status != 0:
            raise NanonisError(command, status, message)
        return values


class ScriptedOperator:
    """Apply a :class:`Scenario` at ``start + at_s`` through its own connection, logging truth."""

    def __init__(
        self,
        host: str,
        port: int,
        scenario: Scenario,
        truth_log: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: SleepFn = asyncio.sleep,
        timeout_s: float = 5.0,
        on_error: Callable[[str], object] | None = None,
    ) -> None:
        self.scenario = scenario
        self.truth: list[TruthEntry] = []
        self.errors: list[str] = []
        self.t_start_mono: float | None = None
        self.t_start_epoch: float | None = None
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.timeout_s = timeout_s  # per request of a scripted change
        self._client = AsyncNanonisClient(host, port, timeout_s)
        self._truth_path = Path(truth_log) if truth_log is not None else None
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._on_error = on_error

    async def run(self) -> list[TruthEntry]:
        """Apply every change in order; a failed change is recorded in ``errors`` and skipped."""
        log: IO[str] | None = None
        if self._truth_path is not None:
            log = self._truth_path.open("w", encoding="utf-8")
        try:
            self.t_start_mono, self.t_start_epoch = self._clock(), self._wall()
            self.started.set()
            for idx, change in enumerate(self.scenario.changes):
                delay = self.t_start_mono + change.at_s - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                try:
                    entries = await self._apply(idx, change)
                except _ReadBackError as exc:
                    what = f"was applied but not read back, so it is not in the truth: {exc}"
                    self.errors.append(f"change {idx} ({change.spec}) {what}")
                    if self._on_error is not None:
                        self._on_error(self.errors[-1])
                    continue
                except _CHANGE_FAILURES as exc:
                    self.errors.append(f"change {idx} ({change.spec}) failed: {exc!r}")
                    if self._on_error is not None:
                        self._on_error(self.errors[-1])
                    continue
                self.truth.extend(entries)
                if log is not None:
                    for entry in entries:
                        log.write(json.dumps(asdict(entry)) + "\n")
                    log.flush()
        finally:
            await self._client.close()
            if log is not None:
                log.close()
            self.finished.set()
        return self.truth

    async def _read(self, spec: str) -> dict[str, float | int | bool]:
        """Read every channel label that setting ``spec`` can change."""
        c = self._client
        if spec == "Bias":
            return {"Bias": (await c.request("Bias.Get"))[0]}
        if spec == "Z Setpoint":
            return {"Z Setpoint": (await c.request("ZCtrl.SetpntGet"))[0]}
        if spec == "Z Controller Enabled":
            return {spec: bool((await c.request("ZCtrl.OnOffGet"))[0])}
        if spec == "Z Controller I Gain":
            p, t, i = await c.request("ZCtrl.GainGet")
            return {"Z Controller P Gain": p, "Z Controller Time Constant": t, spec: i}
        if spec == "Scan Status Code":
            return {spec: int((await c.request("Scan.StatusGet"))[0])}
        frame = await c.request("Scan.FrameGet")
        return {_FRAME_LABELS[f]: v for f, v in zip(FRAME_FIELDS, frame, strict=True)}

    async def _write(self, change: Change, old: dict[str, float | int | bool]) -> None:
        c, spec, value = self._client, change.spec, change.value
        if spec == "Bias":
            await c.request("Bias.Set", value)
        elif spec == "Z Setpoint":
            await c.request("ZCtrl.SetpntSet", value)
        elif spec == "Z Controller Enabled":
            await c.request("ZCtrl.OnOffSet", 1 if value else 0)
        elif spec == "Z Controller I Gain":
            p = float(old["Z Controller P Gain"])
            await c.request("ZCtrl.GainSet", p, p / float(value), value)  # type: ignore[arg-type]
        elif spec == "Scan Status Code":
            await c.request("Scan.Action", 0 if value else 1, 1)  # start (upwards) or stop
        else:
            fields = value if isinstance(value, dict) else {_field_of(spec): value}
            frame = {f: old[_FRAME_LABELS[f]] for f in FRAME_FIELDS} | fields
            await c.request("Scan.FrameSet", *(frame[f] for f in FRAME_FIELDS))

    async def _apply(self, idx: int, change: Change) -> list[TruthEntry]:
        old = await self._read(change.spec)
        t_sent, t_epoch = self._clock(), self._wall()
        await self._write(change, old)
        t_acked = self._clock()
        new = await self._read_back(change.spec)
        return [
            TruthEntry(idx, change.at_s, label, old[label], new[label], t_sent, t_acked, t_epoch)
            for label in old
            if new[label] != old[label]
        ]

    async def _read_back(self, spec: str) -> dict[str, float | int | bool]:
        """The read after an acknowledged set, retried on a failure (a dropped connection is
        reopened): the set happened, and skipping the change like a failed set would leave
        a real change out of the truth, to be scored as a false detection."""
        for _ in range(_READ_BACK_ATTEMPTS - 1):
            with contextlib.suppress(*_CHANGE_FAILURES):
                return await self._read(spec)
        try:
            return await self._read(spec)
        except _CHANGE_FAILURES as exc:
            raise _ReadBackError(f"{_READ_BACK_ATTEMPTS} attempts, the last: {exc!r}") from exc


class _ReadBackError(Exception):
    """A set was acknowledged but the settings could not be read back afterwards."""


def _field_of(label: str) -> str:
    return next(f for f, lab in _FRAME_LABELS.items() if lab == label)
