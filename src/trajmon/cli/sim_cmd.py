"""``trajmon sim serve``: the bundled Nanonis simulator as a foreground server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from .common import fail

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
        Path | None, typer.Option("--faults", help="Fault plan YAML: timed drops, errors, hangs.")
    ] = None,
) -> None:
    """Serve the STM simulator on 127.0.0.1 until Ctrl-C."""
    from simulators.faults import FaultPlanError, load_fault_plan
    from simulators.operator import ScenarioError, load_scenario
    from simulators.serve import serve

    try:
        if scenario is not None:
            load_scenario(scenario)
        if faults is not None:
            load_fault_plan(faults)
    except (ScenarioError, FaultPlanError) as exc:
        fail(str(exc))
    if truth_log is not None:  # written by the operator once it plays: fail now, not silently then
        try:
            truth_log.open("w", encoding="utf-8").close()
        except OSError as exc:
            fail(f"cannot write the truth log {truth_log}: {exc}")

    async def main() -> None:
        await serve(
            port=port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            scenario=scenario,
            seed=seed,
            truth_log=truth_log,
            request_log=request_log,
            faults=faults,
        )

    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc}")
