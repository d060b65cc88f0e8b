"""Review of the simulator as a rehearsal tool (``trajmon sim serve --faults``, scenarios): the
signal-list reconfiguration as a fault-plan step, and faults found on the way."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from procs import query, sim_process, start_run, wait_for
from typer.testing import CliRunner

import simulators.faults
from simulators.faults import FaultPlanError, FaultStep, load_fault_plan, play_faults
from simulators.nanonis_server import NanonisServer
from simulators.operator import AsyncNanonisClient, ScenarioError, load_scenario
from simulators.serve import RunningSimulator, serve
from simulators.stm_model import SIGNAL_NAMES, STMModel
from trajmon.cli import app
from trajmon.drivers.nanonis_protocol import NanonisError

#: The first two signals swapped: index 0 serves Input 1 (0.1 V), index 1 the current (100 pA).
SWAPPED = [SIGNAL_NAMES[1], SIGNAL_NAMES[0], *SIGNAL_NAMES[2:]]
RENAMED = [SIGNAL_NAMES[1], SIGNAL_NAMES[0], "Aux (V)", *SIGNAL_NAMES[3:]]


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _plan(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text("faults:\n" + "".join(f"  - {e}\n" for e in entries), encoding="utf-8")
    return path


# -- Task 1: relayout as a fault-plan step ---------------------------------------------------


def test_a_relayout_step_is_loaded_with_its_signals_and_names(tmp_path: Path) -> None:
    steps = load_fault_plan(
        _plan(
            tmp_path,
            f"{{at_s: 3.0, fault: relayout, signals: {_flow(SWAPPED)}, names: {_flow(RENAMED)}}}",
            f"{{at_s: 1.0, fault: relayout, signals: {_flow(list(SIGNAL_NAMES[:2]))}}}",
        )
    )
    assert [(s.at_s, s.fault, s.signals, s.names) for s in steps] == [
        (1.0, "relayout", SIGNAL_NAMES[:2], None),
        (3.0, "relayout", tuple(SWAPPED), tuple(RENAMED)),
    ]


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("{at_s: 1, fault: relayout}", "fault relayout needs signals"),
        ("{at_s: 1, fault: relayout, signals: []}", "signals must be a non-empty list of names"),
        ("{at_s: 1, fault: relayout, signals: Z (m)}", "signals must be a non-empty list"),
        ("{at_s: 1, fault: relayout, signals: [1, 2]}", "signals must be a non-empty list"),
        ("{at_s: 1, fault: relayout, signals: [Curent (A)]}", "unknown signal 'Curent (A)'"),
        (
            "{at_s: 1, fault: relayout, signals: [Z (m), X (m)], names: [Z]}",
            "names must give one name per signal (2), got 1",
        ),
        ("{at_s: 1, fault: relayout, signals: [Z (m)], names: ~}", "names must be a non-empty"),
        ("{at_s: 1, fault: relayout, signals: [Z (m)], names: ['Δz (m)']}", "Latin-1"),
        ("{at_s: 1, fault: relayout, signals: [Z (m)], seconds: 2}", "seconds does not apply"),
        ("{at_s: 1, fault: drop, signals: [Z (m)]}", "signals does not apply to fault drop"),
        ("{at_s: 1, fault: outage, names: [Z]}", "names does not apply to fault outage"),
    ],
)
def test_a_bad_relayout_is_one_line_naming_the_entry(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: faults\[0\]: ") as info:
        load_fault_plan(_plan(tmp_path, entry))
    assert complaint in str(info.value)
    assert "\n" not in str(info.value)


def test_sim_serve_refuses_a_bad_relayout_in_one_line_exit_2(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "{at_s: 1, fault: relayout, signals: [Bias]}")
    result = CliRunner().invoke(app, ["sim", "serve", "--port", "0", "--faults", str(plan)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown signal 'Bias'" in lines[0], result.output


async def test_a_relayout_step_reconfigures_the_served_signal_list(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        f"{{at_s: 0.0, fault: relayout, signals: {_flow(SWAPPED)}, names: {_flow(RENAMED)}}}",
    )
    model = STMModel(seed=3, noise=False, drift=False)
    async with NanonisServer(model) as srv:
        await play_faults(srv, load_fault_plan(plan))
        client = AsyncNanonisClient(srv.host, srv.port)
        try:
            (names,) = await client.request("Signals.NamesGet")
            (values,) = await client.request("Signals.ValsGet", [0, 1], 0)
        finally:
            await client.close()
    assert names == RENAMED
    input1, current = values
    assert abs(input1 - model.signal_values([1])[0]) < 1e-3, "index 0 serves Input 1 (V)"
    assert 0 < current < 1e-6, "index 1 serves the current"


def _first_request_t(log: Path, command: str) -> float | None:
    if not log.exists():
        return None
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["command"] == command:
            return float(entry["t_mono"])
    return None


def test_a_separate_run_against_sim_serve_rehearses_the_relayout(tmp_path: Path) -> None:
    """``trajmon run --host`` against ``trajmon sim serve --faults`` with the first two signals
    swapped mid-run: one SignalListChanged row for the current channel, then currents again."""
    at_s = 5.0
    plan = _plan(
        tmp_path,
        f"{{at_s: {at_s}, fault: relayout, signals: {_flow(SWAPPED)}, names: {_flow(RENAMED)}}}",
    )
    db = tmp_path / "rehearsal.db"
    before_serve = time.monotonic()  # the plan's clock starts later: the relayout is after +at_s
    with sim_process(tmp_path, "--faults", str(plan)) as sim:
        run = start_run(db, "rehearsal", sim.port)
        try:
            first = wait_for(
                lambda: _first_request_t(sim.request_log, "Signals.ValsGet"),
                timeout=60,
                what="the run's first signal read",
            )
            if first >= before_serve + at_s:  # not known to be before the relayout
                pytest.skip("the run started too late to see the relayout (machine too loaded)")

            def changed() -> list[tuple[float, str, str]]:
                assert run.poll() is None, run.communicate()
                return query(  # type: ignore[return-value]
                    db,
                    "SELECT dt_s, channel, message FROM monitor_errors"
                    " WHERE error_type = 'SignalListChanged'",
                )

            rows = wait_for(changed, timeout=60, what="a SignalListChanged row")
            ((error_dt, channel, message),) = rows
            assert channel == "Tunnel Current"
            assert "'Current (A)' was at index 0 and is now at index 1" in message

            def current_after() -> list[tuple[float]]:
                return query(
                    db,
                    'SELECT "Tunnel Current" FROM "rehearsal/signals"'
                    ' WHERE dt_s > ? AND "Tunnel Current" IS NOT NULL'
                    " ORDER BY sample_idx LIMIT 1",
                    (error_dt,),
                )

            ((value,),) = wait_for(current_after, timeout=60, what="a read after the change")
            assert 0 < value < 1e-6, f"Input 1 (V) stored as the current: {value}"
        finally:
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=30)
    assert len(changed_rows(db)) == 1, "reported once, by the first read after the check"


def changed_rows(db: Path) -> list[tuple[object, ...]]:
    return query(db, "SELECT channel FROM monitor_errors WHERE error_type = 'SignalListChanged'")


# -- Task 2: faults found -------------------------------------------------------------------


@pytest.mark.parametrize("key", ["1", "~", "true"])
def test_a_scenario_key_that_is_not_text_is_a_scenario_error(tmp_path: Path, key: str) -> None:
    """A number, null or boolean as a top-level key escaped as a TypeError from the sort of the
    unknown keys: a traceback from ``trajmon sim serve --scenario`` instead of one line."""
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: mine\n{key}: 2\nchanges:\n  - {{at_s: 1, spec: Bias, value: 0.2}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError, match=r"s\.yaml: unknown top-level key\(s\): "):
        load_scenario(path)
    result = CliRunner().invoke(app, ["sim", "serve", "--port", "0", "--scenario", str(path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_sim_serve_plays_the_plan_it_checked_not_a_second_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan file was read twice, to check it and again to play it: one edited in between (a
    script writing the next test's plan) was played unchecked, or raised a traceback."""
    plan = _plan(tmp_path, "{at_s: 1, fault: drop}")
    reads: list[object] = []
    real_load = simulators.faults.load_fault_plan

    def load_once(path: str | Path) -> list[FaultStep]:
        reads.append(path)
        return real_load(path)

    served: list[Any] = []

    async def fake_serve(**kwargs: Any) -> None:
        served.append(kwargs["faults"])

    monkeypatch.setattr(simulators.faults, "load_fault_plan", load_once)
    monkeypatch.setattr(sys.modules["simulators.serve"], "serve", fake_serve)
    result = CliRunner().invoke(app, ["sim", "serve", "--port", "0", "--faults", str(plan)])
    assert result.exit_code == 0, result.output
    assert reads == [plan]
    assert served == [[FaultStep(1.0, "drop")]]


async def test_serve_takes_a_loaded_plan() -> None:
    ready = asyncio.Event()
    sims: list[RunningSimulator] = []

    def on_ready(sim: RunningSimulator) -> None:
        sims.append(sim)
        ready.set()

    steps = [FaultStep(0.0, "error", command="Signals.NamesGet", message="from the plan")]
    task = asyncio.create_task(serve(faults=steps, ready=on_ready, out=lambda line: None))
    waiter = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert ready.is_set(), task.exception() if task.done() else "serve did not start"
        client = AsyncNanonisClient(sims[0].host, sims[0].port)
        try:  # the plan's task was scheduled before ready() was called: it has run by now
            with pytest.raises(NanonisError, match="from the plan"):
                await client.request("Signals.NamesGet")
        finally:
            await client.close()
    finally:
        for pending in (task, waiter):
            pending.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
