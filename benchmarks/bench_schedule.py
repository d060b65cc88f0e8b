"""Real-time figures: schedule accuracy (8), CPU cost (9), memory over a long run (10).

These run trajmon's real recorder on the real clock for the issue's real durations in full mode
(60 s, 60 s, 10 min) and for a few seconds in quick mode; each result records its mode. Each
benchmark runs in its own process (the harness's doing), so CPU time and RSS are trajmon's.

Lateness is recomputed from the committed ``dt_s`` of every sample: the schedule takes the tick
whose slot contains the wake-up instant, so tick ``k = floor(dt_s / interval)`` and lateness
``dt_s - k·interval``. The percentiles are over every tick due, not only the ticks taken: a
tick counted as missed (skipped because the read came a slot or more late) enters at one interval,
its lower bound (:func:`tick_lateness`) — left out, the latest ticks would be exactly the ones the
p99 never sees. Drift is checked exactly: the last sample's tick index + 1 must equal
samples taken + ticks counted as missed (a relative schedule, sleeping ``interval`` after each
read, falls behind that count without counting anything as missed).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np

from benchmarks.common import (
    CHANNELS,
    Ctx,
    bench_instrument,
    closing_instrument,
    parameters,
    record,
    rss_mb,
)
from benchmarks.floors import ThreadCpuSplit, plain_ticks
from benchmarks.report import Baseline, Condition, Result

__all__ = ["memory", "schedule_1khz", "schedule_100hz"]


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def tick_lateness(dts: np.ndarray, interval: float, missed: int) -> np.ndarray:
    """Lateness (s) of every tick due in a run: first each taken sample's ``dt_s − k·interval``
    (``k`` the tick whose slot holds it, the one the schedule takes), in ``dts``' order, then
    ``missed`` ticks at one ``interval`` each — a skipped tick was read a slot or more late, or
    never, so one interval is a lower bound on its lateness. Without them a run that skipped 2 %
    of its ticks at 100 Hz, each read a slot late, would show the p99 of the on-time rest."""
    ticks = np.floor(dts / interval + 1e-9)
    taken = dts - ticks * interval
    return np.concatenate([taken, np.full(missed, interval)])


def _timed_run(
    ctx: Ctx,
    name: str,
    interval: float,
    seconds: float,
    *,
    recorded: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Record one run; returns the summary's counters, CPU share (in all and per thread over
    the run's middle) and per-sample lateness. ``recorded`` is called as soon as the recording
    has ended, before the analysis here reads every sample back (600k of them at 1 kHz for
    10 min: a list of ~25 MB that is the harness's, not trajmon's)."""
    with closing_instrument(bench_instrument(name)) as inst:
        db = ctx.path(f"{name}.db")
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        with ThreadCpuSplit(min(5.0, seconds / 10), seconds * 0.95) as split:
            summary = anyio.run(
                lambda: record(db, name, inst, interval_s=interval, duration_s=seconds)
            )
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    if recorded is not None:
        recorded()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        dts = np.array([r[0] for r in conn.execute(f'SELECT dt_s FROM "{name}/signals"')])
    if not dts.size:  # nothing to time: say why rather than fail on an empty array below
        why = f": {summary.message}" if summary.message else ""
        raise RuntimeError(f"{name}: the run committed no samples ({summary.status}{why})")
    group = summary.groups[0]
    ticks = np.floor(dts / interval + 1e-9)
    lateness = tick_lateness(dts, interval, group.missed_ticks)
    return {
        "samples": group.samples_read,
        "committed": group.samples,
        "missed": group.missed_ticks,
        "due": math.ceil(seconds / interval - 1e-9),
        "drift_ticks": int(ticks[-1] + 1) - (group.samples_read + group.missed_ticks),
        "p99": float(np.percentile(lateness, 99)),
        "p50": float(np.percentile(lateness, 50)),
        "max": float(lateness.max()),
        "p99_taken_only": float(np.percentile(lateness[: dts.size], 99)),
        "cpu_share": cpu / wall,
        "wall_s": wall,
        "lost": summary.lost_samples,
        **split.details(),
    }


def _bare_get_cpu(interval: float, seconds: float) -> float:
    """CPU share of the driver floor: the 12 plain gets per tick on the same absolute schedule,
    on a thread that waits for each tick as the instrument thread does (:func:`plain_ticks`)."""
    with closing_instrument(bench_instrument("cpu_floor")) as inst:
        params = parameters(inst)

        def read() -> None:
            for p in params:
                p.get()

        return plain_ticks(interval, seconds, work=read)["cpu_pct"] / 100


def _floor_seconds(ctx: Ctx) -> float:
    """How long each baseline loop of 8 and 9 runs (bare-get, wake-ups alone, plain ticks)."""
    return ctx.seconds(10.0, 2.0, minimum=0.5)


def _wake_floor(interval: float, seconds: float) -> Baseline:
    """CPU of a thread that only wakes on the same schedule: what the wake-ups cost here."""
    share = plain_ticks(interval, seconds)["cpu_pct"]
    return Baseline("wake-ups alone, no reads", share, "% of one core")


