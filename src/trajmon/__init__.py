"""trajmon: record signal and spec trajectories and operator actions from live QCoDeS instruments.

The public API is declared here, once; everything else is an implementation detail.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
