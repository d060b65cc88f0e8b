"""Review of the benchmark methodology (issue #5): what a figure counts, which table it joins.

No timings are asserted: each test feeds a small, made-up input to the computation or the harness.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from benchmarks import bench_schedule, run
from benchmarks.common import Ctx
from benchmarks.report import Baseline, Condition, Result, write_results

INTERVAL = 0.01  # 100 Hz, whose p99 bound is 0.1 × interval


def _fake_recording(dts: list[float], missed: int) -> Any:
    """A stand-in for ``common.record``: writes the given ``dt_s`` and reports ``missed``."""

    async def record(db: Path, name: str, inst: Any, **_: Any) -> Any:
        with sqlite3.connect(db) as conn:
            conn.execute(f'CREATE TABLE "{name}/signals" (sample_idx INTEGER PRIMARY KEY, dt_s)')
            conn.executemany(f'INSERT INTO "{name}/signals" (dt_s) VALUES (?)', [(t,) for t in dts])
        conn.close()
        group = SimpleNamespace(samples_read=len(dts), samples=len(dts), missed_ticks=missed)
        return SimpleNamespace(groups=[group], lost_samples=0)

    return record


def test_p99_lateness_counts_the_missed_ticks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """100 ticks due, 5 of them skipped (each read a slot late), the 95 taken 0.1 ms late: the
    p99 tick lateness is at least one interval. Before, the skipped ticks were left out and the
    p99 of the on-time rest (0.1 ms, 0.01 × interval) passed the 0.1 × interval bound."""
    taken = [k for k in range(100) if k % 20 != 5]  # ticks 5, 25, 45, 65, 85 were skipped
    dts = [k * INTERVAL + 1e-4 for k in taken]
    monkeypatch.setattr(bench_schedule, "record", _fake_recording(dts, missed=5))
    got = bench_schedule._timed_run(Ctx("full", 1.0, tmp_path), "late", INTERVAL, 1.0)
    assert got["drift_ticks"] == 0  # the fake is a consistent absolute schedule
    assert got["p99"] >= INTERVAL
    assert got["p50"] == pytest.approx(1e-4)
    row = bench_schedule._lateness_result("p99", 100, got, INTERVAL, 0.1, "full")
    assert row["ratio"] >= 1.0
    assert row["pass"] is False


def test_p99_lateness_without_missed_ticks_is_the_samples_own() -> None:
    dts = np.array([k * INTERVAL + 2e-4 for k in range(50)])
    lateness = bench_schedule.tick_lateness(dts, INTERVAL, 0)
    assert lateness.shape == (50,)
    assert lateness == pytest.approx([2e-4] * 50)


def _row(mode: str, name: str = "writer_throughput") -> dict[str, Any]:
    return Result(
        name,
        1,
        1.0,
        "values/s",
        Baseline("bare-sqlite", 2.0, "values/s"),
        0.5,
        "≥ 0.5 × bare-sqlite",
        (Condition("ratio", ">=", 0.5),),
        mode=mode,
    ).to_json()


def test_quick_results_are_never_merged_into_a_full_table(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    write_results(out, [_row("full")], {"mode": "full"})
    with pytest.raises(ValueError, match="full"):
        write_results(out, [_row("quick", "bytes_per_value")], {"mode": "quick"})
    rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert [(r["name"], r["mode"]) for r in rows] == [("writer_throughput", "full")]


def test_harness_refuses_quick_run_into_a_full_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "latest.json"
    write_results(out, [_row("full")], {"mode": "full"})
    before = out.read_text(encoding="utf-8")
    monkeypatch.setattr(run, "_run_one", lambda *a: [_row("quick", "bytes_per_value")])
    with pytest.raises(SystemExit) as exc:
        run.main(["--quick", "--only", "writer", "--out", str(out), "--workdir", str(tmp_path)])
    assert exc.value.code == 2
    assert out.read_text(encoding="utf-8") == before


def test_a_scaled_run_is_not_labelled_full(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--scale`` without ``--quick`` ran smaller sizes but marked every row ``full`` and merged
    it into latest.json, where the table judged it against the targets."""
    out = tmp_path / "latest.json"
    calls: list[tuple[Any, ...]] = []

    def run_one(*args: Any) -> list[dict[str, Any]]:
        calls.append(args)
        return []

    monkeypatch.setattr(run, "_run_one", run_one)
    with pytest.raises(SystemExit) as exc:
        run.main(
            ["--only", "writer", "--scale", "0.1", "--out", str(out), "--workdir", str(tmp_path)]
        )
    assert exc.value.code == 2
    assert not calls
    assert not out.exists()
