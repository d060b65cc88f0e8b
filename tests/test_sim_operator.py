"""Scenario validation and the scripted operator's ground truth against a live server."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from simulators.nanonis_server import NanonisServer
from simulators.operator import (
    SPEC_LABELS,
    AsyncNanonisClient,
    Scenario,
    ScenarioError,
    ScriptedOperator,
    default_scenario_path,
    load_scenario,
    quick_scenario_path,
)
from simulators.serve import RunningSimulator, run_simulator, serve
from simulators.stm_model import STMModel, f32

SMALL = """
name: small
seed: 3
changes:
  - {at_s: 0.5, spec: Bias, value: 0.3}
  - {at_s: 1.0, spec: Bias, value: 0.3}
  - {at_s: 1.5, spec: Scan Frame, value: {width: 8.0e-8, angle: 20.0, height: 5.0e-8}}
  - {at_s: 2.0, spec: Z Controller Enabled, value: false}
  - {at_s: 2.5, spec: Scan Status Code, value: 1}
  - {at_s: 3.0, spec: Z Controller I Gain, value: 6.0e-8}
  - {at_s: 3.5, spec: Scan Frame Center X, value: 5.0e-9}
  - {at_s: 4.0, spec: Z Setpoint, value: 2.0e-10}
"""


class FakeTime:
    """Monotonic clock whose sleep just advances it, so scenarios run instantly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{at_s: 1.0, spec: Biass, value: 0.2}", "unknown spec 'Biass'"),
        ("{at_s: -1.0, spec: Bias, value: 0.2}", "at_s must be a non-negative number"),
        ("{at_s: 0.1, spec: Bias, value: 0.2}", "before the previous entry"),
        ("{at_s: 1.0, spec: Bias, value: fast}", "value must be a finite number"),
        ("{at_s: 1.0, spec: Z Controller Enabled, value: 1}", "must be a boolean"),
        ("{at_s: 1.0, spec: Scan Status Code, value: true}", "integer 0 or 1"),
        ("{at_s: 1.0, spec: Scan Status Code, value: 2}", "integer 0 or 1"),
        ("{at_s: 1.0, spec: Scan Frame, value: {zoom: 2.0}}", "unknown Scan Frame field 'zoom'"),
        ("{at_s: 1.0, spec: Scan Frame, value: {width: -1.0e-8}}", "field width: value must"),
        ("{at_s: 1.0, spec: Z Setpoint, value: 0.0}", "value must be positive"),
        ("{at_s: 1.0, spec: Bias}", "exactly at_s, spec and value"),
    ],
)
def test_scenario_validation_errors(tmp_path: Path, entry: str, expected: str) -> None:
    path = _write(
        tmp_path, f"name: bad\nchanges:\n  - {{at_s: 0.5, spec: Bias, value: 0.1}}\n  - {entry}\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "changes[1]" in message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- just a list", "top level must be a mapping"),
        ("name: x\nchanges: []", "'changes' must be a non-empty list"),
        ("changes: [{at_s: 1.0, spec: Bias, value: 0.2}]", "'name' must be"),
        ("name: x\nspeed: 2\nchanges: [{at_s: 1.0, spec: Bias, value: 0.2}]", "speed"),
        ("name: [unclosed", "cannot read scenario"),
    ],
)
def test_scenario_file_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ScenarioError, match=r"scenario\.yaml") as info:
        load_scenario(_write(tmp_path, text))
    assert expected in str(info.value) and "\n" not in str(info.value)


def _kinds(scenario: Scenario) -> set[str]:
    kinds = set()
    for change in scenario.changes:
        if change.spec == "Scan Frame":
            assert isinstance(change.value, dict)
            kinds.add("multi" if len(change.value) >= 2 else "frame")
        else:
            kinds.add(type(change.value).__name__)
    return kinds


@pytest.mark.parametrize(
    ("path", "count", "first", "last"),
    [(default_scenario_path(), 20, 1.5, 18.0), (quick_scenario_path(), 10, 1.0, 9.0)],
)
def test_shipped_scenarios(path: Path, count: int, first: float, last: float) -> None:
    scenario = load_scenario(path)
    times = [c.at_s for c in scenario.changes]
    assert len(times) >= count and first <= times[0] and times[-1] <= last
    assert all(b - a >= 0.6 for a, b in itertools.pairwise(times))
    assert {"float", "bool", "int", "multi"} <= _kinds(scenario)
    if path == default_scenario_path():
        multi = [c for c in scenario.changes if c.spec == "Scan Frame"]
        assert len(multi) >= 2
    assert {c.spec for c in scenario.changes} <= SPEC_LABELS


