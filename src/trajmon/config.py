"""Monitor configuration: validated once, before anything is opened or written.

Every limit an operator can get wrong (an interval of 0, a negative window, a duplicate label) is
refused here with one sentence, so a bad configuration never produces a half-created run.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .channels import Kind, check_label
from .config_errors import MODELS, ConfigError, InvalidConfigError, format_validation_error

__all__ = [
    "DEFAULT_CHANNELS",
    "MAX_COUNT",
    "MAX_INTERVAL_S",
    "MAX_TIMEOUT_S",
    "MIN_INTERVAL_S",
    "SCHEDULE_FIELDS",
    "ChannelSpec",
    "ConfigError",
    "MonitorConfig",
    "check_run_name",
    "format_validation_error",
    "group_conflict",
    "label_key",
    "refuse_bool",
]


_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RUN_NAME_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_run_name(name: str) -> str:
    """Run names name SQL tables; any printable text works, except SQLite's reserved prefix."""
    text = name.strip()
    if not text:
        raise ConfigError("run name must not be empty")
    if _RUN_NAME_BAD.search(text):
        raise ConfigError(f"run name {name!r} contains control characters")
    if len(text) > 200:
        raise ConfigError(f"run name {name!r} is longer than 200 characters")
    if text.lower().startswith("sqlite_"):
        raise ConfigError(f"run name {name!r} must not start with 'sqlite_' (reserved by SQLite)")
    return text


#: Poll intervals: 1 µs is the flat-out rate the benchmarks record at (every tick late); below
#: it the missed-tick counts of a long run no longer fit SQLite's 64-bit INTEGER. A day is the
#: slowest schedule that still makes sense for a monitor (and keeps timers in range).
MIN_INTERVAL_S = 1e-6
MAX_INTERVAL_S = 86400.0
#: Timeouts and housekeeping periods: a day; socket and timer APIs overflow on larger values.
MAX_TIMEOUT_S = 86400.0
#: Counts (rotate_entries, commit_rows, queue_size): exact in JSON (2**53) and far inside SQLite's
#: signed 64-bit INTEGER, which the run row and the generated segment column need.
MAX_COUNT = 2**53


def _positive_finite(name: str, value: float | None, high: float, low: float = 0.0) -> None:
    """Finite, > 0, and within [low, high]: values outside break later (an OverflowError from
    SQLite or a socket) after the run row exists, so they are refused before it does."""
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    if value > high:
        raise ValueError(f"{name} must be at most {high:g} s, got {value:g}")
    if value < low:
        raise ValueError(f"{name} must be at least {low:g} s, got {value:g}")


#: The numbers that shape a run's schedule and windows: set on a run, and staged for the next.
SCHEDULE_FIELDS = (
    "interval_s",
    "signal_interval_s",
    "spec_interval_s",
    "rotate_entries",
    "window_before_s",
    "window_after_s",
)


def refuse_bool(value: Any) -> Any:
    """YAML ``true`` (``yes``, ``on``) is not a size or a count: pydantic would take it as 1."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _text(value: Any) -> Any:
    """A label or group YAML read as something else (``1``, ``yes``, ``2024-01-01``): say so,
    rather than pydantic's "Input should be a valid string"."""
    if value is None:
        raise ValueError("nothing given; give text, or leave the key out")
    if isinstance(value, bool | int | float) or type(value).__module__ == "datetime":
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        kind = "boolean" if isinstance(value, bool) else "number"
        kind = "date" if type(value).__module__ == "datetime" else kind
        raise ValueError(f"{shown} is read by YAML as a {kind}, not text; put it in quotes")
    return value


def label_key(label: str) -> str:
    """What makes two labels the same: case (SQLite column names are case-insensitive) and
    Unicode normalisation (``é`` typed as one character or as ``e`` + accent looks the same,
    and an operator cannot tell which one a query needs)."""
    return unicodedata.normalize("NFC", label).casefold()


