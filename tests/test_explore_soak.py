"""Findings of a soak run (an operator's day against the simulator with a fault plan).

The scripted operator reports each failed change on the simulator's stderr. After a dropped
connection or an outage that line read ``failed: IncompleteReadError('0 bytes read on a total
of 40 expected bytes')``, and after a reply that never came ``failed: TimeoutError()``: neither
says which request failed nor what happened.
"""

from __future__ import annotations

from pathlib import Path

from simulators.nanonis_server import NanonisServer
from simulators.operator import ScriptedOperator, load_scenario
from simulators.stm_model import STMModel

SCENARIO = "name: one\nchanges:\n  - {at_s: 0.0, spec: Bias, value: 0.3}\n"


async def _failure(tmp_path: Path, arm: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    async with NanonisServer(STMModel(seed=1), port=0) as srv:
        if arm == "drop":
            srv.faults.drop_next(command="Bias.Get")
        else:
            srv.faults.hang_next(seconds=1.0, command="Bias.Get")
        op = ScriptedOperator(srv.host, srv.port, load_scenario(path), timeout_s=0.2)
        await op.run()
    assert len(op.errors) == 1
    return op.errors[0]


async def test_operator_names_a_dropped_connection(tmp_path: Path) -> None:
    line = await _failure(tmp_path, "drop")
    assert "IncompleteReadError" not in line and "0 bytes read" not in line, line
    assert "Bias.Get" in line and "connection closed" in line, line


async def test_operator_names_a_request_without_reply(tmp_path: Path) -> None:
    line = await _failure(tmp_path, "hang")
    assert "Bias.Get" in line and "no reply within 0.2 s" in line, line
