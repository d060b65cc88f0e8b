"""Instruments from a QCoDeS station file, and the channels file that names what to record.

The station file is QCoDeS's own format, loaded by ``qcodes.Station`` so that every driver QCoDeS
can load (``type``, ``address``, ``init``, ``parameters``…) works unchanged. The channels file is
trajmon's: it binds labels to parameter paths and says which are signals and which are specs.

Both are checked before a run exists: a typo in either is one line naming the file and the entry,
never a run full of NULLs. Errors are :class:`~trajmon.config.ConfigError` (exit code 2).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import (
    ChannelSpec,
    ConfigError,
    format_validation_error,
    group_conflict,
    label_key,
)
from .resolve import resolve_parameter
from .yamlfile import YamlFileError, YamlSyntaxError, read_yaml

__all__ = [
    "check_channels",
    "close_station",
    "load_channels_file",
    "load_station",
    "read_station_names",
    "station_snapshot",
]


def _read_yaml(path: Path, what: str) -> Any:
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give the YAML file in it")
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        return read_yaml(path)
    except YamlSyntaxError as exc:  # a repeated key too: safe_load would keep the last silently
        raise ConfigError(f"{path}: malformed YAML at {exc}") from exc
    except YamlFileError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def read_station_names(path: Path) -> list[str]:
    """The instrument names a station file declares, without loading any driver.

    Used where connecting would be too much (``config set``) and as a pre-check that turns the
    common mistakes into one line before QCoDeS reports them its own way.
    """
    data = _read_yaml(path, "station file")
    instruments = data.get("instruments") if isinstance(data, dict) else None
    if not isinstance(instruments, dict) or not instruments:
        raise ConfigError(f"{path}: a station file needs an 'instruments:' mapping")
    for name, entry in instruments.items():
        if not isinstance(name, str):  # QCoDeS's own error: "expected string … got 'bool'"
            raise ConfigError(
                f"{path}: instrument name {name!r} is a YAML {type(name).__name__}, not a name;"
                " put it in quotes"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ConfigError(f"{path}: instrument {name!r} needs a 'type:' (driver class path)")
    return list(instruments)


def _driver_class(path: Path, name: str, type_path: str) -> Any:
    module_name, _, class_name = type_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: instrument {name!r}: cannot import {type_path!r}: {exc}"
        ) from exc


def _is_str_annotation(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return annotation is str or "str" in re.findall(r"[A-Za-z_]+", str(text))


def _references(cls: Any, init: Mapping[str, Any], names: set[str]) -> dict[str, str]:
    """``init`` values that name another instrument of the station, for arguments not typed
    ``str``: QCoDeS YAML cannot pass an instrument object (``DummyInstrumentWithMeasurement``'s
    ``setter_instr``), so trajmon passes the loaded instrument of that name."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    out = {}
    for key, value in init.items():
        named = isinstance(value, str) and value in names and key in params
        if named and not _is_str_annotation(params[key].annotation):
            out[key] = value
    return out


