"""Review of the simulators and the demo/scoring path: faults found and their fixes."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_sim_operator import FakeTime
from typer.testing import CliRunner

from simulators.faults import FaultPlanStopped
from simulators.nanonis_server import NanonisServer
from simulators.operator import ScriptedOperator, load_scenario
from simulators.serve import serve
from simulators.stm_model import STMModel, f32
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.cli import app
from trajmon.scoring import TruthChange, score_actions, score_recording


def _scenario(tmp_path: Path, changes: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"name: review\nchanges:\n{changes}", encoding="utf-8")
    return path


@pytest.mark.parametrize("fault", ["error", "drop"])
async def test_a_set_acknowledged_but_not_read_back_is_still_in_the_truth(
    tmp_path: Path, fault: str
) -> None:
    """The set of Bias was acknowledged (it happened), only the read-back after it failed: the
    truth must still hold the change, or a detector that saw it is scored a false detection."""
    scenario = load_scenario(_scenario(tmp_path, "  - {at_s: 0.5, spec: Bias, value: 0.3}\n"))
    fake = FakeTime()
    async with NanonisServer(STMModel(seed=1), port=0) as srv:
        # The first Bias.Get (the read before the set) passes: a zero-second hang uses it up.
        srv.faults.hang_next(seconds=0.0, command="Bias.Get")
        if fault == "error":
            srv.faults.error_next(command="Bias.Get", message="busy")
        else:
            srv.faults.drop_next(command="Bias.Get")
        op = ScriptedOperator(srv.host, srv.port, scenario, clock=fake, sleep=fake.sleep)
        truth = await op.run()
        applied = srv.model.get_bias()
    assert applied == f32(0.3)
    assert [(e.label, e.old, e.new) for e in truth] == [("Bias", f32(0.1), f32(0.3))]
    assert op.errors == []


async def test_a_read_back_that_keeps_failing_says_the_change_was_applied(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path, "  - {at_s: 0.5, spec: Bias, value: 0.3}\n"))
    fake = FakeTime()
    async with NanonisServer(STMModel(seed=1), port=0) as srv:
        srv.faults.hang_next(seconds=0.0, command="Bias.Get")
        srv.faults.error_next(n=10, command="Bias.Get", message="busy")
        op = ScriptedOperator(srv.host, srv.port, scenario, clock=fake, sleep=fake.sleep)
        truth = await op.run()
    assert truth == []
    assert len(op.errors) == 1
    assert "was applied but not read back" in op.errors[0] and "busy" in op.errors[0]


async def test_an_outage_whose_restart_fails_stops_serve_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program takes the port during a planned outage: the server cannot come back.
    ``serve`` used to swallow that in the fault-plan task and wait on, serving nothing."""
    blockers: list[socket.socket] = []
    real_stop = NanonisServer.stop

    async def stop_and_take_the_port(self: NanonisServer) -> None:
        await real_stop(self)
        if not blockers:  # the outage's stop, not the final one
            blockers.append(socket.socket())
            blockers[0].bind((self.host, self.port))
            blockers[0].listen()

    monkeypatch.setattr(NanonisServer, "stop", stop_and_take_the_port)
    plan = tmp_path / "plan.yaml"
    plan.write_text("faults:\n  - {at_s: 0.0, fault: outage, seconds: 0.0}\n", encoding="utf-8")
    lines: list[str] = []
    try:
        with pytest.raises(FaultPlanStopped, match=r"outage at 0 s .* cannot listen on 127\.0"):
            await asyncio.wait_for(serve(faults=plan, out=lines.append), 10)
    finally:
        for blocker in blockers:
            blocker.close()
    assert lines and lines[0].startswith("Nanonis simulator listening on")


