"""``trajmon config show|set|clear``: the staged monitor configuration.

Staging lets an operator set the instrument source, channels and intervals once and then start
each run with only a new name; the name is single-use (see :mod:`trajmon.staging`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import ConfigError, MonitorConfig
from ..staging import (
    StagedConfig,
    clear_staged,
    default_config_path,
    read_staged,
    stage,
)
from .common import JsonOption, console, print_json, user_errors

__all__ = [
    "ConfigPathOption",
    "config_app",
    "config_path_or_default",
    "label_list",
    "option_overrides",
]

config_app = typer.Typer(
    help="Stage a monitor configuration for `trajmon run` (show, set, clear).",
    no_args_is_help=True,
)

ConfigPathOption = Annotated[
    Path | None,
    typer.Option(
        "--config-path",
        help="Staged config file (default: $TRAJMON_CONFIG, else"
        " $XDG_CONFIG_HOME/trajmon/config.json, else ~/.config/trajmon/config.json).",
    ),
]
RunNameOption = Annotated[str | None, typer.Option("--run-name", help="Name of the next run.")]
SignalsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--signals",
        help="Signal labels to record (comma-separated or repeated; a comma in a label: \\,).",
    ),
]
SpecsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--specs",
        help="Spec labels to record (comma-separated or repeated; a comma in a label: \\,).",
    ),
]
IntervalOption = Annotated[
    float | None, typer.Option("--interval-s", help="Poll interval of every group, seconds.")
]
SignalIntervalOption = Annotated[
    float | None, typer.Option("--signal-interval-s", help="Poll interval of signals, seconds.")
]
SpecIntervalOption = Annotated[
    float | None, typer.Option("--spec-interval-s", help="Poll interval of specs, seconds.")
]
RotateOption = Annotated[
    int | None, typer.Option("--rotate-entries", help="Samples per logical segment.")
]
WindowOption = Annotated[
    float | None,
    typer.Option("--action-window-s", help="Signal window before and after an action, seconds."),
]
BeforeOption = Annotated[
    float | None, typer.Option("--window-before-s", help="Signal window before an action.")
]
AfterOption = Annotated[
    float | None, typer.Option("--window-after-s", help="Signal window after an action.")
]
StationOption = Annotated[
    Path | None, typer.Option("--station", help="QCoDeS station YAML file (instrument source).")
]
ChannelsOption = Annotated[
    Path | None, typer.Option("--channels", help="Channels YAML file (labels -> parameters).")
]


def config_path_or_default(path: Path | None) -> Path:
    return path if path is not None else default_config_path()


#: A comma that separates labels: one not escaped as ``\,`` (labels may contain commas).
_LABEL_SEPARATOR = re.compile(r"(?<!\\),")


def label_list(values: list[str] | None, option: str) -> list[str] | None:
    r"""``--signals "A, B" --signals C`` -> ``["A", "B", "C"]``; None when the option is absent.
    ``\,`` is a comma inside a label: ``--specs 'Bias\, fine'`` selects the label
    ``Bias, fine``."""
    if values is None:
        return None
    parts = (part for value in values for part in _LABEL_SEPARATOR.split(value))
    labels = [text for part in parts if (text := part.replace("\\,", ",").strip())]
    if not labels:
        raise ConfigError(
            f"{option} needs at least one label (to record all, clear it:"
            f" trajmon config clear --field {option.removeprefix('--')})"
        )
    return labels


def option_overrides(
    *,
    run_name: str | None = None,
    db: Path | None = None,
    signals: list[str] | None = None,
    specs: list[str] | None = None,
    interval_s: float | None = None,
    signal_interval_s: float | None = None,
    spec_interval_s: float | None = None,
    rotate_entries: int | None = None,
    action_window_s: float | None = None,
    window_before_s: float | None = None,
    window_after_s: float | None = None,
    sim: bool = False,
    host: str | None = None,
    port: int | None = None,
    station: Path | None = None,
    channels: Path | None = None,
) -> dict[str, Any]:
    """Command-line options as staged-config fields (None: not given). ``--action-window-s``
    sets both sides; ``--window-before-s``/``--window-after-s`` override one side."""
    before = window_before_s if window_before_s is not None else action_window_s
    after = window_after_s if window_after_s is not None else action_window_s
    return {
        "run_name": run_name,
        "db": db,
        "signals": label_list(signals, "--signals"),
        "specs": label_list(specs, "--specs"),
        "interval_s": interval_s,
        "signal_interval_s": signal_interval_s,
        "spec_interval_s": spec_interval_s,
        "rotate_entries": rotate_entries,
        "window_before_s": before,
        "window_after_s": after,
        "source": "sim" if sim else None,
        "host": host,
        "port": port,
        "station": station,
        "channels": channels,
    }


def _defaults() -> dict[str, Any]:
    base = MonitorConfig()
    return {
        "db": str(base.db),
        "interval_s": base.interval_s,
        "signal_interval_s": "interval_s",
        "spec_interval_s": "interval_s",
        "rotate_entries": base.rotate_entries,
        "window_before_s": base.window_before_s,
        "window_after_s": base.window_after_s,
        "signals": "all",
        "specs": "all",
        "channels": "the simulator's",
    }


def _print_staged(path: Path, staged: StagedConfig, json_out: bool) -> None:
    values = staged.values()
    if json_out:
        print_json({"path": str(path), "exists": path.exists(), "staged": values})
        return
    # Plain aligned lines rather than a table: paths are long and must never be cut.
    console.print(f"staged configuration: {path}", markup=False)
    defaults = _defaults()
    for name in StagedConfig.model_fields:
        value = values.get(name)
        if value is None:
            default = defaults.get(name)
            shown = "-" if default is None else f"- (default: {default})"
        else:
            shown = ", ".join(value) if isinstance(value, list) else str(value)
        console.print(f"  {name:<18} {shown}", markup=False)
    if staged.run_name is None:
        console.print("no run name staged: trajmon config set --run-name NAME", markup=False)


@config_app.command("show")
def show(config_path: ConfigPathOption = None, json_out: JsonOption = False) -> None:
    """Show the staged configuration (what `trajmon run` uses unless told otherwise)."""
    with user_errors():
        path = config_path_or_default(config_path)
        _print_staged(path, read_staged(path), json_out)


@config_app.command("set")
def set_(
    run_name: RunNameOption = None,
    signals: SignalsOption = None,
    specs: SpecsOption = None,
    interval_s: IntervalOption = None,
    signal_interval_s: SignalIntervalOption = None,
    spec_interval_s: SpecIntervalOption = None,
    rotate_entries: RotateOption = None,
    action_window_s: WindowOption = None,
    window_before_s: BeforeOption = None,
    window_after_s: AfterOption = None,
    db: Annotated[Path | None, typer.Option("--db", help="SQLite database file.")] = None,
    sim: Annotated[bool, typer.Option("--sim", help="Source: the bundled simulator.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Source: Nanonis TCP host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Source: Nanonis TCP port.")] = None,
    station: StationOption = None,
    channels: ChannelsOption = None,
    config_path: ConfigPathOption = None,
    json_out: JsonOption = False,
) -> None:
    """Stage values for the next runs; the result is validated before it is written."""
    with user_errors():
        path = config_path_or_default(config_path)
        changes = option_overrides(
            run_name=run_name,
            db=db,
            signals=signals,
            specs=specs,
            interval_s=interval_s,
            signal_interval_s=signal_interval_s,
            spec_interval_s=spec_interval_s,
            rotate_entries=rotate_entries,
            action_window_s=action_window_s,
            window_before_s=window_before_s,
            window_after_s=window_after_s,
            sim=sim,
            host=host,
            port=port,
            station=station,
            channels=channels,
        )
        if all(v is None for v in changes.values()):
            raise ConfigError("nothing to set; see trajmon config set --help")
        _print_staged(path, stage(path, changes), json_out)


@config_app.command("clear")
def clear(
    run_name: Annotated[
        bool, typer.Option("--run-name", help="Clear only the staged run name.")
    ] = False,
    fields: Annotated[
        list[str] | None,
        typer.Option("--field", help="Clear only this field (repeatable), e.g. signals."),
    ] = None,
    config_path: ConfigPathOption = None,
    json_out: JsonOption = False,
) -> None:
    """Clear the staged configuration (all of it, or --run-name / --field NAME)."""
    with user_errors():
        path = config_path_or_default(config_path)
        only = [*(["run_name"] if run_name else []), *(f.replace("-", "_") for f in fields or [])]
        cleared = clear_staged(path, only or None)
    if json_out:
        print_json({"path": str(path), "cleared": cleared})
    else:
        what = ", ".join(cleared) if cleared else "nothing (it was not set)"
        console.print(f"cleared {what} in {path}", markup=False)