class _HeldBack(logging.Handler):
    """Log records no handler would take: Python prints those on stderr itself (``lastResort``),
    as QCoDeS's ``log.exception("Could not connect at …")`` of an instrument that is off —
    a traceback on the operator's terminal above the one-line error that says the same."""

    def __init__(self) -> None:
        super().__init__(logging.lastResort.level if logging.lastResort else logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def _unhandled(self, name: str) -> bool:
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return False
            logger = logger.parent if logger.propagate else None
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self._unhandled(record.name):  # where logging is configured, it goes there as ever
            self.records.append(record)


@contextlib.contextmanager
def _held_back() -> Iterator[None]:
    """Hold back the warnings and unhandled log lines of loading a station: shown as ever
    once it has loaded, dropped when it fails — the ``ConfigError`` is then the one line."""
    held, root = _HeldBack(), logging.getLogger()
    root.addHandler(held)
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        root.removeHandler(held)
    for record in held.records:
        if logging.lastResort is not None:
            logging.lastResort.handle(record)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_station(path: Path, *, update_snapshot: bool = False) -> tuple[Any, dict[str, Any]]:
    """Load every instrument of a QCoDeS station file -> (``Station``, ``{name: instrument}``).

    Instruments load in file order, except that one named by another's ``init`` loads first.
    A driver that cannot load (bad address, instrument off) refuses the whole station, and the
    instruments already loaded are closed again. What drivers and QCoDeS log or warn while
    loading is held back until the station has loaded: a failure is one ``ConfigError`` line,
    not a traceback QCoDeS logged on the way.
    """
    with _held_back():
        return _load_station(path, update_snapshot=update_snapshot)


def _close_unregistered(name: str) -> None:
    """Close the instrument ``name`` that QCoDeS made, then refused before adding it to the
    station (a ``parameters:`` entry with an ``initial_value`` out of its limits): no
    ``close_station`` reaches it, and it kept its connection and its name — loading the
    corrected file in the same process failed with ``Another instrument has the name``."""
    from qcodes.instrument import Instrument

    with contextlib.suppress(Exception):
        Instrument.find_instrument(name).close()


def _load_station(path: Path, *, update_snapshot: bool) -> tuple[Any, dict[str, Any]]:
    from qcodes.instrument import Instrument
    from qcodes.station import Station, ValidationWarning

    names = read_station_names(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ValidationWarning)
        try:
            station = Station(config_file=str(path), default=False)
        except Exception as exc:  # QCoDeS reports its schema and file errors its own way
            raise ConfigError(f"{path}: cannot load station file: {exc}") from exc
    for w in caught:
        if issubclass(w.category, ValidationWarning):
            first = str(w.message).strip().splitlines()[0]
            raise ConfigError(f"{path}: station file does not match the QCoDeS schema: {first}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert station.config is not None
    entries: dict[str, Any] = dict(station.config["instruments"])
    loaded: dict[str, Any] = {}
    loading: list[str] = []

    def load(name: str) -> Any:
        if name in loaded:
            return loaded[name]
        if name in loading:
            raise ConfigError(f"{path}: instruments refer to each other in a cycle: {loading}")
        loading.append(name)
        entry = entries[name]
        cls = _driver_class(path, name, entry["type"])
        init = dict(entry.get("init") or {})
        kwargs: dict[str, Any] = {
            key: load(ref) for key, ref in _references(cls, init, set(names) - {name}).items()
        }
        if "station" in inspect.signature(cls.__init__).parameters and "station" not in init:
            kwargs["station"] = station  # QCoDeS's DelegateInstrument convention
        existed = Instrument.exist(name)
        try:
            instrument = station.load_instrument(name, update_snapshot=update_snapshot, **kwargs)
        except BaseException as exc:
            if not existed:
                _close_unregistered(name)
            if isinstance(exc, ConfigError) or not isinstance(exc, Exception):
                raise
            # A parameter's set() (an initial_value out of its limits) appends "setting
            # dac_ch1 to 1000" to the args: str() would print the tuple of both.
            from .sampling import error_message

            message = " ".join(error_message(exc).split()) or type(exc).__name__
            raise ConfigError(f"{path}: cannot load instrument {name!r}: {message}") from exc
        loading.remove(name)
        loaded[name] = instrument
        return instrument

    try:
        # Drivers print "Connected to: <IDN>" (the IDN is in the snapshot anyway); stdout is
        # for --json output and stderr for one-line errors.
        with contextlib.redirect_stdout(io.StringIO()):
            for name in names:
                load(name)
    except BaseException:
        close_station(station)
        raise
    return station, {name: loaded[name] for name in names}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def station_snapshot(station: Any) -> tuple[dict[str, Any], list[str]]:
    """``station.snapshot(update=True)``, and the QCoDeS warnings it logged.

    Drivers log one warning per parameter they cannot read (a simulated Lakeshore: twenty);
    the caller reports them as one line instead of twenty on the operator's terminal.
    """
    logger = logging.getLogger("qcodes")
    collect, propagate = _Collect(), logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        snapshot: dict[str, Any] = station.snapshot(update=True)
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    return snapshot, collect.messages


def close_station(station: Any) -> None:
    """Close every instrument the station loaded (VISA sessions, sockets)."""
    station.close_all_registered_instruments()


def load_channels_file(path: Path) -> list[ChannelSpec]:
    """Parse and validate a channels file; entries are numbered from 1 in error messages.

    An entry without ``label`` is labelled with its parameter path (``ls.A.temperature``): QCoDeS
    labels repeat across channels (every Lakeshore input is "Temperature"), the path never does,
    and it is known without connecting to anything.
    """
    data = _read_yaml(path, "channels file")
    entries = data.get("channels") if isinstance(data, dict) else data
    if isinstance(data, dict) and set(data) - {"channels"}:
        extra = ", ".join(sorted(str(k) for k in set(data) - {"channels"}))
        raise ConfigError(f"{path}: unknown top-level key(s) {extra}; expected 'channels:'")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a 'channels:' list of entries")
    if not entries:
        raise ConfigError(f"{path}: no channels listed")
    specs: list[ChannelSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: entry {i}: expected a mapping with 'parameter' and 'kind'")
        fields = {str(k): v for k, v in entry.items()}
        if "parameter" in fields and "source" in fields:
            raise ConfigError(f"{path}: entry {i}: give 'parameter' or 'source', not both")
        parameter = fields.pop("parameter", fields.pop("source", None))
        if parameter is None:
            raise ConfigError(f"{path}: entry {i}: 'parameter' (instrument.parameter) is missing")
        if not isinstance(parameter, str):
            raise ConfigError(
                f"{path}: entry {i}: 'parameter' must be a path such as stm.bias, got {parameter!r}"
            )
        parameter = parameter.strip()  # " stm.bias " names stm.bias, as a label is stripped
        fields.setdefault("label", parameter)
        try:
            spec = ChannelSpec.model_validate({**fields, "source": parameter})
        except ValidationError as exc:
            problem = format_validation_error(exc)
            raise ConfigError(f"{path}: entry {i} ({parameter}): {problem}") from exc
        key = label_key(spec.label)
        if key in seen:
            raise ConfigError(
                f"{path}: entry {i}: duplicate label {spec.label!r} (entry {seen[key]} has it too)"
            )
        seen[key] = i
        specs.append(spec)
    conflict = group_conflict(specs)
    if conflict is not None:
        i, j, problem = conflict
        raise ConfigError(
            f"{path}: entries {j + 1} ({specs[j].label!r}) and {i + 1} ({specs[i].label!r}):"
            f" {problem}"
        )
    return specs


def check_channels(specs: list[ChannelSpec], instruments: Mapping[str, Any], path: Path) -> None:
    """Every entry's parameter exists on the loaded instruments and can be read."""
    for i, spec in enumerate(specs, start=1):
        try:
            resolve_parameter(spec.source, instruments)
        except ConfigError as exc:
            raise ConfigError(f"{path}: entry {i} ({spec.label!r}): {exc}") from exc
