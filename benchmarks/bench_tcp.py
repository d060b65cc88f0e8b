"""TCP figures: 4 instruments read concurrently (6), one multi-value read per tick (7).

Target 6 reads three channels per instrument that come from three different Nanonis commands
(``Bias.Get``, ``ZCtrl.SetpntGet``, ``Scan.StatusGet``), so trajmon and the sequential poller
send the same requests per instrument (3) and the ratio isolates the concurrency of one worker
thread per instrument — its ideal is 4×. How close this machine lets anything come to that is its
floor: plain ``get`` calls on one thread per instrument, no trajmon (:func:`_pool_rate`), over the
same servers and connections, measured in the same invocation. Batching several signals into one
``Signals.ValsGet`` is measured on its own, by target 7.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from benchmarks.baselines import SequentialPoller
from benchmarks.common import Ctx, committed_rate
from benchmarks.report import Baseline, Condition, Result
from benchmarks.tcp_servers import servers
from trajmon import MonitorConfig, Recorder
from trajmon.config import ChannelSpec

__all__ = ["tcp"]

LATENCY_S = 0.005
INSTRUMENTS = 4
PARAMS = ("bias", "z_setpoint", "scan_status")


def _connect(ports: list[int]) -> list[Any]:
    from trajmon.drivers.nanonis import NanonisSTM

    return [
        NanonisSTM(f"stm{i}", address="127.0.0.1", port=port, timeout=2.0)
        for i, port in enumerate(ports)
    ]


def _rate(fn: Any, seconds: float) -> tuple[float, int]:
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start), calls


def _pool_rate(params: list[list[Any]], seconds: float) -> tuple[float, int]:
    """Ticks/s of the bare-get loop run concurrently: each tick, one thread per instrument gets
    its parameters one after another, and the tick ends when the slowest instrument is done —
    trajmon's poll group without trajmon (no queue, no timestamps, no database)."""

    def read(group: list[Any]) -> None:
        for param in group:
            param.get()

    with ThreadPoolExecutor(len(params)) as pool:
        return _rate(lambda: list(pool.map(read, params)), seconds)


def tcp(ctx: Ctx) -> list[dict[str, Any]]:
    seconds = ctx.seconds(10.0, 3.0, minimum=1.0)
    warmup = min(1.0, seconds / 4)
    with servers(INSTRUMENTS, LATENCY_S) as ports:
        stms = _connect(ports)
        try:
            channels = [
                ChannelSpec(label=f"{s.name} {p}", source=f"{s.name}.{p}", kind="signal")
                for s in stms
                for p in PARAMS
            ]
            db = ctx.path("tcp.db")
            config = MonitorConfig(
                run_name="tcp", db=db, interval_s=1e-5, duration_s=seconds, channels=channels
            )
            summary = anyio.run(Recorder(config, {s.name: s for s in stms}).run)
            rate, rows = committed_rate(db, "tcp/signals", warmup)
            seq = SequentialPoller(
                ctx.path("tcp_seq.db"),
                [(f"{s.name} {p}", s.parameters[p]) for s in stms for p in PARAMS],
            )
            seq_rate, seq_rows = seq.run(seconds)
            pool_rate, pool_ticks = _pool_rate(
                [[s.parameters[p] for p in PARAMS] for s in stms], seconds
            )
            stm = stms[0]
            names = stm.signal_names()[:3]
            many_rate, many_calls = _rate(lambda: stm.read_signals(names), seconds / 2)
            one_rate, one_calls = _rate(lambda: [stm.read_signals([n]) for n in names], seconds / 2)
        finally:
            for s in stms:
                s.close()
    return [
        Result(
            "tcp_4_instruments",
            6,
            rate,
            "samples/s",
            Baseline("sequential-poller (seed)", seq_rate, "rows/s"),
            rate / seq_rate,
            "≥ 3.6 × sequential-poller",
            (Condition("ratio", ">=", 3.6),),
            mode=ctx.mode,
            details={
                "seconds": seconds,
                "instruments": INSTRUMENTS,
                "latency_s": LATENCY_S,
                "channels_per_instrument": list(PARAMS),
                "requests_per_instrument_per_sample": len(PARAMS),
                "trajmon_rows": rows,
                "trajmon_failed_reads": sum(g.failed_reads for g in summary.groups),
                "sequential_rows": seq_rows,
                "bare_get_threads_rate": pool_rate,
                "bare_get_threads_ticks": pool_ticks,
            },
            floor=Baseline(
                "bare-get, one thread per instrument, no trajmon", pool_rate / seq_rate, "×"
            ),
        ).to_json(),
        Result(
            "multi_value_read",
            7,
            many_rate,
            "reads/s",
            Baseline("one Signals.ValsGet per signal", one_rate, "reads/s"),
            many_rate / one_rate,
            "≥ 2.7 × one request per signal",
            (Condition("ratio", ">=", 2.7),),
            mode=ctx.mode,
            details={
                "signals": names,
                "latency_s": LATENCY_S,
                "batched_calls": many_calls,
                "per_signal_calls": one_calls,
            },
        ).to_json(),
    ]