def test_sim_serve_reports_a_stopped_fault_plan_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stopped(**kwargs: object) -> None:
        raise FaultPlanStopped("fault plan: after the outage at 2 s the server cannot listen")

    # sys.modules: the package's ``serve`` attribute is the function, not the module.
    monkeypatch.setattr(sys.modules["simulators.serve"], "serve", stopped)
    result = CliRunner().invoke(app, ["sim", "serve", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "trajmon: error: fault plan: after the outage at 2 s the server cannot listen"
    ]


def test_a_threaded_server_that_cannot_listen_leaves_no_thread_running() -> None:
    """``with ThreadedNanonisServer(port=busy)`` raises in ``__enter__``, so no ``__exit__``
    ends its event-loop thread: the loop used to run on, unclosed, for the rest of the process."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        srv = ThreadedNanonisServer(port=busy.getsockname()[1])
        with pytest.raises(OSError, match="address already in use"), srv:
            pass
    assert not srv._thread.is_alive()
    assert srv._loop.is_closed()


def _act(label: str, dt_s: float, new: object) -> dict[str, object]:
    return {"spec_label": label, "dt_s": dt_s, "new_value": new}


def test_a_detection_counts_from_the_last_change_it_shows() -> None:
    """Bias 0.1 → 0.3 → 0.1 → 0.3 within one read interval: the read at 1.15 s shows the third
    change (sent at 1.10 s, latency 0.05 s); the first two were never visible. Matched in time
    order the first change took the detection: latency 0.15 s, and the seen change 'missed'."""
    truth = [TruthChange("Bias", 1.0, 0.3), TruthChange("Bias", 1.05, 0.1)]
    truth.append(TruthChange("Bias", 1.10, 0.3))
    score = score_actions([_act("Bias", 1.15, 0.3)], truth, max_latency_s=0.2)
    assert (score.matched, score.precision, score.recall) == (1, 1.0, pytest.approx(1 / 3))
    assert score.latencies_s == [pytest.approx(0.05)]
    assert score.unmatched_truth == truth[:2]


def test_misses_extras_and_latencies_by_hand() -> None:
    truth = [TruthChange("Bias", 1.0, 0.3), TruthChange("Z Setpoint", 2.0, 2e-10)]
    truth.append(TruthChange("Bias", 3.0, 0.5))
    detected = [_act("Bias", 1.08, 0.3), _act("Bias", 3.5, 0.5), _act("Scan Status Code", 4, 1)]
    score = score_actions(detected, truth, max_latency_s=0.2, early_s=0.01)
    # Bias 0.5 seen 0.5 s late: outside the window, so a miss and a false detection.
    assert (score.detected, score.truth, score.matched) == (3, 3, 1)
    assert score.precision == pytest.approx(1 / 3) and score.recall == pytest.approx(1 / 3)
    assert score.latencies_s == [pytest.approx(0.08)]
    assert score.unmatched_truth == truth[1:]
    assert score.unmatched_detected == detected[1:]


def _spec_group(labels: list[str], interval_s: float, last_dt_s: float) -> tuple[Any, Any]:
    group = SimpleNamespace(
        kind="spec", interval_s=interval_s, channels=[SimpleNamespace(label=x) for x in labels]
    )
    stats = SimpleNamespace(last_dt_s=last_dt_s, read_s_max=0.002, lateness_max_s=0.001)
    return group, stats


def test_a_change_after_the_last_read_of_its_own_group_is_not_required() -> None:
    """Two spec groups: Bias every 0.1 s (last read at 19.9 s), Z Setpoint every 5 s (last read
    at 15 s). A setpoint change at 17 s could not be seen by its group, yet it was required
    because the fast group read last at 19.9 s: a recall below 1 for a perfect recording."""
    fast, fast_stats = _spec_group(["Bias"], 0.1, 19.9)
    slow, slow_stats = _spec_group(["Z Setpoint"], 5.0, 15.0)
    recorder = SimpleNamespace(t0_mono=100.0, groups=[fast, slow], stats=[fast_stats, slow_stats])
    entry = SimpleNamespace(label="Z Setpoint", new=2e-10, t_sent_mono=117.0, t_acked_mono=117.0)
    bias = SimpleNamespace(label="Bias", new=0.3, t_sent_mono=105.0, t_acked_mono=105.001)
    actions = [_act("Bias", 5.05, 0.3)]
    score, required = score_recording(recorder, [bias, entry], actions)  # type: ignore[arg-type]
    assert required == [TruthChange("Bias", 5.0, 0.3)]
    assert (score.matched, score.precision, score.recall) == (1, 1.0, 1.0)


def test_sim_serve_on_a_busy_port_keeps_the_earlier_truth_log(tmp_path: Path) -> None:
    """The check that the truth log can be written opened it with "w": a serve that then found
    its port taken had already emptied the truth log of the session before it."""
    from simulators.operator import quick_scenario_path

    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"change": 0}\n', encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = ["sim", "serve", "--port", port, "--scenario", str(quick_scenario_path())]
        result = CliRunner().invoke(app, [*args, "--truth-log", str(truth)])
    assert result.exit_code == 2, result.output
    assert "cannot serve on 127.0.0.1" in result.output
    assert truth.read_text(encoding="utf-8") == '{"change": 0}\n'
