"""Review of what an export leaves beside its data, and of the export as a library call.

``run.json`` is shared by the formats exported into one directory and rewritten by each export:
a CSV slice followed by a whole-run Parquet export left the CSV files with nothing saying they
hold a slice. ``export_run`` was not in the public API, took no ``str`` for ``out`` and failed a
notebook's slips with a ``KeyError`` or ``AttributeError`` from deep inside."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from recordings import record_every_tick
from test_docs_library import run_example
from test_export import LABELS, OddInstrument
from typer.testing import CliRunner

import trajmon
from trajmon import ChannelSpec, MonitorConfig
from trajmon.cli import app
from trajmon.export import ExportError, ExportResult, export_run
from trajmon.queries import connect_readonly, resolve_run

RUN = "background run"  # the name the library page's notebook export uses
PAGE = Path(__file__).parents[1] / "docs" / "library.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding ``lab.db`` with one run of 40 ticks (dt_s 0 .. 0.39 s)."""
    where = tmp_path_factory.mktemp("exportmeta")
    channels = [ChannelSpec(label=k, source=f"odd.{p}", kind="signal") for k, p in LABELS.items()]
    channels.append(ChannelSpec(label="Knob", source="odd.knob", kind="spec"))
    config = MonitorConfig(
        run_name=RUN, db=where / "lab.db", channels=channels, interval_s=0.01, duration_s=0.4
    )
    odd = OddInstrument("odd")
    try:
        summary = record_every_tick(config, {"odd": odd})
    finally:
        odd.close()
    assert summary.signal_samples == 40
    yield where


def cli_export(lab: Path, out: Path, *args: str) -> Any:
    got = runner.invoke(
        app, ["export", RUN, "--db", str(lab / "lab.db"), "--out", str(out), "--json", *args]
    )
    assert got.exit_code == 0, got.output
    return json.loads(got.stdout)


def csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1  # the header


def data_rows(listing: Any) -> dict[str, int]:
    """``--json``'s files as ``{name: rows}``, without run.json."""
    return {Path(f["path"]).name: f["rows"] for f in listing["files"] if f["rows"] is not None}


# -- run.json: every format's range ---------------------------------------------------------------


def test_a_csv_slice_keeps_its_range_after_a_whole_export_of_another_format(
    lab: Path, tmp_path: Path
) -> None:
    """The repro of the last review: ``export --format csv --since 0.1 --until 0.2 --out D``,
    then ``export --format parquet --out D``. run.json's ``export_range`` became the Parquet
    export's (the whole run) and nothing said the CSV files held a tenth of it."""
    sliced = cli_export(lab, tmp_path, "--since", "0.1", "--until", "0.2")
    whole = cli_export(lab, tmp_path, "--format", "parquet")
    directory = Path(whole["directory"])
    doc = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    # as before, for the export that wrote it (and now saying which that was)
    assert doc["export_range"] == {"since_s": None, "until_s": None}
    assert doc["export_format"] == "parquet"
    assert doc["exports"] == {
        "csv": {"since_s": 0.1, "until_s": 0.2, "rows": data_rows(sliced)},
        "parquet": {"since_s": None, "until_s": None, "rows": data_rows(whole)},
    }
    for name, rows in doc["exports"]["csv"]["rows"].items():  # what the files hold, read back
        assert csv_rows(directory / name) == rows, name
    signals = pq.read_table(directory / "signals.parquet")
    assert doc["exports"]["parquet"]["rows"]["signals.parquet"] == signals.num_rows == 40
    assert 0 < doc["exports"]["csv"]["rows"]["signals.csv"] < 40


def test_an_unknown_range_is_null_and_a_format_whose_files_went_is_dropped(
    lab: Path, tmp_path: Path
) -> None:
    """A run.json from before ``exports`` cannot say what the CSV files beside it hold: null,
    not a guess. An entry whose files were deleted is not carried on."""
    with closing(connect_readonly(lab / "lab.db")) as conn:
        ref = resolve_run(conn, RUN)
        first = export_run(conn, ref, "csv", tmp_path, since=0.2)
        doc_path = first.directory / "run.json"
        old = json.loads(doc_path.read_text(encoding="utf-8"))
        del old["exports"], old["export_format"]  # as an older trajmon wrote it
        doc_path.write_text(json.dumps(old), encoding="utf-8")
        export_run(conn, ref, "netcdf", tmp_path)
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        assert doc["exports"]["csv"] is None
        assert doc["exports"]["netcdf"]["since_s"] is None
        for path in first.directory.glob("*.csv"):
            path.unlink()
        doc_path.write_text("{not json", encoding="utf-8")  # unreadable: nothing carried over
        last = export_run(conn, ref, "parquet", tmp_path, until=0.3)
    doc = json.loads(doc_path.read_text(encoding="utf-8"))
    assert doc["exports"] == {
        "parquet": {"since_s": None, "until_s": 0.3, "rows": last.rows},
        "netcdf": None,
    }
    assert doc["export_range"] == {"since_s": None, "until_s": 0.3}


