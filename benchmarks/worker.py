"""Run one benchmark in this process and write its results as JSON.

The harness starts one of these per benchmark, so that peak RSS, CPU time and leftover threads
of one benchmark never leak into another's figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
from pathlib import Path

from benchmarks.common import Ctx
from benchmarks.registry import BENCHMARKS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("name", choices=[b.name for b in BENCHMARKS])
    parser.add_argument("--mode", choices=["full", "quick"], default="full")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args()
    logging.getLogger("qcodes").setLevel(logging.WARNING)
    bench = next(b for b in BENCHMARKS if b.name == args.name)
    module, func = bench.entry.split(":")
    run = getattr(importlib.import_module(module), func)
    ctx = Ctx(args.mode, args.scale, args.workdir)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = run(ctx)
    # Other processes on the machine skew figures even as ratios: record how busy it was.
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for res in results:
        res.setdefault("details", {})["benchmark"] = bench.name
        res["details"]["bench_wall_s"] = round(time.perf_counter() - start, 1)
        res["details"]["scale"] = args.scale
        res["details"]["loadavg_1min_before_after"] = load
    args.json_out.write_text(json.dumps(results, allow_nan=False), encoding="utf-8")


if __name__ == "__main__":
    main()
