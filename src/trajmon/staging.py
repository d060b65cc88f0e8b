"""The staged monitor configuration: what ``trajmon run`` uses when the command line is silent.

An operator stages a configuration once (``trajmon config set``) and names each run on purpose:
the staged ``run_name`` is single-use, cleared after every run that started. Precedence is
defaults ← staged ← command line. Every staged change is validated before it is written, so the
file never holds a configuration ``run`` would refuse (a file changed by hand is checked again
when it is read).

The file is JSON, at ``$TRAJMON_CONFIG``, else ``$XDG_CONFIG_HOME/trajmon/config.json``, else
``~/.config/trajmon/config.json``. Paths in it are absolute, so ``run`` works from any directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .config import (
    DEFAULT_CHANNELS,
    SCHEDULE_FIELDS,
    ChannelSpec,
    ConfigError,
    MonitorConfig,
    check_run_name,
    format_validation_error,
    refuse_bool,
)
from .files import replace_text_file

__all__ = [
    "NO_STATION_FILE",
    "NO_TCP_ADDRESS",
    "SOURCE_FIELDS",
    "EffectiveConfig",
    "StagedConfig",
    "clear_staged",
    "consume_run_name",
    "default_config_path",
    "effective_config",
    "merge_overrides",
    "read_staged",
    "stage",
    "write_staged",
]

Source = Literal["sim", "tcp", "station"]
#: Fields that together choose where the instruments come from.
SOURCE_FIELDS = ("source", "host", "port", "station")


def default_config_path() -> Path:
    """``$TRAJMON_CONFIG``, else the XDG config directory, else ``~/.config``."""
    explicit = os.environ.get("TRAJMON_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "trajmon" / "config.json"


#: A source without what it needs (a hand-edited file, or one cleared half-way by an older
#: trajmon): said the same wherever it is found.
NO_TCP_ADDRESS = "source 'tcp' has no --host H --port P; give them, or another source"
NO_STATION_FILE = "source 'station' has no --station FILE; give one, or another source"


class StagedConfig(BaseModel):
    """Every field optional: unset means "the default, unless the command line says"."""

    model_config = ConfigDict(extra="forbid")

    run_name: str | None = None
    db: Path | None = None
    interval_s: float | None = None
    signal_interval_s: float | None = None
    spec_interval_s: float | None = None
    rotate_entries: int | None = None
    window_before_s: float | None = None
    window_after_s: float | None = None
    signals: list[str] | None = None
    specs: list[str] | None = None
    source: Source | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    station: Path | None = None
    channels: Path | None = None

    # JSON ``true`` is not 1: a hand-edited ``"interval_s": true`` must not poll once a second.
    _not_bool = field_validator(*SCHEDULE_FIELDS, "port", mode="before")(refuse_bool)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, value: str | None) -> str | None:
        return None if value is None else check_run_name(value)

    @field_validator("signals", "specs")
    @classmethod
    def _selects_some(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """An empty list (a hand-edited file) would record none of that kind without a word;
        the command line refuses it too (``--signals ''``)."""
        if value is not None and not value:
            kind = str(info.field_name)[:-1]
            raise ValueError(f"an empty list selects no {kind}; to record every {kind}, remove it")
        return value

    def values(self) -> dict[str, Any]:
        """The fields that are set, JSON-ready."""
        return self.model_dump(mode="json", exclude_none=True)


def read_staged(path: Path) -> StagedConfig:
    """The staged configuration; an absent file stages nothing."""
    hint = "fix it or run `trajmon config clear`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return StagedConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read staged config {path}: {exc}") from exc
    except UnicodeDecodeError as exc:  # written by another tool (UTF-16, Latin-1)
        raise ConfigError(
            f"staged config {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); {hint}"
        ) from exc
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
        return StagedConfig.model_validate(data)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"staged config {path} is not valid JSON ({exc}); {hint}") from exc
    except (ValidationError, _RepeatedKeyError) as exc:
        problem = format_validation_error(exc) if isinstance(exc, ValidationError) else exc
        raise ConfigError(f"staged config {path} is invalid ({problem}); {hint}") from exc


class _RepeatedKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A field given twice in a hand-edited file: ``json`` would keep the last one silently."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _RepeatedKeyError(f"{key!r} is given twice")
        data[key] = value
    return data


def write_staged(path: Path, staged: StagedConfig) -> None:
    """Replace the file in one step: a crash mid-write leaves the old file, never half a file.
    The new file keeps the old one's permissions (:func:`~trajmon.files.replace_text_file`)."""
    # A symlinked file (a dotfiles repository) stays a link: its target is replaced.
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_text_file(target, json.dumps(staged.values(), indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write staged config {path}: {exc}") from exc


def clear_staged(path: Path, fields: list[str] | None = None) -> list[str]:
    """Clear ``fields`` (all when None); returns the names that were set and are now cleared."""
    if fields is None:
        try:
            had = list(read_staged(path).values())
        except ConfigError:  # an unreadable file is exactly what clearing everything is for
            had = ["(unreadable file)"]
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot remove staged config {path}: {exc}") from exc
        return had
    unknown = [f for f in fields if f not in StagedConfig.model_fields]
    if unknown:
        known = ", ".join(StagedConfig.model_fields)
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)} (fields: {known})")
    if set(fields) & set(SOURCE_FIELDS):
        # host, port and station only make sense with the source they belong to: clearing any
        # of them clears the whole source, never leaving "source: tcp" without a host.
        fields = [*fields, *(f for f in SOURCE_FIELDS if f not in fields)]
    staged = read_staged(path)
    if set(fields) & set(SOURCE_FIELDS) and staged.source == "station":
        # A station's channels file names its instruments, and the selections its labels:
        # left staged without the station, `config set --sim` would refuse them.
        fields = [*fields, *(f for f in ("channels", "signals", "specs") if f not in fields)]
    cleared = [f for f in fields if getattr(staged, f) is not None]
    if cleared:
        write_staged(path, staged.model_copy(update=dict.fromkeys(cleared)))
    return cleared