class _Checked(BaseModel):
    """A model whose constructor's errors are one line (:class:`InvalidConfigError`) and whose
    unknown keys are named with the field that was probably meant."""

    if not TYPE_CHECKING:  # type checkers and IDEs keep pydantic's signature of the fields

        def __init__(self, /, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise InvalidConfigError.of(exc) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        MODELS[cls.__name__] = cls  # format_validation_error names their fields


class ChannelSpec(_Checked):
    """One entry of a channels file: a label bound to a parameter path."""

    model_config = ConfigDict(extra="forbid")

    label: str
    source: str = Field(description="instrument.parameter, or instrument.submodule.parameter")
    kind: Kind
    group: str | None = None
    interval_s: float | None = None
    # Finite: an infinite tolerance would make every change of the spec "within tolerance".
    tolerance_abs: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    tolerance_rel: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    _not_bool = field_validator("tolerance_abs", "tolerance_rel", "interval_s", mode="before")(
        refuse_bool
    )

    @field_validator("label", "group", mode="before")
    @classmethod
    def _is_text(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "group" and value is None:
            return None
        return _text(value)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_label(value)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) < 2 or not all(p.strip() for p in parts):
            raise ValueError(f"source {value!r} must look like 'instrument.parameter'")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and not _GROUP_NAME.match(value):
            raise ValueError(f"group {value!r} must be 1-64 of letters, digits, '_', '-', '.'")
        return value

    @model_validator(mode="after")
    def _checks(self) -> ChannelSpec:
        _positive_finite("interval_s", self.interval_s, MAX_INTERVAL_S, MIN_INTERVAL_S)
        if self.kind == "signal" and (
            self.tolerance_abs is not None or self.tolerance_rel is not None
        ):
            raise ValueError(f"{self.label!r}: tolerances apply to specs only")
        return self

    @property
    def group_name(self) -> str:
        return self.group or ("signals" if self.kind == "signal" else "specs")


def _spec(label: str, source: str, kind: Kind) -> ChannelSpec:
    return ChannelSpec(label=label, source=f"stm.{source}", kind=kind)


#: The seed design's channels on a Nanonis controller named ``stm``.
DEFAULT_CHANNELS: tuple[ChannelSpec, ...] = (
    _spec("Z Position", "z_position", "signal"),
    _spec("Tunnel Current", "current", "signal"),
    _spec("Bias", "bias", "spec"),
    _spec("Z Setpoint", "z_setpoint", "spec"),
    _spec("Z Controller Enabled", "z_controller_enabled", "spec"),
    _spec("Z Controller I Gain", "z_i_gain", "spec"),
    _spec("Scan Status Code", "scan_status", "spec"),
    _spec("Scan Frame Center X", "scan_frame_center_x", "spec"),
    _spec("Scan Frame Center Y", "scan_frame_center_y", "spec"),
    _spec("Scan Frame Width", "scan_frame_width", "spec"),
    _spec("Scan Frame Height", "scan_frame_height", "spec"),
    _spec("Scan Frame Angle", "scan_frame_angle", "spec"),
)


class MonitorConfig(_Checked):
    """Everything a run needs besides its instruments; stored verbatim on the run row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str | None = None
    db: Path = Path("trajmon.db")
    interval_s: float = 0.1
    signal_interval_s: float | None = None
    spec_interval_s: float | None = None
    rotate_entries: int = 6000
    window_before_s: float = 2.5
    window_after_s: float = 2.5
    commit_interval_s: float = 0.25
    commit_rows: int = 5000
    queue_size: int = 20000
    heartbeat_s: float = 1.0
    stale_after_s: float = 5.0
    read_timeout_s: float = 2.0
    duration_s: float | None = None
    signals: list[str] | None = None
    specs: list[str] | None = None
    channels: list[ChannelSpec] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    station: Path | None = None
    channels_file: Path | None = None
    source: Literal["sim", "tcp", "station", "instruments"] = "sim"

    _not_bool = field_validator(
        *SCHEDULE_FIELDS,
        "commit_interval_s",
        "commit_rows",
        "queue_size",
        "heartbeat_s",
        "stale_after_s",
        "read_timeout_s",
        "duration_s",
        mode="before",
    )(refuse_bool)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, value: str | None) -> str | None:
        return None if value is None else check_run_name(value)

    @model_validator(mode="after")
    def _checks(self) -> MonitorConfig:
        for name in ("interval_s", "signal_interval_s", "spec_interval_s"):
            _positive_finite(name, getattr(self, name), MAX_INTERVAL_S, MIN_INTERVAL_S)
        for name in ("commit_interval_s", "heartbeat_s", "stale_after_s", "read_timeout_s"):
            _positive_finite(name, getattr(self, name), MAX_TIMEOUT_S)
        _positive_finite("duration_s", self.duration_s, math.inf)
        if self.db.is_dir():  # also --db '' (the current directory)
            raise ValueError(f"db {str(self.db)!r} is a directory; give a database file")
        if self.rotate_entries < 1:
            raise ValueError(f"rotate_entries must be >= 1, got {self.rotate_entries}")
        if self.rotate_entries > MAX_COUNT:
            raise ValueError(f"rotate_entries must be <= 2**53, got {self.rotate_entries}")
        for name in ("window_before_s", "window_after_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.stale_after_s <= 2 * min(self.heartbeat_s, 1.0):
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must exceed two heartbeats"
                f" ({2 * min(self.heartbeat_s, 1.0)} s), or live runs would look crashed"
            )
        if not (1 <= self.commit_rows <= MAX_COUNT and 1 <= self.queue_size <= MAX_COUNT):
            raise ValueError("commit_rows and queue_size must be >= 1 and <= 2**53")
        seen: dict[str, str] = {}
        for spec in self.channels:
            key = label_key(spec.label)
            if key in seen:
                if seen[key].casefold() == spec.label.casefold():
                    raise ValueError(f"duplicate channel label {spec.label!r}")
                raise ValueError(
                    f"duplicate channel label {spec.label!r}: {seen[key]!a} and"
                    f" {spec.label!a} are the same text in different Unicode forms"
                    " (NFC/NFD); write both the same way"
                )
            seen[key] = spec.label
        conflict = group_conflict(self.channels)
        if conflict is not None:
            i, j, problem = conflict
            first, second = self.channels[j].label, self.channels[i].label
            raise ValueError(f"channels {first!r} and {second!r}: {problem}")
        for option, kind in (("signals", "signal"), ("specs", "spec")):
            for label in getattr(self, option) or []:
                match = next((c for c in self.channels if c.label == label), None)
                if match is None:
                    _near_miss(kind, label, self.channels)
                    known = ", ".join(c.label for c in self.channels if c.kind == kind)
                    hint = f"known: {known}" if known else f"the channels have no {kind}s"
                    raise ValueError(f"unknown {kind} label {label!r} ({hint})")
                if match.kind != kind:
                    raise ValueError(f"label {label!r} is a {match.kind}, not a {kind}")
            chosen = getattr(self, option)
            if chosen is not None and len(set(chosen)) != len(chosen):
                raise ValueError(f"duplicate label in {option}")
        return self

    def updated(self, **changes: object) -> MonitorConfig:
        """A validated copy with ``changes``: configs are immutable, so a refused change leaves
        the original intact."""
        return MonitorConfig(**{**self.model_dump(), **changes})  # refused as __init__ refuses

    def selected_channels(self) -> list[ChannelSpec]:
        """Channels this run records: all configured ones unless signals/specs narrow them."""
        out = []
        for spec in self.channels:
            chosen = self.signals if spec.kind == "signal" else self.specs
            if chosen is None or spec.label in chosen:
                out.append(spec)
        return out

    def group_interval(self, spec: ChannelSpec) -> float:
        """The poll interval of ``spec``'s group, decided by every configured channel, not only
        the selected ones: deselecting the entry that carries ``interval_s`` must not change
        how often the rest of its group is read."""
        if spec.interval_s is not None:
            return spec.interval_s
        group = spec.group_name
        for other in self.channels:
            if other.group_name == group and other.interval_s is not None:
                return other.interval_s
        per_kind = self.signal_interval_s if spec.kind == "signal" else self.spec_interval_s
        return per_kind if per_kind is not None else self.interval_s


def _near_miss(kind: str, label: str, channels: Sequence[ChannelSpec]) -> None:
    """A selected label that names a channel up to case or Unicode form: say which, rather than
    "unknown label 'Température' (known: Température)" — the same text to the eye when one
    is typed as ``é`` and the other as ``e`` + accent."""
    near = next((c.label for c in channels if label_key(c.label) == label_key(label)), None)
    if near is None:
        return
    if label.casefold() == near.casefold():
        shown, form = f"{label!r}: the channels have {near!r}", "case"
    else:
        shown, form = f"{label!a}: the channels have {near!a}", "Unicode form (NFC/NFD)"
    raise ValueError(
        f"unknown {kind} label {shown}, which differs in {form}; give the label exactly as"
        " the channels write it"
    )


def group_conflict(specs: Sequence[ChannelSpec]) -> tuple[int, int, str] | None:
    """The first entry that contradicts an earlier one of its group, as (index, earlier index,
    problem), or None. A group is one table and one schedule, so: one kind, one explicit
    interval (entries without one take it, wherever it is in the file), and one name up to case
    — SQLite table names are case-insensitive, so ``temps`` and ``Temps`` would collide."""
    first: dict[str, int] = {}
    timed: dict[str, int] = {}
    for i, spec in enumerate(specs):
        name, key = spec.group_name, spec.group_name.casefold()
        j = first.setdefault(key, i)
        earlier = specs[j]
        if earlier.group_name != name:
            problem = (
                f"group {name!r} differs from group {earlier.group_name!r} only in case"
                " (table names are case-insensitive); use one spelling"
            )
            return i, j, problem
        if earlier.kind != spec.kind:
            return i, j, f"group {name!r} mixes signals and specs; give them separate groups"
        if spec.interval_s is not None:
            k = timed.setdefault(key, i)
            if specs[k].interval_s != spec.interval_s:
                problem = (
                    f"group {name!r} has two intervals ({specs[k].interval_s} s and"
                    f" {spec.interval_s} s); give interval_s once or the same everywhere"
                )
                return i, k, problem
    return None
