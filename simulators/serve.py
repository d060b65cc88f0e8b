"""Start the simulator stack (model, TCP server, optional scripted operator) in one call.

``serve`` backs ``trajmon sim serve``; ``run_simulator`` is the in-process form used by
``trajmon demo`` and ``trajmon run --sim``, so both paths build the stack the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from simulators.nanonis_server import NanonisServer
from simulators.operator import Scenario, ScriptedOperator, TruthEntry, load_scenario
from simulators.stm_model import STMModel

if TYPE_CHECKING:
    from simulators.faults import FaultStep

__all__ = ["RunningSimulator", "run_simulator", "serve"]


@dataclass
class RunningSimulator:
    """Handles to a running simulator stack."""

    host: str
    port: int
    server: NanonisServer
    model: STMModel
    operator: ScriptedOperator | None
    operator_task: asyncio.Task[list[TruthEntry]] | None = field(default=None)

    def start_operator(self) -> asyncio.Task[list[TruthEntry]] | None:
        """Start the scenario now (its ``at_s`` count from here); idempotent."""
        if self.operator is not None and self.operator_task is None:
            self.operator_task = asyncio.create_task(self.operator.run(), name="scripted-operator")
        return self.operator_task


#: How long a scripted change may take beyond the server's latency and jitter.
_OPERATOR_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def run_simulator(
    port: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    scenario: Scenario | str | Path | None = None,
    seed: int | None = None,
    truth_log: str | Path | None = None,
    start_operator: bool = True,
    request_log: str | Path | None = None,
    on_operator_error: Callable[[str], object] | None = None,
    on_request_log_error: Callable[[str], object] | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Run model + server (+ operator when ``scenario`` is given) for the ``async with`` body.

    The seed is ``seed`` if given, else the scenario's seed, else 0. With ``start_operator=False``
    call ``sim.start_operator()`` when the recording starts, so ``at_s`` lines up with it.
    Raises :class:`~simulators.operator.ScenarioError` before anything starts on a bad scenario.
    ``on_operator_error(line)`` is called for each scripted change that fails, and
    ``on_request_log_error(line)`` once if the request log cannot be written (default: stderr).
    """
    if scenario is not None and not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if seed is None:
        seed = scenario.seed if scenario is not None and scenario.seed is not None else 0
    model = STMModel(seed=seed)
    server = NanonisServer(
        model,
        port=port,
        latency_s=latency_ms / 1000.0,
        jitter_s=jitter_ms / 1000.0,
        seed=seed,
        log_path=request_log,
        on_log_error=on_request_log_error,
    )
    async with server:
        operator = (
            ScriptedOperator(
                server.host,
                server.port,
                scenario,
                truth_log=truth_log,
                on_error=on_operator_error,
                # The server's own delay comes on top: with 5 s of latency every change timed
                # out, was applied by the server later all the same, and left out of the truth.
                timeout_s=_OPERATOR_TIMEOUT_S + (latency_ms + jitter_ms) / 1000.0,
            )
            if scenario is not None
            else None
        )
        sim = RunningSimulator(server.host, server.port, server, model, operator)
        if start_operator:
            sim.start_operator()
        try:
            yield sim
        finally:
            task = sim.operator_task
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def serve(
    port: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    scenario: Scenario | str | Path | None = None,
    seed: int | None = None,
    truth_log: str | Path | None = None,
    ready: Callable[[RunningSimulator], object] | None = None,
    out: Callable[[str], object] | None = None,
    request_log: str | Path | None = None,
    faults: str | Path | Sequence[FaultStep] | None = None,
    err: Callable[[str], object] | None = None,
) -> None:
    """Serve until cancelled; prints ``host:port`` once listening and calls ``ready(sim)``.

    ``faults`` is a fault-plan YAML (see :mod:`simulators.faults`) or the steps already loaded
    from one (what ``trajmon sim serve`` checked is what is played), played from the moment the
    server listens; when an outage's restart fails, :class:`~simulators.faults.FaultPlanStopped`
    is raised (the server is down for good). Each scripted change that fails is reported through
    ``err`` (default: stderr) as it happens, as is a request log that cannot be written (once:
    logging stops, serving goes on), and the end of the scenario through ``out`` (default:
    stdout).
    """
    say = out or (lambda line: print(line, flush=True))  # flushed: scripts wait on a pipe
    warn = err or (lambda line: print(line, file=sys.stderr, flush=True))
    from simulators.faults import load_fault_plan, play_faults

    plan = load_fault_plan(faults) if isinstance(faults, str | Path) else list(faults or [])
    async with run_simulator(
        port=port,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        scenario=scenario,
        seed=seed,
        truth_log=truth_log,
        request_log=request_log,
        on_operator_error=lambda line: warn(f"scenario: {line}"),
        on_request_log_error=warn,
    ) as sim:
        fault_task = asyncio.create_task(play_faults(sim.server, plan), name="fault-plan")
        say(f"Nanonis simulator listening on {sim.host}:{sim.port}")
        if sim.operator_task is not None:
            sim.operator_task.add_done_callback(partial(_report_end, sim, say, warn))
        if ready is not None:
            ready(sim)
        try:
            await fault_task  # the plan played; raises when the server could not come back
            await asyncio.Event().wait()  # until cancelled (Ctrl-C / task cancellation)
        finally:
            fault_task.cancel()
            await asyncio.gather(fault_task, return_exceptions=True)


def _report_end(
    sim: RunningSimulator,
    say: Callable[[str], object],
    warn: Callable[[str], object],
    task: asyncio.Task[list[TruthEntry]],
) -> None:
    """The scenario's end, as one line: the server keeps serving, so it is never silent."""
    assert sim.operator is not None
    name = sim.operator.scenario.name
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        warn(f"scenario {name!r} stopped: {exc!r}")
        return
    total, failed = len(sim.operator.scenario.changes), len(sim.operator.errors)
    (warn if failed else say)(f"scenario {name!r} finished: {failed} of {total} changes failed")
