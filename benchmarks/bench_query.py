"""Reading a long run: action window query (11) and Parquet export (12) on 10M signal samples.

Both use the fixture of :mod:`benchmarks.fixture` (built once per invocation, in its own
process). The window query goes through ``trajmon.windows.window_columns`` — what ``trajmon
actions show`` runs — and is compared with the same window selected by ``dt_s`` alone, which
SQLite can only answer with a full scan. The export goes through ``trajmon.export.export_run``
and is compared with a plain sqlite3 read of the same rows; its peak RSS is this process's.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from typing import Any

from benchmarks.baselines import bare_sqlite_read
from benchmarks.common import Ctx, peak_rss_mb
from benchmarks.fixture import RUN, SIGNALS, SPECS, ensure_fixture
from benchmarks.report import Baseline, Condition, Result, not_measured
from trajmon.queries import connect_readonly, resolve_run
from trajmon.schema import quote_ident
from trajmon.windows import window_columns

__all__ = ["export", "window_query"]


def _rows(ctx: Ctx) -> int:
    return ctx.size(10_000_000, 500_000, minimum=20_000)


def window_query(ctx: Ctx) -> list[dict[str, Any]]:
    rows = _rows(ctx)
    db = ensure_fixture(ctx.workdir, rows)
    conn = connect_readonly(db)
    try:
        ref = resolve_run(conn, RUN)
        actions = conn.execute(
            "SELECT window_start_s, window_end_s FROM actions WHERE run_id = ?", (ref.run_id,)
        ).fetchall()
        picks = random.Random(0).sample(actions, min(50, len(actions)))
        times, got = [], 0
        for start, end in picks:
            t = time.perf_counter()
            result = window_columns(conn, ref, "signal", start, end)
            times.append(time.perf_counter() - t)
            got += len(result[0]["dt_s"])
        cols = ", ".join(quote_ident(c.label) for c in SIGNALS.channels)
        scan_sql = (
            f"SELECT sample_idx, dt_s, {cols} FROM {quote_ident(RUN + '/signals')}"
            " WHERE dt_s BETWEEN ? AND ?"
        )
        scans = []
        for start, end in picks[:3]:
            t = time.perf_counter()
            conn.execute(scan_sql, (start, end)).fetchall()
            scans.append(time.perf_counter() - t)
    finally:
        conn.close()
    median, scan = statistics.median(times), statistics.median(scans)
    return [
        Result(
            "window_query",
            11,
            median * 1e3,
            "ms median",
            Baseline("full scan of the same window", scan * 1e3, "ms"),
            median / scan,
            "median ≤ 5 ms and ≤ 1 % of a full scan",
            (Condition("figure", "<=", 5.0), Condition("ratio", "<=", 0.01)),
            mode=ctx.mode,
            details={
                "signal_rows": rows,
                "windows": len(picks),
                "rows_per_window": got / max(1, len(picks)),
                "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3,
                "query": "trajmon.windows.window_columns(conn, run, 'signal', t-2.5, t+2.5)",
            },
        ).to_json()
    ]


def export(ctx: Ctx) -> list[dict[str, Any]]:
    rows = _rows(ctx)
    db = ensure_fixture(ctx.workdir, rows)
    rate_text, rss_text = "≥ 0.3 × bare-sqlite read", "peak RSS ≤ 300 MB"
    try:
        from trajmon.export import export_run
    except ImportError:
        reason = "not measured: exporter missing"
        return [
            not_measured("export_parquet_rate", 12, "values/s", rate_text, reason, ctx.mode),
            not_measured("export_parquet_rss", 12, "MB", rss_text, reason, ctx.mode),
        ]
    rss_before = peak_rss_mb()
    out = ctx.workdir / "export"
    shutil.rmtree(out, ignore_errors=True)
    conn = connect_readonly(db)
    try:
        t = time.perf_counter()
        export_run(conn, resolve_run(conn, RUN), "parquet", out)
        export_s = time.perf_counter() - t
    finally:
        conn.close()
    peak = peak_rss_mb()
    bare_s = 0.0
    values = 0
    for group in (SIGNALS, SPECS):
        columns = ["sample_idx", "dt_s", "read_s", *(c.label for c in group.channels)]
        secs, n, width = bare_sqlite_read(db, f"{RUN}/{group.name}", columns)
        bare_s += secs
        values += n * width
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    details = {
        "signal_rows": rows,
        "values": values,
        "export_s": export_s,
        "bare_read_s": bare_s,
        "parquet_bytes": size,
        "sqlite_bytes": db.stat().st_size,
    }
    return [
        Result(
            "export_parquet_rate",
            12,
            values / export_s,
            "values/s",
            Baseline("bare-sqlite read of the same rows", values / bare_s, "values/s"),
            bare_s / export_s,
            rate_text,
            (Condition("ratio", ">=", 0.3),),
            mode=ctx.mode,
            details=details,
        ).to_json(),
        Result(
            "export_parquet_rss",
            12,
            peak,
            "MB peak RSS",
            Baseline("peak RSS before exporting (imports)", rss_before, "MB"),
            peak / rss_before,
            rss_text,
            (Condition("figure", "<=", 300.0),),
            mode=ctx.mode,
            details=details,
        ).to_json(),
    ]
