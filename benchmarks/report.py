"""Result records, target checks, the machine description and the printed table.

A result is a plain dict once serialised (``latest.json``), so the docs, the smoke test and any
later tooling read it without importing the benchmarks. Targets are data (which quantity, which
comparison, which bound), not code, so a target can never be loosened silently in one place.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from trajmon.files import replace_text_file

__all__ = [
    "Baseline",
    "Condition",
    "Result",
    "benchmark_of",
    "machine_info",
    "not_measured",
    "print_table",
    "results_problem",
    "write_results",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One bound of a target: ``on`` names the quantity (the figure or the ratio)."""

    on: Literal["figure", "ratio"]
    op: Literal[">=", "<=", "=="]
    value: float

    def holds(self, figure: float | None, ratio: float | None) -> bool | None:
        measured = figure if self.on == "figure" else ratio
        if measured is None:
            return None
        return _OPS[self.op](measured, self.value)


@dataclass(frozen=True, slots=True)
class Baseline:
    name: str
    figure: float | None
    unit: str


@dataclass(slots=True)
class Result:
    """One figure of one benchmark, as written to ``latest.json``."""

    name: str
    target_id: int
    figure: float | None
    unit: str
    baseline: Baseline | None
    ratio: float | None
    target_text: str
    conditions: tuple[Condition, ...]
    mode: str = "full"
    status: str = "measured"
    details: dict[str, Any] = field(default_factory=dict)
    #: What the same measurement gives on this machine with no trajmon code at all, where the
    #: target is a bound the machine itself may not meet: absolute ones (8, 9;
    #: :mod:`benchmarks.floors`) and 6's ideal 4×, which a bare concurrent loop does not reach.
    floor: Baseline | None = None

    @property
    def passed(self) -> bool | None:
        """None when not measured: a missing figure is neither a pass nor a failure."""
        if self.status != "measured":
            return None
        checks = [c.holds(self.figure, self.ratio) for c in self.conditions]
        if any(c is None for c in checks):
            return None
        return all(checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target_id": self.target_id,
            "figure": self.figure,
            "unit": self.unit,
            "baseline": None if self.baseline is None else asdict(self.baseline),
            "ratio": self.ratio,
            "target": {
                "text": self.target_text,
                "conditions": [asdict(c) for c in self.conditions],
            },
            "pass": self.passed,
            "mode": self.mode,
            "status": self.status,
            "details": self.details,
            **({} if self.floor is None else {"floor": asdict(self.floor)}),
        }


def not_measured(
    name: str, target_id: int, unit: str, target_text: str, reason: str, mode: str
) -> dict[str, Any]:
    """A placeholder row that says why a figure is missing, instead of a made-up number."""
    return Result(
        name, target_id, None, unit, None, None, target_text, (), mode=mode, status=reason
    ).to_json()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: they are only comparable on the same machine."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), None)
        info["cpu_model"] = model
    except OSError:
        info["cpu_model"] = platform.processor() or None
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["usable_cpus"] = len(psutil.Process().cpu_affinity() or [])
    except (ImportError, AttributeError):
        pass
    try:
        import qcodes

        info["qcodes"] = qcodes.__version__
    except ImportError:
        pass
    return info


def _earlier(path: Path) -> list[dict[str, Any]]:
    """The results already in ``path`` (none if it is missing or unreadable)."""
    if not path.exists():
        return []
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("results", [])
        return [r for r in earlier if isinstance(r, dict) and "name" in r]
    except (OSError, ValueError, AttributeError):
        return []


def results_problem(path: Path) -> str | None:
    """Why the existing file ``path`` is not one this harness may merge into and rewrite (a
    mistyped ``--out`` naming some other file), or None; an empty file is fine."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if text.strip() else {"results": []}
    except (OSError, ValueError) as exc:
        return f"is not a results file ({type(exc).__name__})"
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        return 'is not a results file (no "results" list)'
    return None


def benchmark_of(row: dict[str, Any]) -> str | None:
    """The benchmark (``--only`` name) that produced ``row``: ``details.benchmark``, or for a
    crash placeholder of an older file, the part of its name before ``#``."""
    details = row.get("details")
    if isinstance(details, dict) and isinstance(details.get("benchmark"), str):
        return str(details["benchmark"])
    name = str(row.get("name", ""))
    return name.split("#", 1)[0] if "#" in name else None


def other_modes(path: Path, mode: str) -> set[str]:
    """Modes of the results in ``path`` other than ``mode``: rows a ``mode`` run must not be
    merged with (quick figures are not comparable with the targets' sizes and durations)."""
    return {str(r.get("mode")) for r in _earlier(path)} - {mode}


def write_results(path: Path, results: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write ``latest.json``; results of earlier runs not re-run now (``--only``) are kept, if
    they were measured in the same mode: a file never holds quick and full figures together."""
    for mode in {str(r["mode"]) for r in results}:
        if others := other_modes(path, mode):
            raise ValueError(
                f"{path} holds {', '.join(sorted(others))} results: {mode} ones are not merged"
                " into it (choose another --out)"
            )
    # A benchmark run now replaces all its earlier rows, not only those of the same name: a
    # crash's placeholders ("writer#1") must not sit beside the figures of an earlier success,
    # nor outlive the next success.
    rerun = {str(b) for b in meta.get("benchmarks_run", ())}
    merged: dict[str, dict[str, Any]] = {
        old["name"]: old for old in _earlier(path) if benchmark_of(old) not in rerun
    }
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for res in results:
        # When each row was measured: a merged file holds rows of several invocations.
        merged[res["name"]] = {**res, "details": {**res.get("details", {}), "generated_utc": now}}
    ordered = sorted(merged.values(), key=lambda r: (r.get("target_id", 99), r["name"]))
    doc = {
        "generated_utc": now,
        **meta,
        "machine": machine_info(),
        "results": ordered,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # In one step: a harness killed mid-write must not leave a truncated latest.json behind.
    replace_text_file(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of the results table, shared by the console table and docs/performance.md."""
    rows = []
    for r in results:
        base = r.get("baseline")
        base_text = "—" if not base else f"{base['name']}: {_fmt(base['figure'])} {base['unit']}"
        if floor := r.get("floor"):
            floor_text = f"{floor['name']}: {_fmt(floor['figure'])} {floor['unit']}"
            base_text += f"; machine floor, {floor_text}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[r["pass"]]
        if r["status"] != "measured":
            verdict = r["status"]
        rows.append(
            [
                str(r["target_id"]),
                r["name"],
                f"{_fmt(r['figure'])} {r['unit']}",
                base_text,
                _fmt(r["ratio"]),
                r["target"]["text"],
                verdict,
                r["mode"],
            ]
        )
    return rows


HEADERS = ["#", "benchmark", "figure", "baseline", "ratio", "target", "result", "mode"]


def print_table(results: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="trajmon benchmarks")
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    styles = {"PASS": "green", "FAIL": "bold red"}
    for row in table_rows(results):
        table.add_row(*row[:-2], f"[{styles.get(row[-2], 'yellow')}]{row[-2]}[/]", row[-1])
    Console(width=180).print(table)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in table_rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)
