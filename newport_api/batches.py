"""What a batch of jobs came to: done, failed with their reasons, credits spent (no Blender here).

A batch is the set of records sharing ``owner["batch"]``; the host groups them. It has
ended when every record is finished (done, failed or cancelled). Credits spent are those
of the jobs that were done by a task of their own: a result reused from an identical
earlier job cost nothing, and the service bills no failed task. A job's credits are its
estimate, which is the service's price for what was sent (as the command line's
``credits_used`` counts them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .jobs import JobRecord, Phase


@dataclass(frozen=True)
class ShotFailure:
    shot: str
    reason: str


@dataclass(frozen=True)
class BatchSummary:
    total: int
    done: int
    cancelled: int
    unfinished: int
    failures: tuple[ShotFailure, ...]
    credits_spent: float

    @property
    def ended(self) -> bool:
        return self.total > 0 and self.unfinished == 0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def headline(self) -> str:
        """One sentence: 'Batch of 6 shots ended: 5 done, 1 failed — 5.2 credits spent.'"""
        counts = [f"{self.done} done"]
        if self.failed:
            counts.append(f"{self.failed} failed")
        if self.cancelled:
            counts.append(f"{self.cancelled} cancelled")
        if self.unfinished:
            counts.append(f"{self.unfinished} not finished")
        state = "ended" if self.ended else "so far"
        shots = "shot" if self.total == 1 else "shots"
        return f"Batch of {self.total} {shots} {state}: {', '.join(counts)} — {self.credits_spent:.1f} credits spent."

    def lines(self) -> list[str]:
        """The headline, then one line per failed shot with its reason and what to do."""
        return [self.headline(), *(f"{failure.shot}: {failure.reason}" for failure in self.failures)]

    def text(self) -> str:
        """Everything on one line, for a status-bar report."""
        return " | ".join(self.lines())


def shot_name(record: JobRecord) -> str:
    """The shot a job was made for: its source strip's name, else its label."""
    return str(record.owner.get("source_strip") or record.label or record.job_id[:8])


def summarize(records: Iterable[JobRecord]) -> BatchSummary:
    ordered = sorted(records, key=lambda record: (*record.owner.get("timeline", (0, 0)), record.created_at))
    done = [record for record in ordered if record.phase == Phase.DONE]
    failures = tuple(ShotFailure(shot_name(record), record.error or record.message or "no reason recorded")
                     for record in ordered if record.phase == Phase.FAILED)
    paid = sum(record.estimated_credits for record in done if not record.owner.get("reused_from"))
    return BatchSummary(
        total=len(ordered), done=len(done),
        cancelled=sum(record.phase == Phase.CANCELLED for record in ordered),
        unfinished=sum(not record.phase.finished for record in ordered),
        failures=failures, credits_spent=round(paid, 2))

