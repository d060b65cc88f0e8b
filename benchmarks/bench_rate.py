"""Maximum end-to-end sample rate on a zero-latency in-process instrument (targets 3 and 13).

trajmon runs flat out: a 1 µs interval means every tick is late, so each poller reads again as
soon as its previous sample is enqueued (missed ticks are skipped and counted, never burst).
The rate is counted from committed rows after a warm-up, so it is what reached the disk.

The bare-get loop (driver limit) is a single thread and trajmon is several, and this machine's
two cores do not run at one steady speed: one core can be a third slower than the other for
seconds at a time, and a lone loop's rate swings by as much (docs/performance.md). So target 3
is measured in rounds: a bare-get run, a trajmon run, a bare-get run, and so on; each trajmon
run is divided by the mean of the bare-get runs just before and after it, and the figure is
the median over the rounds. The seed design's sequential poller runs once, after them.
"""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

import anyio

from benchmarks.baselines import SequentialPoller, bare_get_rate
from benchmarks.common import (
    CHANNELS,
    Ctx,
    bench_instrument,
    closing_instrument,
    committed_rate,
    neighbour_ratios,
    parameters,
    record,
)
from benchmarks.report import Baseline, Condition, Result

__all__ = ["e2e_rate"]

FLAT_OUT_S = 1e-6


def e2e_rate(ctx: Ctx) -> list[dict[str, Any]]:
    rounds = 4 if not ctx.quick else 2
    seconds = ctx.seconds(5.0, 2.0, minimum=1.0)
    bare_s = ctx.seconds(1.5, 0.5, minimum=0.5)
    warmup = min(1.0, seconds / 4)
    rates: list[float] = []
    with closing_instrument(bench_instrument("e2e")) as inst:
        params = parameters(inst)
        bare = [bare_get_rate(params, bare_s)[0]]
        rows = missed = lost = 0
        for i in range(rounds):
            db = ctx.path(f"e2e{i}.db")
            run = partial(record, db, "e2e", inst, interval_s=FLAT_OUT_S, duration_s=seconds)
            summary = anyio.run(run)
            bare.append(bare_get_rate(params, bare_s)[0])
            rate, n = committed_rate(db, "e2e/signals", warmup)
            rates.append(rate)
            rows += n
            missed += summary.missed_ticks
            lost += summary.lost_samples
        seq = SequentialPoller(ctx.path("seq.db"), [(p.name, p) for p in params])
        seq_rate, seq_rows = seq.run(ctx.seconds(10.0, 3.0, minimum=1.0))
    ratios = neighbour_ratios(rates, bare)
    rate, bare_rate = statistics.median(rates), statistics.median(bare)
    details = {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "bare_get_seconds": bare_s,
        "warmup_s": warmup,
        "channels": CHANNELS,
        "trajmon_rates": [round(r) for r in rates],
        "bare_get_rates": [round(b) for b in bare],
        "round_ratios": [round(r, 3) for r in ratios],
        "trajmon_rows": rows,
        "trajmon_missed_ticks": missed,
        "trajmon_lost": lost,
        "sequential_rows": seq_rows,
        "sequential_sqlite": "defaults: rollback journal, synchronous=FULL, commit per row",
    }
    return [
        Result(
            "e2e_rate_vs_bare_get",
            3,
            rate,
            "samples/s",
            Baseline("bare-get loop (median)", bare_rate, "rows/s"),
            statistics.median(ratios),
            "≥ 0.5 × bare-get",
            (Condition("ratio", ">=", 0.5),),
            mode=ctx.mode,
            details=details,
        ).to_json(),
        Result(
            "e2e_rate_vs_sequential",
            13,
            rate,
            "samples/s",
            Baseline("sequential-poller (seed)", seq_rate, "rows/s"),
            rate / seq_rate,
            "≥ 20 × sequential-poller",
            (Condition("ratio", ">=", 20.0),),
            mode=ctx.mode,
            details=details,
        ).to_json(),
    ]
