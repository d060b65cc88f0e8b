"""Which benchmarks exist, what targets they report, and where their code lives.

Entries name ``module:function`` strings so the harness can list and order benchmarks without
importing QCoDeS, numpy or trajmon in the parent process (each runs in its own subprocess).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BENCHMARKS", "Bench"]


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    entry: str  # "module:function", the function takes a Ctx and returns result dicts
    targets: tuple[int, ...]
    about: str


BENCHMARKS: tuple[Bench, ...] = (
    Bench("writer", "benchmarks.bench_writer:writer", (1, 2, 5), "1M rows via queue + writer"),
    Bench("datasaver", "benchmarks.bench_writer:datasaver", (4,), "100k rows vs QCoDeS"),
    Bench("e2e_rate", "benchmarks.bench_rate:e2e_rate", (3, 13), "max rate, 12 channels"),
    Bench("tcp", "benchmarks.bench_tcp:tcp", (6, 7), "4 TCP servers, Signals.ValsGet"),
    Bench("schedule", "benchmarks.bench_schedule:schedule_100hz", (8, 9), "100 Hz for 60 s"),
    Bench("schedule_1khz", "benchmarks.bench_schedule:schedule_1khz", (8,), "1 kHz for 60 s"),
    Bench("memory", "benchmarks.bench_schedule:memory", (10,), "1 kHz for 10 min"),
    Bench("window_query", "benchmarks.bench_query:window_query", (11,), "±2.5 s on 10M rows"),
    Bench("export", "benchmarks.bench_query:export", (12,), "Parquet export of 10M rows"),
)
