"""Starter channels files: every gettable parameter of a loaded station, as a channels file the
operator edits (``trajmon channels init``) — labels unique, kinds guessed from settability and
what the driver declares, each entry commented with its unit, validator and QCoDeS label.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .channels import unique_name
from .config import ConfigError, label_key
from .files import replace_text_file
from .resolve import describe_vals

__all__ = [
    "declared_kind",
    "iter_parameters",
    "output_target",
    "starter_channels_yaml",
    "write_new_file",
]

#: Parameters left out of a starter file: the identity string is in the station snapshot already.
_SKIPPED_PARAMETERS = frozenset({"IDN"})


def iter_parameters(instruments: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(path, parameter) for every gettable parameter, recursing into submodules and channels.

    A channel that is also a submodule of its own is listed under that shorter path
    (``ls.A.temperature``); one that is only in a channel list (a Rigol DS1074Z's) under the
    list's (``scope.channels.ch1.trace``), as :func:`~trajmon.resolve.resolve_parameter` reads it.
    """
    from qcodes.instrument import ChannelTuple, InstrumentBase

    seen: set[int] = set()

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for pname, param in node.parameters.items():
            if pname in _SKIPPED_PARAMETERS or not getattr(param, "gettable", True):
                continue
            if id(param) not in seen:
                seen.add(id(param))
                yield f"{prefix}.{pname}", param
        for sname, sub in node.submodules.items():
            if isinstance(sub, InstrumentBase):
                yield from walk(sub, f"{prefix}.{sname}")
        for sname, sub in node.submodules.items():  # after the channels' own paths
            if isinstance(sub, ChannelTuple):
                for channel in sub:
                    yield from walk(channel, f"{prefix}.{sname}.{channel.short_name}")

    for name, instrument in instruments.items():
        yield from walk(instrument, name)


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def declared_kind(param: Any) -> str | None:
    """The kind a driver declares for a parameter (``metadata={"trajmon_kind": "spec"}``):
    a read-only setting (the Nanonis driver's bias, setpoint, gains) is still a spec."""
    metadata = getattr(param, "metadata", None)
    kind = metadata.get("trajmon_kind") if isinstance(metadata, Mapping) else None
    return kind if kind in ("signal", "spec") else None


def starter_channels_yaml(instruments: Mapping[str, Any], station_file: Path) -> str:
    """A channels file listing every gettable parameter, for the operator to prune and edit.

    A kind the driver declares is taken; otherwise settable parameters are guessed to be specs
    (settings whose changes are actions), the rest signals. Unit, validator and QCoDeS label
    are comments, so the file loads back as it is.
    """
    lines = [
        f"# trajmon channels file, generated from {station_file} on {time.strftime('%Y-%m-%d')}.",
        "# Delete what you do not want to record, then check it: trajmon list-signals --station"
        f" {station_file} --channels <this file>",
        "# Per entry: parameter (instrument.parameter or instrument.submodule.parameter),",
        "#   kind: signal (measured, dense) | spec (a setting; its changes are actions),",
        "#   optional label (default: the parameter path), group, interval_s (seconds),",
        "#   and for specs tolerance_abs / tolerance_rel (changes within them are not actions).",
        "# The kind below is the driver's where it says (parameter metadata 'trajmon_kind'),",
        "#   else a guess: settable -> spec, read-only -> signal.",
        "channels:",
    ]
    taken: set[str] = set()
    for path, param in iter_parameters(instruments):
        # Labels are column names, unique up to case: a driver with both "Gate" and "gate"
        # gets "dac.gate (2)" for the second, so the file still loads back as it is.
        label = unique_name(path, lambda name: label_key(name) in taken, " ({})".format)
        taken.add(label_key(label))
        settable = bool(getattr(param, "settable", False))
        declared = declared_kind(param)
        kind = declared or ("spec" if settable else "signal")
        notes = [f"unit: {_comment(getattr(param, 'unit', '') or '-')}"]
        vals = describe_vals(getattr(param, "vals", None))
        notes.append(f"vals: {_comment(vals) if vals is not None else '-'}")
        qlabel = getattr(param, "label", "")
        if qlabel:
            notes.append(f"label: {_comment(qlabel)}")
        notes.append("settable" if settable else "read-only")
        if declared:
            notes.append(f"{kind} by its driver")
        lines.append(f"  # {'; '.join(notes)}")
        lines.append(f"  - parameter: {json.dumps(path, ensure_ascii=False)}")
        lines.append(f"    label: {json.dumps(label, ensure_ascii=False)}")
        lines.append(f"    kind: {kind}")
    return "\n".join(lines) + "\n"


def output_target(path: Path, *, force: bool) -> Path:
    """The file that writing ``path`` replaces: a symlink's target (the operator named the link,
    the link stays), which must be absent or a regular file — never a directory, a FIFO or a
    device node — and is replaced only with ``force``."""
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops inside a symlink loop
        raise ConfigError(f"{path} is a symlink loop; choose another output file")
    if target.is_dir():  # before --force is suggested: it cannot help
        raise ConfigError(f"{path} is a directory; give a file name, e.g. {path}/channels.yaml")
    if target.exists():
        if not target.is_file():
            raise ConfigError(f"{path} is not a regular file; choose another output file")
        if not force:
            raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    return target


def write_new_file(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` in one step; refuse to replace a file unless ``force``.

    The new file is written next to the symlink target and renamed over it, so a link stays a
    link and a crash never leaves half a file."""
    target = output_target(path, force=force)
    try:
        replace_text_file(target, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
