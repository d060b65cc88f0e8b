"""The harness: run each benchmark in its own subprocess, collect, write latest.json, print.

Benchmarks are not tests: a figure that misses its target is reported (exit code 0); only a
benchmark that crashes makes the harness exit non-zero, because then the harness is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.registry import BENCHMARKS, Bench
from benchmarks.report import (
    not_measured,
    other_modes,
    print_table,
    results_problem,
    write_results,
)

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
QUICK_OUT = DEFAULT_OUT.with_name("quick.json")  # quick figures never replace the full ones


def _selected(only: list[str] | None) -> list[Bench]:
    if not only:
        return list(BENCHMARKS)
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    known = ", ".join(b.name for b in BENCHMARKS)
    if not names:
        # Nothing to run would still rewrite the results file's header as if it had run.
        raise SystemExit(f"--only names no benchmark; known: {known}")
    unknown = names - {b.name for b in BENCHMARKS}
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; known: {known}")
    return [b for b in BENCHMARKS if b.name in names]


def _run_one(bench: Bench, mode: str, scale: float, workdir: Path) -> list[dict[str, Any]]:
    out = workdir / f"{bench.name}.json"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        bench.name,
        "--mode",
        mode,
        "--scale",
        str(scale),
        "--workdir",
        str(workdir),
        "--json-out",
        str(out),
    ]
    # Its own session, so that the worker and everything it starts (the TCP simulators, the
    # fixture builder) can be ended together: on Ctrl-C or SIGTERM here, and after it exits.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    limit = WORKER_LIMIT_S[mode]
    hung = False
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:  # a hung recorder must not hang `make bench` for good
        hung = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if hung or proc.returncode != 0 or not out.exists():
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        sys.stderr.write(stderr[-4000:])
        reason = f"error: {tail[0][:200]}"
        if hung:
            reason = f"error: no result within {limit:g} s (hung?); worker killed"
        rows = [not_measured(f"{bench.name}#{t}", t, "", "", reason, mode) for t in bench.targets]
        for row in rows:  # whose rows these are: they replace the benchmark's earlier ones
            row["details"]["benchmark"] = bench.name
        return rows
    results: list[dict[str, Any]] = json.loads(out.read_text(encoding="utf-8"))
    return results


#: The longest one worker may take, by mode: twice the slowest benchmark's usual time (memory,
#: 10 min in full mode; the fixture builds, 1 min in quick mode), then it counts as crashed.
WORKER_LIMIT_S = {"full": 1200.0, "quick": 300.0}


def _check_paths(parser: argparse.ArgumentParser, out: Path, workdir: Path | None) -> None:
    """Refuse, before anything runs, an ``--out`` or ``--workdir`` that would only fail (or
    overwrite a file that is not a results file) once every benchmark has run."""
    if out.is_dir():
        parser.error(f"--out {out} is a directory: give a file, such as {out / 'latest.json'}")
    if out.exists() and (problem := results_problem(out)):
        parser.error(f"--out {out} {problem}: it would be overwritten; choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {out}: cannot create {out.parent} ({exc.strerror})")
    if not os.access(out.parent, os.W_OK):
        parser.error(f"--out {out}: {out.parent} is not writable")
    if workdir is not None:
        if workdir.exists() and not workdir.is_dir():
            parser.error(f"--workdir {workdir} is a file, not a directory")
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--workdir {workdir}: cannot create it ({exc.strerror})")


#: Signals that end the harness as Ctrl-C does: the worker's session is killed and the scratch
#: directory removed. By default each would kill this process alone, orphaning both (SIGHUP, a
#: closed terminal, no longer reaches the worker in its own session).
_ENDING = (signal.SIGTERM, signal.SIGHUP)


def _terminated(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Measure trajmon against its limits and peers."
    )
    parser.add_argument("--quick", action="store_true", help="short sizes and durations")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="benchmark name(s), comma-separated"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply sizes and durations (with --quick)"
    )
    parser.add_argument(
        "--out", type=Path, help="results JSON (default: results/latest.json, quick.json)"
    )
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:15} targets {', '.join(map(str, b.targets)):10} {b.about}")
        return 0
    if not (math.isfinite(args.scale) and args.scale > 0):
        parser.error(f"--scale must be a positive number, not {args.scale}")
    if args.scale != 1.0 and not args.quick:
        # Full rows are the sizes and durations: a scaled run marked "full" would be
        # merged into latest.json and judged against the targets as if it were one.
        parser.error("--scale needs --quick (full mode runs the issue's sizes and durations)")
    mode = "quick" if args.quick else "full"
    out: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    _check_paths(parser, out, args.workdir)
    if others := other_modes(out, mode):
        parser.error(f"{out} holds {', '.join(sorted(others))} results; choose another --out")
    benches = _selected(args.only)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trajmon-bench-"))
    results: list[dict[str, Any]] = []
    crashed = False
    started = time.perf_counter()
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _terminated) for sig in _ENDING} if on_main else {}
    try:
        for bench in benches:
            t = time.perf_counter()
            print(f"[bench] {bench.name} ({mode}) ...", file=sys.stderr, flush=True)
            got = _run_one(bench, mode, args.scale, workdir)
            crashed |= any(r["status"].startswith("error") for r in got)
            results.extend(got)
            print(
                f"[bench] {bench.name} done in {time.perf_counter() - t:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    except KeyboardInterrupt:
        print(f"interrupted: {out} not written", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "mode": mode,
        "scale": args.scale,
        "benchmarks_run": [b.name for b in benches],
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    write_results(out, results, meta)
    doc = json.loads(out.read_text(encoding="utf-8"))
    print_table(doc["results"])
    print(f"wrote {out} ({meta['wall_s']} s)", file=sys.stderr)
    return 1 if crashed else 0
