"""What a recording reports when it ends: to ``trajmon run``'s last lines, ``--json`` and the
library caller, from the counters the writer committed — so the summary never claims a sample
the database does not hold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .channels import PollGroup
from .records import GroupStats

__all__ = ["GroupSummary", "RunFailedError", "RunSummary", "group_summaries"]


@dataclass(slots=True)
class GroupSummary:
    name: str
    kind: str
    interval_s: float
    samples: int
    samples_read: int
    missed_ticks: int
    failed_reads: int
    mean_read_s: float


@dataclass(slots=True)
class RunSummary:
    """What ``trajmon run`` prints at the end and ``--json`` returns."""

    run_name: str
    run_id: int
    db: str
    status: str
    duration_s: float
    groups: list[GroupSummary] = field(default_factory=list)
    actions: int = 0
    errors: int = 0
    lost_samples: int = 0
    message: str | None = None

    @property
    def signal_samples(self) -> int:
        return sum(g.samples for g in self.groups if g.kind == "signal")

    @property
    def spec_samples(self) -> int:
        return sum(g.samples for g in self.groups if g.kind == "spec")

    @property
    def missed_ticks(self) -> int:
        return sum(g.missed_ticks for g in self.groups)


def group_summaries(
    groups: Sequence[PollGroup], stats: dict[int, GroupStats]
) -> list[GroupSummary]:
    """One summary per group, in the run's group order; ``stats`` keyed by group id."""
    summaries = []
    for gid, group in enumerate(groups):
        st = stats[gid]
        mean = st.read_s_sum / st.samples_read if st.samples_read else math.nan
        summaries.append(
            GroupSummary(
                group.name,
                group.kind,
                group.interval_s,
                st.samples_committed,
                st.samples_read,
                st.missed_ticks,
                st.failed_reads,
                mean,
            )
        )
    return summaries


class RunFailedError(RuntimeError):
    """The run ended as ``failed`` (storage fault); ``summary`` holds what was recorded."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(summary.message or "run failed")
        self.summary = summary