# -- export_run as a library call -----------------------------------------------------------------


def test_export_run_is_public_and_on_the_library_page() -> None:
    for name, obj in (("export_run", export_run), ("ExportResult", ExportResult)):
        assert name in trajmon.__all__ and getattr(trajmon, name) is obj
    for name in ("export_run", "ExportResult", "ExportError"):
        assert f"`{name}`" in PAGE.read_text(encoding="utf-8")
    assert trajmon.ExportError is ExportError and issubclass(ExportError, trajmon.QueryError)


def test_export_run_takes_a_str_out_and_says_what_is_wrong_in_one_line(
    lab: Path, tmp_path: Path
) -> None:
    """``out="exports"`` was an AttributeError ('str' object has no attribute 'resolve'),
    ``fmt="xlsx"`` a KeyError, a run name for ``ref`` an AttributeError, an ``out`` that is a
    file a NotADirectoryError from mkdir: none naming what to change."""
    with closing(connect_readonly(lab / "lab.db")) as conn:
        ref = resolve_run(conn, RUN)
        result = export_run(conn, ref, "csv", str(tmp_path / "exports"))
        assert isinstance(result, ExportResult)
        assert result.directory == (tmp_path / "exports" / RUN).resolve()
        assert csv_rows(result.directory / "signals.csv") == result.rows["signals.csv"] == 40
        with pytest.raises(ValueError, match=r"fmt must be one of 'csv', 'parquet', 'netcdf'"):
            export_run(conn, ref, "xlsx", tmp_path)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must be a RunRef"):
            export_run(conn, RUN, "csv", tmp_path)  # type: ignore[arg-type]
        a_file = tmp_path / "a file"
        a_file.write_text("", encoding="utf-8")
        with pytest.raises(ExportError, match="a file is not a directory"):
            export_run(conn, ref, "csv", a_file)
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / RUN).write_text("", encoding="utf-8")
        with pytest.raises(ExportError, match=f"{RUN} is not a directory"):
            export_run(conn, ref, "csv", tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file", "exports", "taken"]


def test_the_cli_says_in_one_line_that_the_runs_directory_is_a_file(
    lab: Path, tmp_path: Path
) -> None:
    (tmp_path / RUN).write_text("", encoding="utf-8")
    got = runner.invoke(app, ["export", RUN, "--db", str(lab / "lab.db"), "--out", str(tmp_path)])
    assert got.exit_code == 2, got.output
    assert got.stderr.strip().splitlines() == [
        f"trajmon: error: {(tmp_path / RUN).resolve()} is not a directory"
    ]


def _section(title: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


_AWAITING = """
import ast, asyncio, sys
code = compile(open(sys.argv[1]).read(), "cell", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {}

async def cell():
    done = eval(code, namespace)
    if done is not None:
        await done

asyncio.run(cell())
result = namespace["result"]
print(result.directory.name, [p.name for p in result.files])
"""


def test_the_library_pages_export_examples_run_and_print_what_it_says(
    lab: Path, tmp_path: Path
) -> None:
    """The page's example, after its first one as it says, in a fresh interpreter; then again
    (``overwrite=True``: a notebook cell runs twice); and its notebook cell, top-level ``await``
    and all, on the notebook's background run."""
    shutil.copy(lab / "lab.db", tmp_path / "lab.db")
    first = re.search(r"## Record for a while\n.*?```python\n(.*?)```", PAGE.read_text(), re.S)
    assert first is not None
    run_example(tmp_path, first[1])  # records "gate test" (its output is test_docs_library's)
    section = _section("Exporting a run")
    found = re.search(r"```python\n(.*?)```\n\nThis prints `([^`]*)`", section, re.S)
    assert found is not None, "the export example says what it prints"
    code, printed = found[1], found[2]
    assert run_example(tmp_path, code) == printed
    assert run_example(tmp_path, code) == printed
    cell = re.search(r"```py\n(.*?)```", section, re.S)
    assert cell is not None and "await" in cell[1]
    (tmp_path / "cell.py").write_text(cell[1], encoding="utf-8")
    printed = run_example(tmp_path, _AWAITING, str(tmp_path / "cell.py"))
    names = ["run.json", "channels.parquet", "actions.parquet", "errors.parquet"]
    assert printed == f"{RUN} {[*names, 'signals.parquet', 'specs.parquet']}"
