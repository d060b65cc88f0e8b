"""Where a run's instruments come from: the simulator, a Nanonis controller, or a station file.

``run`` and ``list-signals``/``list-specs`` share this so that what an operator lists is exactly
what a run with the same options records.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from ..channels import Channel
from ..config import ConfigError, MonitorConfig
from ..resolve import build_groups
from ..staging import (
    NO_STATION_FILE,
    NO_TCP_ADDRESS,
    EffectiveConfig,
    StagedConfig,
    effective_config,
    merge_overrides,
)
from ..station import (
    check_channels,
    close_station,
    load_station,
    station_snapshot,
)
from .common import err_console

__all__ = [
    "NO_SOURCE",
    "channels_init_hint",
    "open_source",
    "plan_run",
    "resolved_channels",
    "static_instruments",
    "unavailable_notes",
]

NO_SOURCE = (
    "choose one instrument source: --sim, --host H --port P, or --station FILE"
    " (or stage one: trajmon config set --sim)"
)


def channels_init_hint(station: Path) -> str:
    """The refusal of a station run without a channels file, with the command to paste (the
    station's path quoted if need be: "my station.yaml" unquoted was two arguments)."""
    return (
        f"no channels file for station {station}: make one with `trajmon channels init"
        f" --station {shlex.quote(str(station))} -o channels.yaml`, edit it, then pass"
        " --channels channels.yaml (or stage it: trajmon config set --channels channels.yaml)"
    )


def _station_with_channels(
    eff: EffectiveConfig, *, snapshot: bool
) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Load the station and check the run's channels against it; close it again on error.

    The channels are the configuration's (read from the file when the run was planned, or
    stored with a resumed run), not the file again: what is checked is what gets recorded."""
    station_file = _station_file(eff)
    if eff.channels_file is None:
        raise ConfigError(channels_init_hint(station_file))
    station, instruments = load_station(station_file)
    try:
        _check_channels(eff, instruments)
        shot = None
        if snapshot:
            shot, unread = station_snapshot(station)
            if unread:
                err_console.print(
                    f"trajmon: note: station snapshot: {len(unread)} QCoDeS warning(s), e.g."
                    f" {unread[0]!r}; such values are null in the recorded snapshot",
                    markup=False,
                )
    except BaseException:
        close_station(station)
        raise
    return station, instruments, shot


def _station_file(eff: EffectiveConfig) -> Path:
    """The station file of a station source; a hand-edited staged config can lack it."""
    if eff.station is None:
        raise ConfigError(NO_STATION_FILE)
    return eff.station


def _check_channels(eff: EffectiveConfig, instruments: dict[str, Any]) -> None:
    """The run's channels against the instruments of any source (a station, the simulator, a
    Nanonis controller): an unknown parameter is one line naming the channels file and the
    entry, before anything is written. Without a channels file they are the defaults."""
    if eff.channels_file is not None:
        check_channels(eff.config.channels, instruments, eff.channels_file)


@asynccontextmanager
async def open_source(
    eff: EffectiveConfig, timeout: float
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Connected instruments for ``eff`` and the station snapshot (None for the Nanonis
    sources); instruments are closed when the block ends, however it ends."""
    from .connect import connect_nanonis
    from .run_cmd import sim_instruments

    if eff.source == "station":

        def load() -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
            return _station_with_channels(eff, snapshot=True)

        station, instruments, shot = await anyio.to_thread.run_sync(load)
        try:
            await anyio.to_thread.run_sync(_note_unavailable, eff.config, instruments)
            yield instruments, shot
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close_station, station)
    elif eff.source == "tcp":
        if eff.host is None or eff.port is None:
            raise ConfigError(NO_TCP_ADDRESS)
        async with connect_nanonis(eff.host, eff.port, timeout) as instruments:
            _check_channels(eff, instruments)
            await anyio.to_thread.run_sync(_note_unavailable, eff.config, instruments)
            yield instruments, None
    else:
        async with sim_instruments(timeout) as (_, instruments):
            _check_channels(eff, instruments)
            yield instruments, None


RUN_GOES_ON = "its reads fail until that changes; the other channels are recorded"


def _note_unavailable(config: MonitorConfig, instruments: dict[str, Any]) -> None:
    """Before a run's first read, a note for each channel it records that its driver says it
    cannot read now. The run is not refused: the instrument can change back (an operator
    undoing a relayout), and the failed reads are then recorded as errors, not lost."""
    try:
        groups = build_groups(config, instruments)
    except ConfigError:
        return  # the recorder refuses these channels itself, in its own words
    channels = [ch for group in groups for ch in group.channels]
    for note in unavailable_notes(channels, instruments, RUN_GOES_ON):
        err_console.print(note, markup=False)


