"""Profiles behind the findings in docs/performance.md (pyinstrument, main thread).

``python -m benchmarks.profile e2e|writer|sched1k|window|export [--out DIR]`` reruns the
scenario of a failing figure under pyinstrument and writes a text profile. The main thread is
the one that matters here: it runs the event loop — pollers, queue, the writer's encoding — and
everything on it competes for the GIL with the instrument and SQLite threads.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio

from benchmarks.common import (
    Ctx,
    bench_instrument,
    closing_instrument,
    feed_writer,
    record,
    value_pool,
)

__all__ = ["main"]


def _e2e(work: Path) -> None:
    with closing_instrument(bench_instrument("prof")) as inst:
        anyio.run(lambda: record(work / "e2e.db", "e2e", inst, interval_s=1e-5, duration_s=5.0))


def _sched1k(work: Path) -> None:
    with closing_instrument(bench_instrument("prof")) as inst:
        anyio.run(lambda: record(work / "s1k.db", "s1k", inst, interval_s=1e-3, duration_s=10.0))


def _writer(work: Path) -> None:
    anyio.run(lambda: feed_writer(work / "w.db", 300_000, value_pool()))


def _fixture(work: Path) -> Path:
    from benchmarks.fixture import ensure_fixture

    return ensure_fixture(work, 2_000_000)


def _window(work: Path) -> Callable[[], None]:
    from trajmon.queries import connect_readonly, resolve_run
    from trajmon.windows import window_columns

    conn = connect_readonly(_fixture(work))
    ref = resolve_run(conn, "big")
    wins = conn.execute("SELECT window_start_s, window_end_s FROM actions").fetchall()
    picks = random.Random(0).sample(wins, 50)

    def run() -> None:
        for start, end in picks:
            window_columns(conn, ref, "signal", start, end)

    return run


def _export(work: Path) -> Callable[[], None]:
    from trajmon.export import export_run
    from trajmon.queries import connect_readonly, resolve_run

    db = _fixture(work)

    def run() -> None:
        conn = connect_readonly(db)
        export_run(conn, resolve_run(conn, "big"), "parquet", work / "out", overwrite=True)
        conn.close()

    return run


SCENARIOS: dict[str, Callable[[Path], object]] = {
    "e2e": _e2e,
    "sched1k": _sched1k,
    "writer": _writer,
    "window": _window,
    "export": _export,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/profiles"),
        help="directory for SCENARIO.txt (created if missing)",
    )
    args = parser.parse_args()
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a directory, and {args.out} is a file")
    try:
        from pyinstrument import Profiler
    except ImportError:
        parser.error("pyinstrument is missing: pip install -e '.[bench]'")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trajmon-prof-") as tmp:
        work = Path(tmp)
        Ctx("full", 1.0, work)  # same scratch conventions as the benchmarks
        setup = SCENARIOS[args.scenario]
        # Query scenarios build their fixture first, outside the profile.
        target = setup(work) if args.scenario in ("window", "export") else None
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        if callable(target):
            target()
        else:
            setup(work)
        profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    path = args.out / f"{args.scenario}.txt"
    path.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
