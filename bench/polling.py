"""Row 5: polling cost, requests per job-minute while a task is processing.

A sandbox with a long processing time (an hour) and one real ``JobRunner`` with the
default ``RunnerSettings``, in a thread of the orchestrator, started before the other
measurements and stopped after them (at least ``MIN_SECONDS`` later), so it costs the
run no time of its own.  The sandbox records every poll; the row reports polls per
job-minute, the first minute, the intervals, and whether the backoff reached its
ceiling (``max_poll_interval``) — no busy polling.

The service documents no polling interval (there is no webhook; "typical processing
time is minutes"), so the reference is the naive client: a fixed poll every
``poll_interval`` seconds, the runner's own starting interval.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import API_KEY, Row, median, ratio_text

MIN_SECONDS = 90.0  # the backoff reaches its ceiling after ~26 s; two more intervals show it stays there
CEILING_TOLERANCE = 0.5


class PollingProbe:
    def __init__(self) -> None:
        from newport_api import JobRecord, JobRunner, NewportClient, RunnerSettings
        from newport_api.sandbox import Sandbox

        self.settings = RunnerSettings()
        self.work = tempfile.TemporaryDirectory(prefix="talking_face_bench_poll_")
        inputs = [Path(self.work.name) / name for name in ("take.mp4", "line.wav")]
        for path in inputs:
            path.write_bytes(b"\0" * 4096)
        self.sandbox = Sandbox(processing_seconds=3600.0).start()
        self.client = NewportClient(API_KEY, self.sandbox.base_url)
        record = JobRecord(video=str(inputs[0]), audio=str(inputs[1]),
                           output_path=str(Path(self.work.name) / "result.mp4"))
        self.runner = JobRunner(self.client, record, settings=self.settings)
        self.thread = threading.Thread(target=self.runner.run, name="bench-polling", daemon=True)
        self.started = 0.0

    def start(self) -> PollingProbe:
        self.started = time.monotonic()
        self.thread.start()
        return self

    def finish(self) -> list[Row]:
        time.sleep(max(0.0, self.started + MIN_SECONDS - time.monotonic()))
        ended = time.monotonic()
        self.client.cancel.cancel()
        self.thread.join(timeout=10)
        requests = self.sandbox.requests
        self.sandbox.stop()
        self.client.close()
        self.work.cleanup()
        submitted = next(entry.time for entry in requests if entry.phase == "submit")
        polls = [entry.time for entry in requests if entry.phase == "poll"]
        return rows(polls, submitted, ended, self.settings)


def intervals_text(intervals: list[float]) -> str:
    """``2.0, 3.0, 4.5, then 15.0 ×20 s``: the ramp, then the repeated ceiling."""
    texts = [f"{interval:.1f}" for interval in intervals]
    repeats = len(texts) - len(list(itertools.dropwhile(lambda text: text != texts[-1], texts)))
    ramp, tail = texts[:repeats], texts[repeats:]
    ceiling = f"then {tail[0]} ×{len(tail)}" if len(tail) > 1 else tail[0]
    return ", ".join([*ramp, ceiling]) + " s"


def rows(polls: list[float], submitted: float, ended: float, settings: Any) -> list[Row]:
    intervals = [later - earlier for earlier, later in itertools.pairwise(polls)]
    minutes = (ended - submitted) / 60
    per_minute = len(polls) / minutes
    first_minute = sum(1 for stamp in polls if stamp - submitted < 60)
    steady = 60 / median(intervals[-2:])
    naive = 60 / settings.poll_interval
    at_ceiling = abs(intervals[-1] - settings.max_poll_interval) <= CEILING_TOLERANCE
    no_busy = min(intervals) >= settings.poll_interval - CEILING_TOLERANCE
    shown = intervals_text(intervals)
    return [
        Row("5. polling while processing, requests per job-minute",
            f"{per_minute:.1f}/min over {minutes:.1f} min ({first_minute} in the first minute, then "
            f"{steady:.1f}/min)",
            f"fixed {settings.poll_interval:g} s polling: {naive:.0f}/min (no interval documented)",
            ratio_text(per_minute / naive), f"backoff to a ceiling ({settings.max_poll_interval:g} s)",
            at_ceiling and no_busy),
        Row("5. poll intervals (default RunnerSettings)", shown,
            f"×1.5 from {settings.poll_interval:g} s up to {settings.max_poll_interval:g} s",
            "—", f"none below {settings.poll_interval:g} s, reaches {settings.max_poll_interval:g} s",
            at_ceiling and no_busy),
    ]
