"""Copy the latest results table and machine into docs/performance.md (between markers).

``python -m benchmarks.docs`` after ``make bench``: the docs then show exactly what latest.json
holds, instead of numbers retyped by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.report import markdown_table
from benchmarks.run import DEFAULT_OUT

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def render(doc: dict[str, object]) -> str:
    machine = doc["machine"]
    assert isinstance(machine, dict)
    spec = ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None)
    return "\n".join(
        [
            BEGIN,
            f"Generated {doc['generated_utc']} by `{doc.get('command', 'python -m benchmarks')}`"
            f" ({doc.get('mode')} mode, {doc.get('wall_s')} s).",
            "",
            f"Machine: {spec}.",
            "",
            markdown_table(doc["results"]),  # type: ignore[arg-type]
            END,
        ]
    )


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    doc = json.loads(results.read_text(encoding="utf-8"))
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
