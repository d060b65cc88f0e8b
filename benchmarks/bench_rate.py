"""Maximum end-to-end sample rate on a zero-latency in-process instrument (targets 3 and 13).

trajmon runs flat out: a 10 µs interval means every tick is late, so each poller reads again as
soon as its previous sample is enqueued (missed ticks are skipped and counted, never burst).
The rate is counted from committed rows after a warm-up, so it is what reached the disk. The
bare-get loop (driver limit) and the seed design's sequential poller run back to back with it
on the same instrument.
"""

from __future__ import annotations

from typing import Any

import anyio

from benchmarks.baselines import SequentialPoller, bare_get_rate
from benchmarks.common import (
    CHANNELS,
    Ctx,
    bench_instrument,
    closing_instrument,
    committed_rate,
    parameters,
    record,
)
from benchmarks.report import Baseline, Condition, Result

__all__ = ["e2e_rate"]

FLAT_OUT_S = 1e-5


def e2e_rate(ctx: Ctx) -> list[dict[str, Any]]:
    seconds = ctx.seconds(10.0, 3.0, minimum=1.0)
    warmup = min(1.0, seconds / 4)
    with closing_instrument(bench_instrument("e2e")) as inst:
        params = parameters(inst)
        bare_rate, bare_rows = bare_get_rate(params, seconds)
        db = ctx.path("e2e.db")
        summary = anyio.run(
            lambda: record(db, "e2e", inst, interval_s=FLAT_OUT_S, duration_s=seconds)
        )
        rate, rows = committed_rate(db, "e2e/signals", warmup)
        seq = SequentialPoller(ctx.path("seq.db"), [(p.name, p) for p in params])
        seq_rate, seq_rows = seq.run(seconds)
    details = {
        "seconds": seconds,
        "warmup_s": warmup,
        "channels": CHANNELS,
        "trajmon_rows": rows,
        "trajmon_missed_ticks": summary.missed_ticks,
        "trajmon_lost": summary.lost_samples,
        "bare_get_rows": bare_rows,
        "sequential_rows": seq_rows,
        "sequential_sqlite": "defaults: rollback journal, synchronous=FULL, commit per row",
    }
    return [
        Result(
            "e2e_rate_vs_bare_get",
            3,
            rate,
            "samples/s",
            Baseline("bare-get loop", bare_rate, "rows/s"),
            rate / bare_rate,
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
