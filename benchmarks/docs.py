"""Copy the latest results table and machine into docs/performance.md (between markers).

``python -m benchmarks.docs`` after ``make bench``: the docs then show exactly what latest.json
holds, instead of numbers retyped by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import benchmark_of, markdown_table, results_problem
from benchmarks.run import DEFAULT_OUT

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _kept(doc: dict[str, Any]) -> list[str]:
    """Rows that ``--only`` merged in from earlier invocations: the header's command, time and
    machine are not theirs, so the page names them and, where the file says, when they ran."""
    ran = set(doc.get("benchmarks_run") or ())
    kept = []
    for row in doc["results"]:
        if benchmark_of(row) not in ran:
            when = row.get("details", {}).get("generated_utc")
            kept.append(f"{row['name']} ({when})" if when else str(row["name"]))
    return kept


def render(doc: dict[str, Any]) -> str:
    machine = doc["machine"]
    assert isinstance(machine, dict)
    spec = ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None)
    kept = _kept(doc)
    return "\n".join(
        [
            BEGIN,
            f"Generated {doc['generated_utc']} by `{doc.get('command', 'python -m benchmarks')}`"
            f" ({doc.get('mode')} mode, {doc.get('wall_s')} s).",
            *(
                ["", f"Kept from earlier invocations, not re-run by it: {', '.join(kept)}."]
                if kept
                else []
            ),
            "",
            f"Machine: {spec}.",
            "",
            markdown_table(doc["results"]),
            END,
        ]
    )


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    if not results.is_file():
        raise SystemExit(f"{results} does not exist: run `make bench` (python -m benchmarks) first")
    if (problem := results_problem(results)) or not results.read_text(encoding="utf-8").strip():
        raise SystemExit(f"{results} {problem or 'is empty'}")
    doc = json.loads(results.read_text(encoding="utf-8"))
    if not isinstance(doc.get("machine"), dict) or "generated_utc" not in doc:
        raise SystemExit(f"{results} is not a results file (no machine or generated_utc)")
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} has no {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + render(doc) + tail, encoding="utf-8")
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
