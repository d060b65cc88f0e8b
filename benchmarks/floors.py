"""What this machine allows before trajmon does anything: the floors behind targets 8 and 9.

Targets 8 (missed ticks at 1 kHz) and 9 (CPU at 100 Hz) are absolute bounds, and on a shared VM
a thread that does nothing but wait for its next tick already misses ticks and already spends
CPU on every wake-up. :func:`plain_ticks` measures that in the same invocation, with none of
trajmon's threads, queue or database: one thread waits for each tick exactly as an instrument
thread does (a timed ``SimpleQueue.get`` to the deadline, a spin for the last
:data:`~trajmon.clock.SPIN_S`) and counts skipped ticks with trajmon's own
:class:`~trajmon.scheduling.Schedule`. :class:`ThreadCpuSplit` says where a run's CPU goes, per
thread (Linux ``/proc/self/task``; elsewhere it reports nothing rather than a guess).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trajmon.clock import SPIN_S, SystemClock
from trajmon.scheduling import Schedule

__all__ = ["ThreadCpuSplit", "plain_ticks", "thread_role"]


def plain_ticks(
    interval: float, seconds: float, work: Callable[[], object] | None = None
) -> dict[str, float]:
    """Tick on ``t0 + k·interval`` for ``seconds`` on a fresh thread, calling ``work`` (if any)
    each tick: the ticks missed (%) and the thread's own CPU share (%)."""
    out: dict[str, float] = {}

    def run() -> None:
        jobs: queue.SimpleQueue[None] = queue.SimpleQueue()  # never fed: a wait, as in trajmon
        clock = time.monotonic
        block_until = SystemClock().block_until
        t0 = clock() + interval
        schedule, end = Schedule(t0, interval), t0 + seconds
        taken = missed = 0
        cpu0 = time.thread_time()
        while (due := schedule.due) < end:
            if (wait := due - clock()) > SPIN_S:
                try:  # noqa: SIM105 - the instrument thread's own wait, not a suppress() object
                    jobs.get(timeout=wait)
                except queue.Empty:
                    pass
            block_until(due)  # the tick's own last stretch (ThreadedGroup.tick)
            skipped, _ = schedule.begin(clock())
            missed += skipped
            taken += 1
            if work is not None:
                work()
        wall = clock() - t0
        out.update(
            ticks_due=float(taken + missed),
            missed_pct=100 * missed / max(1, taken + missed),
            cpu_pct=100 * (time.thread_time() - cpu0) / wall,
        )

    thread = threading.Thread(target=run, name="floor-ticks")
    thread.start()
    thread.join()
    return out


def thread_role(name: str) -> str:
    """Which part of trajmon a thread of a recording process is, from its Python name."""
    if name == "MainThread":
        return "event loop"
    if name.startswith("trajmon-"):
        return "instrument thread"
    if "_connection_worker_thread" in name:  # aiosqlite's worker
        return "SQLite thread"
    return "other"


_TASKS = Path("/proc/self/task")
_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 1e7


def _thread_cpu_ns(tid: int) -> float | None:
    """CPU time of one thread of this process: ``schedstat`` (ns) where the kernel keeps it,
    else ``stat``'s user + system clock ticks; None once the thread has ended."""
    try:
        return float((_TASKS / str(tid) / "schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        pass
    try:
        fields = (_TASKS / str(tid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_NS
    except (OSError, IndexError, ValueError):
        return None


def _snapshot() -> tuple[float, dict[int, tuple[str, float]]]:
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    cpu = {}
    for entry in os.listdir(_TASKS):
        tid = int(entry)
        ns = _thread_cpu_ns(tid)
        if ns is not None:
            cpu[tid] = (names.get(tid, "?"), ns)
    return time.monotonic(), cpu


class ThreadCpuSplit:
    """Per-thread CPU share (% of one core) between ``start_s`` and ``stop_s`` after entering,
    by :func:`thread_role`; taken on a helper thread that wakes twice, so it costs the figure
    it explains nothing measurable. ``shares`` stays empty where ``/proc/self/task`` is
    missing, or when the block ended before ``stop_s``."""

    def __init__(self, start_s: float, stop_s: float) -> None:
        self.start_s, self.stop_s = start_s, stop_s
        self.shares: dict[str, float] = {}
        self.window_s = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._measure, name="cpu-split", daemon=True)

    def _measure(self) -> None:
        t0 = time.monotonic()
        if self._done.wait(self.start_s):
            return
        w0, before = _snapshot()
        if self._done.wait(max(0.0, t0 + self.stop_s - time.monotonic())):
            return
        w1, after = _snapshot()
        me = threading.get_native_id()
        shares: dict[str, float] = {}
        for tid, (name, ns) in after.items():
            if tid in before and tid != me:
                role = thread_role(name)
                shares[role] = shares.get(role, 0.0) + (ns - before[tid][1])
        self.window_s = w1 - w0
        # Assigned last and whole: a reader that sees shares also sees the window.
        self.shares = {k: round(100 * v / 1e9 / self.window_s, 3) for k, v in shares.items()}

    def __enter__(self) -> ThreadCpuSplit:
        if _TASKS.is_dir():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def details(self) -> dict[str, Any]:
        return {"per_thread_cpu_pct": self.shares, "per_thread_window_s": round(self.window_s, 1)}
