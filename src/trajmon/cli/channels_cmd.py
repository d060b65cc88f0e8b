"""``trajmon channels init``, ``trajmon list-signals`` and ``trajmon list-specs``.

A channels file is written once per setup, from the station itself (so every parameter path is
right), then pruned by the operator; the list commands show what a run would record, with the
unit, storage type and validator each label resolves to.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from ..channels import Channel, Kind
from ..config import ConfigError, MonitorConfig, format_validation_error
from ..staging import effective_config, merge_overrides, read_staged
from ..starter import output_target, starter_channels_yaml, write_new_file
from ..station import close_station, load_station
from .common import JsonOption, console, err_console, print_json, print_table, user_errors
from .config_cmd import (
    ChannelsOption,
    ConfigPathOption,
    StationOption,
    config_path_or_default,
    option_overrides,
)
from .sources import resolved_channels, static_instruments, unavailable_notes

__all__ = ["channels_app", "list_signals", "list_specs"]

channels_app = typer.Typer(help="Channels files: labels bound to instrument parameters.")

SimOption = Annotated[bool, typer.Option("--sim", help="List the simulator's default channels.")]


@channels_app.callback()
def _channels() -> None:
    """Channels files: labels bound to instrument parameters."""


@channels_app.command("init")
def init(
    station: StationOption = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Channels file to write.")] = Path(
        "channels.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    config_path: ConfigPathOption = None,
) -> None:
    """Write a starter channels file listing every gettable parameter of a station."""
    with user_errors():
        station_file = station or read_staged(config_path_or_default(config_path)).station
        if station_file is None:
            raise ConfigError("no station file: pass --station station.yaml")
        output_target(output, force=force)  # refuse before loading any instrument
        qc_station, instruments = load_station(station_file)
        try:
            text = starter_channels_yaml(instruments, station_file)
        finally:
            close_station(qc_station)
        write_new_file(output, text, force=force)
    count = text.count("\n  - parameter:")
    console.print(f"wrote {count} channels to {output}; edit it, then check it with", markup=False)
    # A command to paste as printed: "my station.yaml" unquoted was two arguments.
    where = f"--station {shlex.quote(str(station_file))} --channels {shlex.quote(str(output))}"
    console.print(f"  trajmon list-signals {where}", markup=False)


def _row(ch: Channel, interval_s: float, selected: bool) -> dict[str, Any]:
    return {
        "label": ch.label,
        "kind": ch.kind,
        "parameter": ch.source,
        "unit": ch.unit,
        "value_type": ch.value_type,
        "vals": ch.vals,
        "group": ch.group,
        "interval_s": interval_s,
        "tolerance_abs": ch.tolerance_abs,
        "tolerance_rel": ch.tolerance_rel,
        "selected": selected,
    }


def _check_selection(
    config: MonitorConfig, signals: list[str] | None, specs: list[str] | None
) -> None:
    """A staged selection these channels do not have (a label of another channels file, or
    of the other kind) refuses every run: say so beside the list, whose "selected" column
    would otherwise just read "no" everywhere."""
    try:
        config.updated(signals=signals, specs=specs)
    except ValidationError as exc:
        problem = format_validation_error(exc)
        err_console.print(
            f"trajmon: note: a run would refuse the staged selection: {problem};"
            " change it (trajmon config set --signals/--specs) or clear it"
            " (trajmon config clear --field signals --field specs)",
            markup=False,
        )


def _list(
    kind: Kind,
    sim: bool,
    station: Path | None,
    channels: Path | None,
    config_path: Path | None,
    json_out: bool,
) -> None:
    with user_errors():
        staged = read_staged(config_path_or_default(config_path))
        merged = merge_overrides(
            staged, option_overrides(sim=sim, station=station, channels=channels)
        )
        chosen = merged.signals if kind == "signal" else merged.specs
        eff = effective_config(merged.model_copy(update={"signals": None, "specs": None}))
        with static_instruments(eff) as instruments:
            found = resolved_channels(eff.config, instruments)
            then = "a run records only failed reads of it until that changes"
            notes = unavailable_notes([c for c, _ in found if c.kind == kind], instruments, then)
    _check_selection(eff.config, merged.signals, merged.specs)
    for note in notes:
        err_console.print(note, markup=False)
    rows = [
        _row(ch, interval, chosen is None or ch.label in chosen)
        for ch, interval in found
        if ch.kind == kind
    ]
    source = str(eff.station) if eff.source == "station" else "simulator (stm)"
    if json_out:
        print_json(
            {
                "kind": kind,
                "source": source,
                "channels_file": None if eff.channels_file is None else str(eff.channels_file),
                "channels": rows,
            }
        )
        return
    table = Table(title=f"{kind}s of {source} ({len(rows)})")
    for col in ("label", "parameter", "unit", "type", "vals", "group", "interval", "selected"):
        table.add_column(col, no_wrap=col in ("label", "unit", "type"))
    for r in rows:
        table.add_row(
            r["label"],
            r["parameter"],
            r["unit"],
            r["value_type"],
            r["vals"] or "",
            r["group"],
            f"{r['interval_s']:g} s",
            "yes" if r["selected"] else "no",
        )
    print_table(table)


def list_signals(
    sim: SimOption = False,
    station: StationOption = None,
    channels: ChannelsOption = None,
    config_path: ConfigPathOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the signal labels a run can record, with unit, type and validator."""
    _list("signal", sim, station, channels, config_path, json_out)


def list_specs(
    sim: SimOption = False,
    station: StationOption = None,
    channels: ChannelsOption = None,
    config_path: ConfigPathOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the spec labels a run can record (settings whose changes are actions)."""
    _list("spec", sim, station, channels, config_path, json_out)
