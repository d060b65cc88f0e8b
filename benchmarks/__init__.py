"""trajmon's benchmark suite: every figure is a ratio against a baseline measured alongside it.

Machines are noisy and absolute times alone mean nothing, so each benchmark runs its baseline
(bare sqlite3, a bare ``parameter.get()`` loop, QCoDeS's DataSaver, the seed design's sequential
poller) in the same process or back to back in the same invocation, and reports the ratio.

Run ``python -m benchmarks`` (``make bench``) or ``python -m benchmarks --quick`` (``make
bench-quick``); see ``docs/performance.md``.
"""