async def test_operator_truth_against_live_server(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, SMALL))
    fake = FakeTime()
    truth_path = tmp_path / "truth.jsonl"
    async with NanonisServer(STMModel(seed=3), port=0) as srv:
        op = ScriptedOperator(
            srv.host, srv.port, scenario, truth_log=truth_path, clock=fake, sleep=fake.sleep
        )
        truth = await op.run()
        model = srv.model
    assert op.errors == []
    got = [(e.change_idx, e.label, e.old, e.new) for e in truth]
    p_gain = f32(6e-12)
    assert got == [
        (0, "Bias", f32(0.1), f32(0.3)),
        # change 1 sets the same value: no entry; the frame height is unchanged: no entry
        (2, "Scan Frame Width", f32(50e-9), f32(8e-8)),
        (2, "Scan Frame Angle", 0.0, 20.0),
        (3, "Z Controller Enabled", True, False),
        (4, "Scan Status Code", 0, 1),
        (5, "Z Controller Time Constant", f32(2e-4), f32(p_gain / f32(6e-8))),
        (5, "Z Controller I Gain", f32(3e-8), f32(6e-8)),
        (6, "Scan Frame Center X", 0.0, f32(5e-9)),
        (7, "Z Setpoint", f32(100e-12), f32(2e-10)),
    ]
    assert model.get_scan_frame().width == f32(8e-8)
    assert op.t_start_mono is not None
    for entry in truth:
        assert entry.at_s == scenario.changes[entry.change_idx].at_s
        assert entry.t_sent_mono >= op.t_start_mono + entry.at_s
        assert entry.t_acked_mono >= entry.t_sent_mono and entry.t_sent_epoch > 1e9
    lines = [json.loads(line) for line in truth_path.read_text().splitlines()]
    assert [(d["label"], d["old"], d["new"]) for d in lines] == [g[1:] for g in got]
    assert set(lines[0]) == {
        "change_idx",
        "at_s",
        "label",
        "old",
        "new",
        "t_sent_mono",
        "t_acked_mono",
        "t_sent_epoch",
    }


async def test_operator_records_failures_and_continues(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, SMALL))
    fake = FakeTime()
    async with NanonisServer(STMModel(seed=3), port=0) as srv:
        srv.faults.error_next(command="Bias.Set", message="busy")
        srv.faults.drop_next(command="Scan.FrameSet")
        op = ScriptedOperator(srv.host, srv.port, scenario, clock=fake, sleep=fake.sleep)
        truth = await op.run()
    assert len(op.errors) == 2 and "busy" in op.errors[0] and "Scan Frame" in op.errors[1]
    labels = [e.label for e in truth]
    # change 1 (same bias again) now is a real change; the operator reconnected after the drop
    assert labels[:2] == ["Bias", "Z Controller Enabled"]
    assert "Z Setpoint" in labels and op.finished.is_set()


async def test_run_simulator_with_operator(tmp_path: Path) -> None:
    text = "name: tiny\nchanges:\n  - {at_s: 0.0, spec: Bias, value: 0.5}\n"
    truth = tmp_path / "truth.jsonl"
    async with run_simulator(scenario=_write(tmp_path, text), truth_log=truth) as sim:
        assert sim.operator is not None and sim.operator_task is not None
        entries = await sim.operator_task
        assert sim.model.get_bias() == f32(0.5) and sim.server.port == sim.port
    assert [e.label for e in entries] == ["Bias"]
    assert json.loads(truth.read_text())["new"] == f32(0.5)


async def test_serve_prints_address_and_runs_until_cancelled(tmp_path: Path) -> None:
    lines: list[str] = []
    ready = asyncio.Event()
    sims: list[RunningSimulator] = []

    def on_ready(sim: RunningSimulator) -> None:
        sims.append(sim)
        ready.set()

    text = "name: tiny\nseed: 5\nchanges:\n  - {at_s: 0.0, spec: Scan Status Code, value: 1}\n"
    task = asyncio.create_task(
        serve(scenario=_write(tmp_path, text), ready=on_ready, out=lines.append)
    )
    await asyncio.wait_for(ready.wait(), 10)
    sim = sims[0]
    assert lines == [f"Nanonis simulator listening on 127.0.0.1:{sim.port}"]
    assert sim.operator_task is not None
    await sim.operator_task
    client = AsyncNanonisClient(sim.host, sim.port)
    assert await client.request("Scan.StatusGet") == [1]
    await client.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sim.server.running