def unavailable_notes(
    channels: Iterable[Channel], instruments: Mapping[str, Any], then: str
) -> list[str]:
    """``trajmon: note:`` lines, one per channel whose instrument says it cannot read it now
    (``then``: what follows from that), from the driver's optional method ``unavailable(params)
    -> {param: reason}``. Drivers without it are not asked; as for ``get_many``, only a method of
    the class counts (a QCoDeS parameter of that name would be *set* by a call)."""
    by_instrument: dict[str, list[Channel]] = {}
    for ch in channels:
        by_instrument.setdefault(ch.instrument, []).append(ch)
    notes: list[str] = []
    for name, chans in by_instrument.items():
        instrument: Any = instruments.get(name)
        if not callable(getattr(type(instrument), "unavailable", None)):
            continue
        try:
            why = dict(instrument.unavailable([ch.parameter for ch in chans]))
        except Exception as exc:  # a driver's fault must not stop the run it only comments on
            notes.append(
                f"trajmon: note: {name}: cannot tell which channels it can read"
                f" ({type(exc).__name__}: {exc})"
            )
            continue
        for ch in chans:
            if (reason := why.get(ch.parameter)) is not None:
                what = repr(ch.label) if ch.label == ch.source else f"{ch.label!r} ({ch.source})"
                notes.append(f"trajmon: note: {what} cannot be read now: {reason}; {then}")
    return notes


@contextmanager
def static_instruments(eff: EffectiveConfig) -> Iterator[dict[str, Any]]:
    """Instruments to *list* channels from, without a server: the station's own, or the
    in-process simulated STM (same parameter names as the Nanonis driver) for sim and TCP."""
    if eff.source == "station":
        station, instruments, _ = _station_with_channels(eff, snapshot=False)
        try:
            yield instruments
        finally:
            close_station(station)
        return
    from simulators.qcodes_sim import SimulatedSTM

    stm = SimulatedSTM("stm")
    try:
        _check_channels(eff, {"stm": stm})
        yield {"stm": stm}
    finally:
        stm.close()


def resolved_channels(
    config: MonitorConfig, instruments: dict[str, Any]
) -> list[tuple[Channel, float]]:
    """Every configured channel (ignoring the signals/specs selection), resolved, with the
    interval of the poll group it is read in."""
    everything = config.model_copy(update={"signals": None, "specs": None})
    return [
        (ch, group.interval_s)
        for group in build_groups(everything, instruments)
        for ch in group.channels
    ]


def unused_intervals(config: MonitorConfig, given: dict[str, float | None]) -> dict[str, str]:
    """The interval options given on the command line that no recorded group takes, with why:
    a channels file's ``interval_s`` outranks them all, and a per-kind interval outranks
    ``--interval-s``. An interval the user typed must not vanish silently."""
    explicit = {c.group_name for c in config.channels if c.interval_s is not None}
    used: set[str] = set()
    for spec in config.selected_channels():
        if spec.group_name in explicit:
            continue
        signal = spec.kind == "signal"
        per_kind = config.signal_interval_s if signal else config.spec_interval_s
        own = "--signal-interval-s" if signal else "--spec-interval-s"
        used.add(own if per_kind is not None else "--interval-s")
    file_only = "the channels file sets interval_s for every group it would apply to"
    outranked = "every group takes the channels file's interval_s or a per-kind interval"
    return {
        name: outranked if used and name == "--interval-s" else file_only
        for name, value in given.items()
        if value is not None and name not in used
    }


NO_RUN_NAME = (
    "no run name: pass --run-name NAME or stage one with `trajmon config set --run-name NAME`"
    " (or --resume NAME to continue a run)"
)


def plan_run(staged: StagedConfig, overrides: dict[str, Any], **fields: Any) -> EffectiveConfig:
    """defaults ← staged ← command line, refused (one line) when a run must not start."""
    merged = merge_overrides(staged, overrides)
    if merged.source is None:
        raise ConfigError(NO_SOURCE)
    if merged.run_name is None:
        raise ConfigError(NO_RUN_NAME)
    if merged.source == "station" and merged.channels is None and merged.station is not None:
        raise ConfigError(channels_init_hint(merged.station))
    return effective_config(merged, **fields)
