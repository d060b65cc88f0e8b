"""What a resumed run must keep: the settings its rows were recorded under.

``trajmon run --resume`` loads them from the run and refuses options that would change them; a
library user passes a configuration to ``Recorder(..., resume=True)`` and could pass another
one. Recorded under it silently, the new session's samples came at an interval
``poll_groups.interval_s`` does not say (target rates, missed ticks, the plot's gap breaks all
wrong), its actions had windows ``runs.window_*_s`` does not say and were detected with
tolerances the catalog does not say, and its columns could get values of another type or unit.
Each of these is refused here, naming the setting, before anything is written.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

from .channels import PollGroup
from .config import ConfigError, MonitorConfig

__all__ = ["as_recorded", "check_channels", "check_settings"]

_RESUME_WITH_STORED = (
    "a resumed run keeps the settings it was recorded with: resume it with its stored"
    " configuration (as `trajmon run --resume` does), or record a new run"
)


def check_settings(cfg: MonitorConfig, row: sqlite3.Row | tuple[Any, ...]) -> None:
    """``row`` is the run's (rotate_entries, window_before_s, window_after_s)."""
    for name, was in zip(("rotate_entries", "window_before_s", "window_after_s"), row, strict=True):
        now = getattr(cfg, name)
        if now != was:
            raise ConfigError(
                f"cannot resume {cfg.run_name!r}: it was recorded with {name} {was},"
                f" not {now}; {_RESUME_WITH_STORED}"
            )


def check_channels(
    run_name: str, groups: Sequence[PollGroup], stored: Sequence[Any], labels: Sequence[Any]
) -> None:
    """Each group must keep its interval, and each channel what its column holds — the type
    the column was declared with and the unit its values are in — and its tolerances. A driver
    or station changed since (a validator ``Numbers`` now ``Strings``, a unit ``V`` now ``mV``)
    would put text into a REAL column, which readers cannot decode, or values of another unit
    into the same column, unmarked. ``stored`` and ``labels`` are in ``groups``' order."""
    for group, row in zip(groups, stored, strict=True):
        if group.interval_s != float(row["interval_s"]):
            raise ConfigError(
                f"cannot resume {run_name!r}: its group {group.name!r} was recorded at"
                f" interval {row['interval_s']} s, not {group.interval_s} s; {_RESUME_WITH_STORED}"
            )
    planned = [c for g in groups for c in g.channels]
    for channel, row in zip(planned, labels, strict=True):
        was = (str(row["value_type"]), str(row["unit"]))
        now = (channel.value_type, channel.unit)
        if was != now and was != ("any", channel.unit):  # an untyped column takes every value
            raise ConfigError(
                f"cannot resume {run_name!r}: channel {channel.label!r} was recorded as"
                f" {was[0]} in unit {was[1]!r} and {channel.source} now gives {now[0]}"
                f" in unit {now[1]!r} (its driver or station changed); a resumed run keeps"
                " each column's type and unit: record a new run instead"
            )
        tolerances = (row["tolerance_abs"], row["tolerance_rel"])
        if tolerances != (channel.tolerance_abs, channel.tolerance_rel):
            raise ConfigError(
                f"cannot resume {run_name!r}: spec {channel.label!r} was recorded with"
                f" tolerance (abs, rel) {tolerances}, not"
                f" {(channel.tolerance_abs, channel.tolerance_rel)}; {_RESUME_WITH_STORED}"
            )


def as_recorded(groups: Sequence[PollGroup], labels: Sequence[Any]) -> list[PollGroup]:
    """``groups`` with each channel typed as its column was declared (``labels``, in the
    groups' order). Only an ``any`` column differs, once :func:`check_channels` passed: a run
    recorded before trajmon typed the channel (an on/off ``val_mapping`` now ``bool``, a
    ``get_parser=float`` now ``float``) keeps writing it untyped, or its column would hold
    ``bool:1`` blobs and then plain 1s, which read back as two types."""
    untyped = {i for i, row in enumerate(labels) if row["value_type"] == "any"}
    out, pos = [], 0
    for group in groups:
        channels = []
        for channel in group.channels:
            if pos in untyped and channel.value_type != "any":
                channel = dataclasses.replace(channel, value_type="any")
            channels.append(channel)
            pos += 1
        out.append(dataclasses.replace(group, channels=tuple(channels)))
    return out
