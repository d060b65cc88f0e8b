"""Second review of the benchmark harness (issue #5): its options, its merges, its clean-up.

No timing is asserted: each test gives the harness a bad option, a crash or a signal and checks
what it writes, says and leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import docs, run
from benchmarks.report import Baseline, Condition, Result, write_results

REPO = Path(__file__).resolve().parents[1]


def _row(name: str, bench: str, target: int = 1, figure: float = 1.0) -> dict[str, Any]:
    return Result(
        name,
        target,
        figure,
        "values/s",
        Baseline("bare-sqlite", 2.0, "values/s"),
        0.5,
        "≥ 0.5 × bare-sqlite",
        (Condition("ratio", ">=", 0.5),),
        details={"benchmark": bench},
    ).to_json()


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Replaces the worker: records each call, measures nothing."""
    calls: list[tuple[Any, ...]] = []

    def run_one(*args: Any) -> list[dict[str, Any]]:
        calls.append(args)
        return []

    monkeypatch.setattr(run, "_run_one", run_one)
    return calls


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # argparse prints its error and exits 2; SystemExit("…") leaves the message to the caller
    return err if isinstance(exc.value.code, int) else str(exc.value.code)


@pytest.mark.parametrize("scale", ["nan", "inf", "0", "-0.5"])
def test_a_scale_that_is_not_a_positive_number_is_one_error(
    scale: str,
    tmp_path: Path,
    no_runs: list[tuple[Any, ...]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--quick --scale nan`` ran every worker (each crashed on ``int(nan)``) and then the
    harness itself crashed writing ``"scale": NaN`` into JSON; 0 and negatives ran as if valid."""
    out = tmp_path / "quick.json"
    argv = ["--quick", "--scale", scale, "--only", "writer", "--out", str(out)]
    err = _refused([*argv, "--workdir", str(tmp_path / "w")], capsys)
    assert f"--scale must be a positive number, not {float(scale)}" in err
    assert not no_runs
    assert not out.exists()


def test_an_out_that_is_a_directory_is_refused_before_anything_runs(
    tmp_path: Path, no_runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["--only", "writer", "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path} is a directory" in err
    assert not no_runs


def test_an_out_under_a_file_is_refused_before_anything_runs(
    tmp_path: Path, no_runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to run every benchmark (16 minutes) and only then fail to write, losing them."""
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    out = blocker / "latest.json"
    err = _refused(["--only", "writer", "--out", str(out), "--workdir", str(tmp_path)], capsys)
    assert f"--out {out}: cannot create {blocker}" in err
    assert not no_runs


def test_an_out_that_is_not_a_results_file_is_never_overwritten(
    tmp_path: Path, no_runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped ``--out`` (here a notes file) was read as "no earlier results" and replaced."""
    notes = tmp_path / "notes.txt"
    notes.write_text("calibration: do not lose\n", encoding="utf-8")
    err = _refused(["--only", "writer", "--out", str(notes), "--workdir", str(tmp_path)], capsys)
    assert "is not a results file" in err
    assert notes.read_text(encoding="utf-8") == "calibration: do not lose\n"
    assert not no_runs


def test_a_workdir_that_is_a_file_is_one_error(
    tmp_path: Path, no_runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "scratch"
    blocker.write_text("x", encoding="utf-8")
    out = tmp_path / "latest.json"
    err = _refused(["--only", "writer", "--out", str(out), "--workdir", str(blocker)], capsys)
    assert f"--workdir {blocker} is a file, not a directory" in err
    assert not no_runs


def test_only_naming_no_benchmark_does_not_rewrite_the_results(
    tmp_path: Path, no_runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only ,`` ran nothing and rewrote latest.json's header (its command, time, wall) as
    if it had produced the table."""
    out = tmp_path / "latest.json"
    write_results(out, [_row("writer_throughput", "writer")], {"benchmarks_run": ["writer"]})
    before = out.read_text(encoding="utf-8")
    err = _refused(["--only", ",", "--out", str(out), "--workdir", str(tmp_path)], capsys)
    assert "--only names no benchmark" in err
    assert out.read_text(encoding="utf-8") == before


def test_a_crashed_benchmark_replaces_its_earlier_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that crashes gives rows named ``writer#1`` etc.; the earlier run's
    ``writer_throughput`` (PASS) stayed beside them, so the table showed a stale pass for a
    benchmark that had just failed to run."""
    out = tmp_path / "latest.json"
    earlier = [
        _row("writer_throughput", "writer"),
        _row("bytes_per_value", "writer", 2),
        _row("tcp_4_instruments", "tcp", 6),
    ]
    write_results(out, earlier, {"benchmarks_run": ["writer", "tcp"]})
    crash = tmp_path / "crashing-python"
    crash.write_text("#!/bin/sh\necho 'RuntimeError: boom' >&2\nexit 1\n", encoding="utf-8")
    crash.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crash))
    assert run.main(["--only", "writer", "--out", str(out), "--workdir", str(tmp_path)]) == 1
    capsys.readouterr()
    rows = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))["results"]}
    assert set(rows) == {"writer#1", "writer#2", "writer#5", "tcp_4_instruments"}
    assert rows["writer#1"]["status"] == "error: RuntimeError: boom"
    assert rows["writer#1"]["pass"] is None
    assert rows["tcp_4_instruments"]["pass"] is True


def test_a_success_clears_the_placeholders_of_an_earlier_crash(tmp_path: Path) -> None:
    """The crash rows (``writer#1``, named after no figure) were never replaced by name, so they
    stayed in latest.json, and in the docs' table, after the benchmark ran fine."""
    out = tmp_path / "latest.json"
    crash = {**_row("writer#1", "writer"), "status": "error: boom", "details": {}}
    write_results(out, [crash, _row("tcp_4_instruments", "tcp", 6)], {"benchmarks_run": []})
    write_results(out, [_row("writer_throughput", "writer")], {"benchmarks_run": ["writer"]})
    names = [r["name"] for r in json.loads(out.read_text(encoding="utf-8"))["results"]]
    assert names == ["writer_throughput", "tcp_4_instruments"]


def test_the_docs_name_the_rows_an_only_run_kept_from_earlier(tmp_path: Path) -> None:
    """After ``--only tcp`` the page said the whole table was generated by that command, in its
    wall time, on its date; the writer's figures came from an earlier invocation."""
    out = tmp_path / "latest.json"
    full = {"benchmarks_run": ["writer", "tcp"], "command": "python -m benchmarks"}
    write_results(out, [_row("writer_throughput", "writer"), _row("t", "tcp", 6)], full)
    first = json.loads(out.read_text(encoding="utf-8"))
    assert "Kept from earlier" not in docs.render(first)
    only = {"benchmarks_run": ["tcp"], "command": "python -m benchmarks --only tcp"}
    write_results(out, [_row("t", "tcp", 6, figure=2.0)], only)
    text = docs.render(json.loads(out.read_text(encoding="utf-8")))
    stamp = first["generated_utc"]
    assert f"Kept from earlier invocations, not re-run by it: writer_throughput ({stamp})" in text


def test_docs_without_a_results_file_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "latest.json"
    monkeypatch.setattr(sys, "argv", ["benchmarks.docs", str(missing)])
    with pytest.raises(SystemExit, match="does not exist: run `make bench`"):
        docs.main()


def _descendants_once_serving(harness: subprocess.Popen[str]) -> list[Any]:
    """The harness's worker and TCP simulators, once the simulators are up (a condition)."""
    deadline = time.monotonic() + 90.0
    while time.monotonic() < deadline:
        assert harness.poll() is None, harness.communicate()[1][-2000:]
        found: list[Any] = psutil.Process(harness.pid).children(recursive=True)
        with_cmd = [(p, " ".join(p.cmdline())) for p in found if p.is_running()]
        if any("benchmarks.tcp_servers" in cmd for _, cmd in with_cmd):
            return found
        time.sleep(0.05)  # polling for the condition above, not letting anything settle
    raise AssertionError("the TCP simulators never started")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_harness_ends_its_worker_and_simulators(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """SIGTERM (a CI timeout, ``kill``) or SIGHUP killed the harness alone: the worker and its
    four TCP simulators ran on as orphans and the scratch directory stayed. SIGINT to the
    harness alone printed a traceback. Now each ends everything it started, with one line."""
    out = tmp_path / "quick.json"
    harness = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "tcp", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C's default, even when this test runs where SIGINT is ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    started: list[Any] = []
    try:
        started = _descendants_once_serving(harness)
        worker = next(p for p in started if "benchmarks.worker" in " ".join(p.cmdline()))
        cmd = worker.cmdline()
        workdir = Path(cmd[cmd.index("--workdir") + 1])
        harness.send_signal(signum)
        _, err = harness.communicate(timeout=60)
        _, alive = psutil.wait_procs(started, timeout=5.0)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert harness.returncode == 130
        assert err.strip().splitlines()[-1] == f"interrupted: {out} not written"
        assert "Traceback" not in err
        assert not workdir.exists()
        assert not out.exists()
    finally:
        if harness.poll() is None:
            harness.kill()
        for proc in started:  # what the old harness left running
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        harness.wait(timeout=30)
