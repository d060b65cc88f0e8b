"""Simulated instruments for trajmon: an STM model, a Nanonis TCP server and a scripted operator.

``SimulatedSTM`` (the in-process QCoDeS instrument) is imported lazily so that using the server or
the operator does not pay for importing QCoDeS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulators.nanonis_server import FaultInjector, NanonisServer
from simulators.operator import (
    Scenario,
    ScenarioError,
    ScriptedOperator,
    TruthEntry,
    default_scenario_path,
    load_scenario,
    quick_scenario_path,
)
from simulators.serve import RunningSimulator, run_simulator, serve
from simulators.stm_model import STMModel
from simulators.threaded_server import ThreadedNanonisServer

if TYPE_CHECKING:
    from simulators.qcodes_sim import SimulatedSTM

__all__ = [
    "FaultInjector",
    "NanonisServer",
    "RunningSimulator",
    "STMModel",
    "Scenario",
    "ScenarioError",
    "ScriptedOperator",
    "SimulatedSTM",
    "ThreadedNanonisServer",
    "TruthEntry",
    "default_scenario_path",
    "load_scenario",
    "quick_scenario_path",
    "run_simulator",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name == "SimulatedSTM":
        from simulators.qcodes_sim import SimulatedSTM

        return SimulatedSTM
    raise AttributeError(f"module 'simulators' has no attribute {name!r}")