def _lateness_result(
    name: str, hz: int, run: dict[str, Any], interval: float, bound: float, mode: str
) -> dict[str, Any]:
    return Result(
        name,
        8,
        run["p99"] * 1e3,
        "ms p99 lateness",
        Baseline("tick interval", interval * 1e3, "ms"),
        run["p99"] / interval,
        f"p99 ≤ {bound} × interval at {hz} Hz",
        (Condition("ratio", "<=", bound),),
        mode=mode,
        details={k: v for k, v in run.items() if k != "cpu_share"},
    ).to_json()


def _drift_result(name: str, hz: int, run: dict[str, Any], mode: str) -> dict[str, Any]:
    return Result(
        name,
        8,
        float(run["drift_ticks"]),
        "ticks",
        Baseline("ticks due", float(run["due"]), "ticks"),
        run["drift_ticks"] / run["due"],
        f"drift 0 at {hz} Hz (last tick index + 1 = taken + missed)",
        (Condition("figure", "==", 0.0),),
        mode=mode,
        details={"samples": run["samples"], "missed": run["missed"]},
    ).to_json()


def schedule_100hz(ctx: Ctx) -> list[dict[str, Any]]:
    seconds = ctx.seconds(60.0, 5.0, minimum=1.0)
    interval = 0.01
    floor = _bare_get_cpu(interval, _floor_seconds(ctx))
    wakes = _wake_floor(interval, _floor_seconds(ctx))
    run = _timed_run(ctx, "s100", interval, seconds)
    cpu = run["cpu_share"]
    return [
        _lateness_result("schedule_100hz_p99", 100, run, interval, 0.1, ctx.mode),
        _drift_result("schedule_100hz_drift", 100, run, ctx.mode),
        Result(
            "cpu_100hz",
            9,
            cpu * 100,
            "% of one core",
            Baseline("bare-get loop on the same schedule", floor * 100, "% of one core"),
            cpu / floor if floor > 0 else None,
            "≤ 3 % of one core at 100 Hz × 12 channels",
            (Condition("figure", "<=", 3.0),),
            mode=ctx.mode,
            details={
                "seconds": seconds,
                "channels": CHANNELS,
                "wall_s": run["wall_s"],
                "per_thread_cpu_pct": run["per_thread_cpu_pct"],
                "per_thread_window_s": run["per_thread_window_s"],
            },
            floor=wakes,
        ).to_json(),
    ]


def schedule_1khz(ctx: Ctx) -> list[dict[str, Any]]:
    seconds = ctx.seconds(60.0, 5.0, minimum=1.0)
    interval = 0.001
    # The plain loop runs just before and just after trajmon (this VM's noise moves in minutes);
    # the floor is the mean of the two, each kept in the details.
    plain = [plain_ticks(interval, _floor_seconds(ctx))["missed_pct"]]
    run = _timed_run(ctx, "s1k", interval, seconds)
    plain.append(plain_ticks(interval, _floor_seconds(ctx))["missed_pct"])
    return [
        _lateness_result("schedule_1khz_p99", 1000, run, interval, 0.5, ctx.mode),
        Result(
            "schedule_1khz_missed",
            8,
            100 * run["missed"] / run["due"],
            "% ticks missed",
            Baseline("ticks due", float(run["due"]), "ticks"),
            run["missed"] / run["due"],
            "missed ≤ 0.1 % at 1 kHz",
            (Condition("figure", "<=", 0.1),),
            mode=ctx.mode,
            details={
                **{k: v for k, v in run.items() if k not in ("p50", "max")},
                "plain_loop_missed_pct_before_after": plain,
            },
            floor=Baseline("plain loop, same wait, no trajmon", sum(plain) / 2, "% ticks missed"),
        ).to_json(),
        _drift_result("schedule_1khz_drift", 1000, run, ctx.mode),
    ]


class _RssSampler:
    """Samples this process's RSS every ``period`` seconds on a thread (psutil is cheap)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._t0 = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.perf_counter() - self._t0, rss_mb()))

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def memory(ctx: Ctx) -> list[dict[str, Any]]:
    seconds = ctx.seconds(600.0, 20.0, minimum=2.0)
    mark = seconds / 10  # "minute 1" of the 10-minute run
    with _RssSampler(period=min(1.0, seconds / 100)) as sampler:
        run = _timed_run(ctx, "mem", 0.001, seconds, recorded=sampler.stop)
    at_mark = max((mb for t, mb in sampler.samples if t <= mark), default=math.nan)
    peak = max(mb for _, mb in sampler.samples)
    growth = peak - at_mark
    step = max(1, len(sampler.samples) // 20)
    return [
        Result(
            "memory_1khz",
            10,
            growth,
            "MB RSS growth",
            Baseline(f"peak RSS at {mark:.0f} s", at_mark, "MB"),
            growth / at_mark,
            "peak RSS growth minute 1 → 10 ≤ 10 MB (1 kHz × 12 ch)",
            (Condition("figure", "<=", 10.0),),
            mode=ctx.mode,
            details={
                "seconds": seconds,
                "mark_s": mark,
                "peak_rss_mb": peak,
                "rss_trace_mb": [round(mb, 1) for _, mb in sampler.samples[::step]],
                **{k: run[k] for k in ("samples", "missed", "due", "p99", "cpu_share", "lost")},
            },
        ).to_json()
    ]
