"""The benchmark harness works: quick mode at a tiny scale writes a well-formed latest.json.

Benchmarks are not tests: this checks the harness and the shape of its output, never whether a
figure meets its target (timings on a loaded CI machine mean nothing).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import table_rows

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"name", "figure", "unit", "baseline", "ratio", "target", "pass", "mode", "status"}


@pytest.mark.timeout(300)
def test_quick_mode_writes_latest_json(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--scale",
            "0.05",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["mode"] == "quick"
    assert {"python", "cpus", "sqlite", "platform"} <= set(doc["machine"])
    results = doc["results"]
    assert {r["target_id"] for r in results} == set(range(1, 14)), "every target has a figure"
    assert len({r["name"] for r in results}) == len(results)
    for r in results:
        assert set(r) >= RESULT_KEYS, r["name"]
        assert r["mode"] == "quick"
        assert r["pass"] in (True, False, None)
        assert isinstance(r["target"]["text"], str) and r["target"]["text"]
        if r["status"] == "measured":
            assert isinstance(r["figure"], float | int) and math.isfinite(r["figure"]), r
            assert r["target"]["conditions"], r["name"]
            base = r["baseline"]
            assert base is None or {"name", "figure", "unit"} <= set(base)
        else:
            assert r["status"].startswith("not measured"), r
            assert r["pass"] is None
    floors = {r["name"]: r.get("floor") for r in results}
    # the machine's own floor, same run
    for name in ("schedule_1khz_missed", "cpu_100hz", "tcp_4_instruments"):
        assert {"name", "figure", "unit"} <= set(floors[name] or {}), name
    assert "trajmon benchmarks" in proc.stdout, "the table is printed"
    shown = {row[1]: row[3] for row in table_rows(results)}
    assert "; machine floor, plain loop, same wait, no trajmon: " in shown["schedule_1khz_missed"]


def test_profile_refuses_a_file_as_its_output_directory(tmp_path: Path) -> None:
    existing = tmp_path / "e2e.txt"
    existing.write_text("an earlier profile\n")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "e2e", "--out", str(existing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"--out must be a directory, and {existing} is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert existing.read_text() == "an earlier profile\n"
