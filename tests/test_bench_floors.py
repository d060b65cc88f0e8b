"""The machine floors next to targets 8 and 9 measure what they say (benchmarks/floors.py).

Not timing assertions: the counts and attributions below hold on any machine, however loaded.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from benchmarks.floors import ThreadCpuSplit, plain_ticks, thread_role


def test_the_plain_loop_accounts_for_every_tick_it_was_due() -> None:
    calls = []
    out = plain_ticks(0.01, 0.3, work=lambda: calls.append(time.monotonic()))
    assert out["ticks_due"] == pytest.approx(30, abs=1)
    taken = len(calls)
    assert taken + round(out["missed_pct"] * out["ticks_due"] / 100) == out["ticks_due"]
    assert 0.0 <= out["missed_pct"] <= 100.0
    assert 0.0 < out["cpu_pct"] <= 100.0


def test_a_slow_tick_counts_the_ticks_it_overran_as_missed() -> None:
    out = plain_ticks(0.01, 0.2, work=lambda: time.sleep(0.025))
    # A tick that takes 25 ms or more spans at least 2.5 slots of 10 ms: 60 % of them missed
    # (a little less for the last tick of the window), more on a slow machine, never fewer.
    assert out["missed_pct"] >= 50.0


def test_threads_of_a_recording_are_named_by_their_role() -> None:
    assert thread_role("MainThread") == "event loop"
    assert thread_role("trajmon-stm") == "instrument thread"
    assert thread_role("Thread-3 (_connection_worker_thread)") == "SQLite thread"
    assert thread_role("rss-sampler") == "other"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_the_split_puts_the_cpu_on_the_thread_that_spent_it() -> None:
    stop = threading.Event()
    idle = threading.Thread(target=stop.wait, name="trajmon-idle")
    idle.start()
    try:
        with ThreadCpuSplit(0.05, 0.35) as split:
            give_up = time.monotonic() + 10.0
            # The main thread spins until the split has measured, however late its helper wakes.
            while not split.shares and time.monotonic() < give_up:
                pass
    finally:
        stop.set()
        idle.join()
    assert split.window_s > 0.0
    assert split.shares["event loop"] > 10 * split.shares["instrument thread"]
    assert split.shares["event loop"] > 20.0


def test_a_block_that_ends_before_the_window_reports_no_split() -> None:
    with ThreadCpuSplit(0.0, 30.0) as split:
        pass
    assert split.shares == {}
    assert split.details() == {"per_thread_cpu_pct": {}, "per_thread_window_s": 0.0}
