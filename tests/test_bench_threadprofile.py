"""The per-thread profile summary (benchmarks/threadprofile.py) reads py-spy's folded stacks
right, and the command fails clearly without py-spy or with bad options."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import threadprofile
from benchmarks.threadprofile import render, summarise

RAW = [
    "thread (11): MainThread;<module> (x.py:1);run (loop.py:5);select (sel.py:9) 30\n",
    "thread (11);<module> (x.py:1);run (loop.py:5);encode (w.py:3) 10\n",  # py-spy's unnamed form
    "thread (22): trajmon-stm;_loop (s.py:1);tick (t.py:2);get (q.py:7) 45\n",
    "thread (22): trajmon-stm;_loop (s.py:1);tick (t.py:2);parse (s.py:4) 5\n",
    "thread (22): trajmon-stm;_loop (s.py:1);_next (s.py:9) 10\n",
    "not a stack line\n",
]


def test_folded_stacks_are_summed_per_thread_busiest_first() -> None:
    main, inst = sorted(summarise(RAW), key=lambda p: p.name)
    assert (main.name, main.samples) == ("MainThread (11)", 40)
    assert (inst.name, inst.samples) == ("trajmon-stm (22)", 60)
    assert [p.samples for p in summarise(RAW)] == [60, 40]
    assert inst.self_lines.most_common(1) == [("get (q.py:7)", 45)]
    assert inst.inclusive["tick"] == 50 and inst.inclusive["_loop"] == 60
    assert main.self_lines["encode (w.py:3)"] == 10, "the unnamed line counts for its thread"


def test_the_text_leaves_out_functions_that_are_in_every_sample() -> None:
    text = render(summarise(RAW), "header")
    inst = text.split("== trajmon-stm (22): 60 samples")[1].split("==")[0]
    assert "45  75.0 %  get (q.py:7)" in inst
    assert "50  83.3 %  tick" in inst
    assert "_loop" not in inst.split("inclusive")[1]


def test_without_py_spy_it_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(threadprofile, "find_py_spy", lambda: None)
    with pytest.raises(SystemExit) as exc:
        threadprofile.main(["e2e", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "py-spy is missing: pip install -e '.[bench]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["e2e", "--rate", "0"], "--rate must be 1 to 1000 samples a second, not 0"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_options_are_one_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        threadprofile.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_an_existing_file_is_refused_as_the_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "e2e-threads.txt"
    existing.write_text("an earlier profile\n")
    with pytest.raises(SystemExit):
        threadprofile.main(["e2e", "--out", str(existing)])
    assert f"--out must be a directory, and {existing} is a file" in capsys.readouterr().err
    assert existing.read_text() == "an earlier profile\n"
