"""Scoring detected actions against a ground truth of what an operator really changed.

Used by ``trajmon demo`` and the integration tests: a detection matches a truth entry when the
label and the new value agree and it was seen no earlier than the change could have been visible
and no later than ``max_latency_s`` after it. Each truth entry matches at most one detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .detection import values_equal

if TYPE_CHECKING:
    from .recorder import Recorder

__all__ = ["Score", "TruthChange", "score_actions", "score_recording"]


@dataclass(frozen=True, slots=True)
class TruthChange:
    label: str
    t_s: float
    new_value: Any


@dataclass(slots=True)
class Score:
    """``precision`` is None when no detection counts (nothing to be right or wrong about) and
    ``recall`` None when no change was required (nothing to find): 0/0 is no score, and a NaN
    printed as one, or a 1.0, would pass for a measurement."""

    detected: int
    truth: int
    matched: int
    precision: float | None
    recall: float | None
    latencies_s: list[float] = field(default_factory=list)
    unmatched_truth: list[TruthChange] = field(default_factory=list)
    unmatched_detected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_latency_s(self) -> float | None:
        return max(self.latencies_s) if self.latencies_s else None


def score_actions(
    detected: Sequence[dict[str, Any]],
    truth: Sequence[TruthChange],
    *,
    max_latency_s: float,
    early_s: float = 0.0,
    ignore: Sequence[TruthChange] = (),
) -> Score:
    """Greedy one-to-one matching, the latest change first.

    A detection shows the value a read found, which is the latest change's: when a label
    changes to ``v``, away and back to ``v`` within one interval, the detection belongs to the
    last change (its latency counts from there) and the earlier two were missed. Matched in
    time order, the first change took it and the latency was overstated.

    ``ignore`` lists changes too close to the end of the recording to require detection; a
    detection that matches one of them is neither a hit nor a false positive.
    """
    free = sorted(range(len(detected)), key=lambda i: detected[i]["dt_s"])
    used: set[int] = set()
    latencies: list[float] = []
    missed: list[TruthChange] = []

    def find(change: TruthChange) -> int | None:
        for i in free:
            act = detected[i]
            if i in used or act["spec_label"] != change.label:
                continue
            lag = act["dt_s"] - change.t_s
            if -early_s <= lag <= max_latency_s and values_equal(
                act["new_value"], change.new_value
            ):
                return i
        return None

    for change in sorted(truth, key=lambda c: c.t_s, reverse=True):
        hit = find(change)
        if hit is None:
            missed.append(change)
        else:
            used.add(hit)
            latencies.append(detected[hit]["dt_s"] - change.t_s)
    latencies.reverse()  # in time order of the changes, as the missed ones
    missed.reverse()
    for change in ignore:
        hit = find(change)
        if hit is not None:
            used.add(hit)
    counted = len(detected) - (len(used) - len(latencies))  # hits on ignored changes don't count
    matched = len(latencies)
    return Score(
        detected=counted,
        truth=len(truth),
        matched=matched,
        precision=matched / counted if counted else None,
        recall=matched / len(truth) if truth else None,
        latencies_s=latencies,
        unmatched_truth=missed,
        unmatched_detected=[d for i, d in enumerate(detected) if i not in used],
    )


def score_recording(
    recorder: Recorder, truth: Sequence[Any], actions: Sequence[dict[str, Any]]
) -> tuple[Score, list[TruthChange]]:
    """Put an operator's truth log on the run's timeline and score the detected actions.

    ``truth`` entries need ``label``, ``new``, ``t_sent_mono`` and ``t_acked_mono`` (monotonic
    clock of this process). Only labels the run records count. Changes acknowledged after the
    last sample of their label's group began could not have been seen: they are not required,
    and a detection of one is not held against precision. A detection may lag by one spec
    interval, plus the most a spec tick started late (a tick can only see a change once it has
    run), plus the longest spec read, and precede the send by at most one read (the read was in
    flight).
    """
    t0 = recorder.t0_mono or 0.0
    spec_groups = [
        (g, s) for g, s in zip(recorder.groups, recorder.stats, strict=True) if g.kind == "spec"
    ]
    # Per label, the last sample of its own group: with a slower second spec group, the last
    # sample of any group would require changes the slow group's last read came too early for.
    last_dt = {c.label: s.last_dt_s or 0.0 for g, s in spec_groups for c in g.channels}
    read_max = max((s.read_s_max for _, s in spec_groups), default=0.0)
    late_max = max((s.lateness_max_s for _, s in spec_groups), default=0.0)
    interval = max((g.interval_s for g, _ in spec_groups), default=0.0)
    required: list[TruthChange] = []
    late: list[TruthChange] = []
    for entry in truth:
        if entry.label not in last_dt:
            continue
        change = TruthChange(entry.label, entry.t_sent_mono - t0, entry.new)
        (required if entry.t_acked_mono - t0 < last_dt[entry.label] else late).append(change)
    score = score_actions(
        actions,
        required,
        max_latency_s=interval + late_max + read_max,
        early_s=read_max,
        ignore=late,
    )
    return score, required
