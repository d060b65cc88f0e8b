"""trajmon: record signal and spec trajectories and operator actions from live QCoDeS instruments.

The public API is declared here, once; everything else is an implementation detail.

Its names are imported when first used (PEP 562): every ``trajmon.*`` module — the
``trajmon`` command's included — imports this package first, and importing the whole API
(NumPy, pydantic, aiosqlite, the exporters) took a third of a second before the command even
read its arguments: a Ctrl-C then was a traceback from deep inside an import. ``from trajmon
import Recorder`` and ``trajmon.Recorder`` work as before; type checkers and IDEs read the
imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .channels import Channel, PollGroup
    from .clock import Clock, FakeClock, SystemClock
    from .config import DEFAULT_CHANNELS, ChannelSpec, ConfigError, MonitorConfig
    from .connection import StorageError
    from .detection import ChangeDetector
    from .export import ExportError, ExportResult, export_run
    from .queries import (
        QueryError,
        RunRef,
        connect_readonly,
        list_actions,
        list_runs,
        resolve_run,
    )
    from .recorder import Recorder
    from .records import ActionEvent, GroupStats
    from .runstore import RunExistsError
    from .scheduling import Schedule
    from .schema import SchemaError
    from .summary import GroupSummary, RunFailedError, RunSummary

#: Each public name and the module that defines it.
_SOURCES: dict[str, str] = {
    "Channel": "channels",
    "PollGroup": "channels",
    "Clock": "clock",
    "FakeClock": "clock",
    "SystemClock": "clock",
    "DEFAULT_CHANNELS": "config",
    "ChannelSpec": "config",
    "ConfigError": "config",
    "MonitorConfig": "config",
    "StorageError": "connection",
    "ChangeDetector": "detection",
    "ExportError": "export",
    "ExportResult": "export",
    "export_run": "export",
    "QueryError": "queries",
    "RunRef": "queries",
    "connect_readonly": "queries",
    "list_actions": "queries",
    "list_runs": "queries",
    "resolve_run": "queries",
    "Recorder": "recorder",
    "ActionEvent": "records",
    "GroupStats": "records",
    "RunExistsError": "runstore",
    "Schedule": "scheduling",
    "SchemaError": "schema",
    "GroupSummary": "summary",
    "RunFailedError": "summary",
    "RunSummary": "summary",
}

__all__ = [
    "DEFAULT_CHANNELS",
    "ActionEvent",
    "ChangeDetector",
    "Channel",
    "ChannelSpec",
    "Clock",
    "ConfigError",
    "ExportError",
    "ExportResult",
    "FakeClock",
    "GroupStats",
    "GroupSummary",
    "MonitorConfig",
    "PollGroup",
    "QueryError",
    "Recorder",
    "RunExistsError",
    "RunFailedError",
    "RunRef",
    "RunSummary",
    "Schedule",
    "SchemaError",
    "StorageError",
    "SystemClock",
    "__version__",
    "connect_readonly",
    "export_run",
    "list_actions",
    "list_runs",
    "resolve_run",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use and kept here after it. A module
    of the package (``trajmon.recorder``) is found too, as when this file imported them all."""
    source = _SOURCES.get(name)
    if source is not None:
        value = getattr(importlib.import_module(f".{source}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
