"""Every thread's profile of a recording scenario, with py-spy (all threads, not one).

:mod:`benchmarks.profile` uses pyinstrument, which sees only the thread it runs on: the event
loop. The figures it cannot explain — the end-to-end rate (3) — are decided on the instrument
and SQLite threads too, which share the GIL with the loop. py-spy samples all of them from
outside the process; this runs a scenario of :mod:`benchmarks.profile` under
``py-spy record --threads --format raw`` and summarises the folded stacks per thread: its
samples, the lines most often on top of its stack (self) and the functions most often anywhere
in it (inclusive). py-spy reports a thread blocked in a C call (a queue or lock wait) as
running, so a wait shows up as the line that waits; docs/performance.md says where that
matters. Needs the ``bench`` extra (py-spy) and permission to trace a child process.

``python -m benchmarks.threadprofile e2e|sched1k [--rate N] [--out DIR]`` writes
``DIR/SCENARIO-threads.txt`` (default ``benchmarks/results/profiles``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ThreadProfile", "main", "summarise"]

SCENARIOS = ("e2e", "sched1k")
_THREAD = re.compile(r"^thread \((\d+)\)(?::\s*(.*))?$")


@dataclass
class ThreadProfile:
    name: str
    samples: int = 0
    self_lines: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)


def summarise(raw_lines: Iterable[str]) -> list[ThreadProfile]:
    """Per-thread counts from py-spy's raw (folded) output, busiest thread first. A line is
    ``thread (TID): NAME;frame;frame … COUNT``; py-spy leaves the name out on some lines of a
    thread, so names are collected from every line first."""
    parsed: list[tuple[str, list[str], int]] = []
    names: dict[str, str] = {}
    for line in raw_lines:
        stack, _, digits = line.rstrip("\n").rpartition(" ")
        if not stack or not digits.isdigit():
            continue
        head, *frames = stack.split(";")
        match = _THREAD.match(head)
        if match is None:
            continue
        tid, name = match.groups()
        if name:
            names[tid] = name
        parsed.append((tid, frames, int(digits)))
    threads: dict[str, ThreadProfile] = {}
    for tid, frames, count in parsed:
        prof = threads.setdefault(tid, ThreadProfile(f"{names.get(tid, '?')} ({tid})"))
        prof.samples += count
        if frames:
            prof.self_lines[frames[-1]] += count
        for func in {f.split(" (", 1)[0] for f in frames}:
            prof.inclusive[func] += count
    return sorted(threads.values(), key=lambda p: p.samples, reverse=True)


def render(profiles: list[ThreadProfile], header: str, top: int = 15) -> str:
    out = [header, ""]
    for prof in profiles:
        out.append(f"== {prof.name}: {prof.samples} samples")
        out.append("   self (line on top of the stack):")
        for frame, n in prof.self_lines.most_common(top):
            out.append(f"   {n:7d} {100 * n / prof.samples:5.1f} %  {frame}")
        out.append("   inclusive (function anywhere in the stack; those in every sample left out):")
        shown = [(f, n) for f, n in prof.inclusive.most_common() if n < prof.samples]
        for func, n in shown[:top]:
            out.append(f"   {n:7d} {100 * n / prof.samples:5.1f} %  {func}")
        out.append("")
    return "\n".join(out)


def find_py_spy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv not activated)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def _child(scenario: str) -> None:
    from benchmarks.profile import SCENARIOS as RUNS

    with tempfile.TemporaryDirectory(prefix="trajmon-tprof-") as tmp:
        RUNS[scenario](Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threadprofile")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--rate", type=int, default=250, help="samples a second (default 250)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/profiles"),
        help="directory for SCENARIO-threads.txt (created if missing)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # the process py-spy watches
        _child(args.scenario)
        return 0
    if not 1 <= args.rate <= 1000:
        parser.error(f"--rate must be 1 to 1000 samples a second, not {args.rate}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a directory, and {args.out} is a file")
    py_spy = find_py_spy()
    if py_spy is None:
        parser.error("py-spy is missing: pip install -e '.[bench]'")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trajmon-tprof-") as tmp:
        raw = Path(tmp) / "raw.txt"
        child = [sys.executable, "-m", "benchmarks.threadprofile", args.scenario, "--child"]
        cmd = [py_spy, "record", "--threads", "-f", "raw", "-r", str(args.rate), "-o", str(raw)]
        proc = subprocess.run([*cmd, "--", *child], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not raw.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"error: py-spy failed (exit {proc.returncode}): {last}", file=sys.stderr)
            return 1
        profiles = summarise(raw.read_text(encoding="utf-8").splitlines())
    header = (
        f"py-spy record --threads -r {args.rate}, scenario {args.scenario} "
        "(benchmarks/profile.py); waits in C calls count as samples of the waiting line"
    )
    text = render(profiles, header)
    path = args.out / f"{args.scenario}-threads.txt"
    path.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
