"""``trajmon sim serve``: the bundled Nanonis simulator as a foreground server."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import anyio
import typer

from .common import EXIT_FAILED, fail

__all__ = ["sim_app"]

sim_app = typer.Typer(help="Run the bundled instrument simulators.", no_args_is_help=True)

#: An hour per reply is already no instrument; beyond it (infinity) the server's sleeps overflow
#: or never end.
_MAX_DELAY_MS = 3_600_000.0


@sim_app.command("serve")
def serve_cmd(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")
    ] = 6501,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0.0, max=_MAX_DELAY_MS, help="Delay per reply.")
    ] = 0.0,
    jitter_ms: Annotated[
        float,
        typer.Option("--jitter-ms", min=0.0, max=_MAX_DELAY_MS, help="Random extra delay, up to."),
    ] = 0.0,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="Scenario YAML to play as the operator.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Model seed (>= 0).")] = None,
    truth_log: Annotated[
        Path | None, typer.Option("--truth-log", help="Write the operator's ground truth (JSONL).")
    ] = None,
    request_log: Annotated[
        Path | None, typer.Option("--request-log", help="Log every request served (JSONL).")
    ] = None,
    faults: Annotated[
        Path | None,
        typer.Option(
            "--faults",
            help="Fault plan YAML: timed drops, errors, hangs, outages, signal relayouts.",
        ),
    ] = None,
) -> None:
    """Serve the STM simulator on 127.0.0.1 until Ctrl-C."""
    from simulators.faults import FaultPlanError, FaultPlanStopped, FaultStep, load_fault_plan
    from simulators.operator import Scenario, ScenarioError, load_scenario
    from simulators.serve import serve

    loaded: Scenario | None = None
    plan: list[FaultStep] | None = None
    try:  # each read once: what is checked is what is played (the file may change meanwhile)
        if scenario is not None:
            loaded = load_scenario(scenario)
        if faults is not None:
            plan = load_fault_plan(faults)
    except (ScenarioError, FaultPlanError) as exc:
        fail(str(exc))
    _check_logs(scenario, faults, truth_log, request_log)

    async def main() -> None:
        await serve(
            port=port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            scenario=loaded,
            seed=seed,
            truth_log=truth_log,
            request_log=request_log,
            faults=plan,
        )

    # A shell starts a background job with SIGINT ignored, and Python then leaves it ignored:
    # `kill -INT` (what a script sends, and what stops `trajmon run`) must stop the server too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass
    except FaultPlanStopped as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc}")
    finally:
        signal.signal(signal.SIGINT, previous)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _check_logs(
    scenario: Path | None, faults: Path | None, truth_log: Path | None, request_log: Path | None
) -> None:
    """Refuse log paths that would lose data, before any file is touched; then check that the
    logs can be written, so a problem is one line now, not a traceback or a silently missing log
    later. Opened to append, both: the truth log is emptied only when the scenario starts, so a
    serve that fails first (its port taken) keeps the log of the session before it."""
    if truth_log is not None and scenario is None:
        fail(f"the truth log {truth_log} needs --scenario: without one nothing is written to it")
    logs = {"request log": request_log, "truth log": truth_log}
    inputs = {"scenario": scenario, "fault plan": faults, "truth log": truth_log}
    given = {name: log for name, log in logs.items() if log is not None}
    for log_name, log in given.items():
        for input_name, other in inputs.items():
            if other is not None and other is not log and _same_file(log, other):
                fail(f"the {log_name} {log} is the same file as the {input_name} {other}")
    for log_name, log in given.items():
        try:
            log.open("a", encoding="utf-8").close()
        except OSError as exc:
            fail(f"cannot write the {log_name} {log}: {exc.strerror or exc}")
