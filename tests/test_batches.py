"""What a batch came to (``newport_api.batches``): records built by hand, each phase set as a runner leaves it."""

from __future__ import annotations

import pytest

from newport_api.batches import summarize
from newport_api.errors import NewportError, TaskFailedError
from newport_api.jobs import JobRecord, Phase


def shot(name: str, phase: Phase, *, credits: float = 0.0, start: int = 1, batch: str = "b1",
         error: NewportError | None = None, reused: bool = False) -> JobRecord:
    record = JobRecord(video="v.mp4", audio="a.wav", output_path="out.mp4", label=f"{name} (Talking Face)",
                       estimated_credits=credits)
    record.owner = {"batch": batch, "source_strip": name, "timeline": [start, 2]}
    if reused:
        record.owner["reused_from"] = "0" * 32
    if error is not None:
        record.fail(error)
    else:
        record.set_phase(phase)
    return record


def test_an_ended_batch_counts_done_failed_and_cancelled_and_the_credits_of_the_done_ones():
    records = [
        shot("Shot 3", Phase.DONE, credits=2.5, start=301),
        shot("Shot 1", Phase.FAILED, credits=4.0, start=101,
             error=TaskFailedError("Newport AI could not make this clip (No face) — adjust the inputs, then use Retry.")),
        shot("Shot 0", Phase.DONE, credits=1.25, start=1),
        shot("Shot 2", Phase.CANCELLED, credits=3.0, start=201),
    ]
    summary = summarize(records)
    assert (summary.total, summary.done, summary.failed, summary.cancelled) == (4, 2, 1, 1)
    assert summary.ended
    assert summary.credits_spent == pytest.approx(3.75), "2.5 + 1.25: failed and cancelled shots cost nothing"
    assert summary.lines() == [
        "Batch of 4 shots ended: 2 done, 1 failed, 1 cancelled — 3.8 credits spent.",
        "Shot 1: Newport AI could not make this clip (No face) — adjust the inputs, then use Retry.",
    ]
    assert summary.text() == " | ".join(summary.lines())


def test_failures_are_listed_in_timeline_order():
    records = [shot(f"Shot {n}", Phase.FAILED, start=start, error=NewportError(f"reason {n}"))
               for n, start in ((2, 500), (0, 10), (1, 90))]
    assert [(failure.shot, failure.reason) for failure in summarize(records).failures] == [
        ("Shot 0", "reason 0"), ("Shot 1", "reason 1"), ("Shot 2", "reason 2")]


def test_a_reused_result_is_done_but_spends_nothing():
    summary = summarize([shot("Shot 0", Phase.DONE, credits=6.0, reused=True), shot("Shot 1", Phase.DONE, credits=2.0)])
    assert summary.done == 2 and summary.credits_spent == pytest.approx(2.0)
    assert summary.headline() == "Batch of 2 shots ended: 2 done — 2.0 credits spent."


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.UPLOADING, Phase.PROCESSING, Phase.DOWNLOADED])
def test_a_batch_with_a_job_still_moving_has_not_ended(phase: Phase):
    summary = summarize([shot("Shot 0", Phase.DONE, credits=1.0), shot("Shot 1", phase)])
    assert not summary.ended and summary.unfinished == 1
    assert summary.headline() == "Batch of 2 shots so far: 1 done, 1 not finished — 1.0 credits spent."


def test_an_empty_batch_never_counts_as_ended():
    assert not summarize([]).ended


def test_a_single_shot_batch_says_shot():
    assert summarize([shot("Shot 0", Phase.DONE, credits=1.0)]).headline() == \
        "Batch of 1 shot ended: 1 done — 1.0 credits spent."