def consume_run_name(path: Path) -> bool:
    """Clear the staged run name after a run started; True when there was one."""
    if not path.exists():
        return False
    return bool(clear_staged(path, ["run_name"]))


def _absolute(value: Path, *, follow: bool) -> Path:
    """Absolute. A station or channels file is kept as the operator named it, so re-pointing a
    link (``channels.yaml -> cooldown-2.yaml``) is seen by the next run; the database is
    resolved, because SQLite keeps its WAL beside the file a link points to."""
    value = value.expanduser()
    if follow:
        try:
            return value.resolve()
        except (OSError, RuntimeError):  # a symlink loop: refused in one line where it is opened
            pass
    return Path(os.path.abspath(value))


def _with_source(staged: StagedConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply changes; a newly chosen source replaces the old one's fields as a whole, and a
    new channels file the selections made from the previous one's labels."""
    new = {k: v for k, v in changes.items() if v is not None}
    for key in ("db", "station", "channels"):
        if key in new:
            new[key] = _absolute(new[key], follow=key == "db")
    chosen = {k for k in ("host", "port", "station") if k in new}
    if new.get("source") == "sim" and chosen:
        raise ConfigError("choose one instrument source: --sim, --host H --port P, or --station")
    if "station" in new and chosen & {"host", "port"}:
        raise ConfigError("choose one instrument source: --host H --port P, or --station FILE")
    merged = staged.model_dump()
    stale: set[str] = set()  # what named the old source's channels, or the old file's labels
    if "channels" in new and new["channels"] != merged.get("channels"):
        # A selection staged for a station before it had a channels file was checked against
        # nothing yet: it is checked against this first file, not dropped.
        unchecked = merged.get("channels") is None and merged.get("source") == "station"
        if not unchecked:
            stale |= {"signals", "specs"}
    if "source" in new or chosen:
        source = new.get("source") or ("station" if "station" in new else "tcp")
        new["source"] = source
        if source != (merged.get("source") or "sim"):
            stale |= {"host", "port", "station", "channels", "signals", "specs"}
    merged.update(dict.fromkeys(stale - new.keys()), **new)
    return merged


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """The configuration a run starts with, and where its instruments come from."""

    config: MonitorConfig
    source: Source | None
    host: str | None
    port: int | None
    station: Path | None
    channels_file: Path | None


def _channels_for(
    staged: StagedConfig, station_names: list[str] | None
) -> list[ChannelSpec] | None:
    from .station import load_channels_file

    if staged.channels is None:
        return None
    specs = load_channels_file(staged.channels)
    hint = ""
    if station_names is not None:  # read from the staged station file
        names, where = station_names, str(staged.station)
    else:  # the simulator and a Nanonis controller are one instrument, named stm
        names, where = ["stm"], "the simulator or a Nanonis controller"
        hint = "; for a station's instruments, give --station FILE with it"
    for i, spec in enumerate(specs, start=1):
        instrument = spec.source.split(".")[0]
        if instrument not in names:
            raise ConfigError(
                f"{staged.channels}: entry {i} ({spec.label!r}): instrument {instrument!r}"
                f" is not in {where} (instruments: {', '.join(names)}){hint}"
            )
    return specs


def effective_config(
    staged: StagedConfig, *, duration_s: float | None = None, **fields: Any
) -> EffectiveConfig:
    """Build and validate the :class:`MonitorConfig` that ``staged`` describes.

    Labels in ``signals``/``specs`` are checked against the channels file when there is one, or
    the simulator's default channels; a station without a channels file cannot check them yet.
    ``fields`` are further :class:`MonitorConfig` values that are never staged.
    """
    if staged.source == "tcp" and (staged.host is None) != (staged.port is None):
        raise ConfigError("--host and --port go together")
    if staged.source == "tcp" and staged.host is None:
        raise ConfigError(NO_TCP_ADDRESS)
    if staged.source == "station" and staged.station is None:
        raise ConfigError(NO_STATION_FILE)
    from .station import read_station_names

    # Read now, with or without a channels file: a station file that is missing or not YAML is
    # refused when it is staged, not when the next run (or `channels init`) reads it.
    names = None if staged.station is None else read_station_names(staged.station)
    channels = _channels_for(staged, names)
    unchecked = staged.source == "station" and channels is None
    fields = {
        **{
            k: v
            for k, v in staged.model_dump().items()
            if v is not None and k not in ("source", "host", "port", "channels")
        },
        **fields,
    }
    if unchecked:
        fields.pop("signals", None)
        fields.pop("specs", None)
    fields["channels"] = channels if channels is not None else list(DEFAULT_CHANNELS)
    fields["channels_file"] = staged.channels
    fields["duration_s"] = duration_s
    fields["source"] = staged.source or "sim"
    try:
        config = MonitorConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    if unchecked:
        config = config.model_copy(update={"signals": staged.signals, "specs": staged.specs})
    return EffectiveConfig(
        config, staged.source, staged.host, staged.port, staged.station, staged.channels
    )


def stage(path: Path, changes: dict[str, Any]) -> StagedConfig:
    """Merge ``changes`` into the staged file after validating the result; on any error the
    file is left exactly as it was."""
    current = read_staged(path)
    try:
        staged = StagedConfig.model_validate(_with_source(current, changes))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    try:
        effective_config(staged)
    except ConfigError as exc:
        # A selection staged earlier (for a station without a channels file yet) and checked
        # only now: say which, or the operator looks for the label in this command.
        kept = [
            f
            for f in ("signals", "specs")
            if changes.get(f) is None
            and any(f"label {label!r}" in str(exc) for label in getattr(staged, f) or [])
        ]
        if not kept:
            raise
        fix = " ".join(f"--field {f}" for f in kept)
        raise ConfigError(
            f"{exc}; the staged {' and '.join(kept)} came from an earlier `config set`: give"
            f" new ones here, or clear them: trajmon config clear {fix}"
        ) from exc
    write_staged(path, staged)
    return staged


def merge_overrides(staged: StagedConfig, overrides: dict[str, Any]) -> StagedConfig:
    """Command-line values over staged ones (same rules as ``config set``, nothing written)."""
    try:
        return StagedConfig.model_validate(_with_source(staged, overrides))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
