"""Pause and resume a batch with a window, then its summary: checked from the sandbox's request log
(no submit while paused, one per shot in all), ffprobe (the credits the summary names), the saved
.blend, Blender's console (the terminal) and its Info log."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SUMMARY = r"Talking Face: Batch of 3 shots ended: 3 done — (\d+\.\d) credits spent\."


def test_pause_holds_the_batch_resume_finishes_it_and_the_summary_is_told(gui, sandbox):
    shutil.copy(SCENARIOS / "batch.py", gui.folder / "batch.py")  # the shots batch_pause.py builds on
    run = gui.run("batch_pause.py", blend=gui.project, timeout=420).check()
    facts = run.facts
    job_ids = facts["job_ids"]
    assert len(job_ids) == 3

    submits = [request.time for request in sandbox.requests if request.phase == "submit"]
    assert len(submits) == 3, "one submit per shot"
    assert not [at for at in submits if facts["idle_from"] <= at < facts["resumed_at"]], "no new submit while paused"
    assert sum(at < facts["resumed_at"] for at in submits) == 1, "only the shot sent before the pause"
    assert sorted(facts["phases_before_resume"].values()) == ["done", "pending", "pending"]

    saved = gui.inspect()
    shots = {strip["name"]: strip for strip in saved["strips"] if strip["type"] == "MOVIE" and not strip["job"]}
    audio_seconds = 0.0
    for job_id in job_ids:
        job = facts["jobs"][job_id]
        assert job["phase"] == "done"
        source = shots[job["owner"]["source_strip"]]
        [placed] = [strip for strip in saved["strips"] if strip["job"] == job_id and strip["type"] == "MOVIE"]
        assert placed["start"] == source["start"] and placed["channel"] > source["channel"]
        audio_seconds += gui.ffprobe_seconds(job["owner"]["audio_path"])

    # 1 credit a second of the audio sent (the service's price at 25 fps), as ffprobe measures it.
    # The terminal: the line printed (not an echo of the report, which would say "Info: " first).
    for where, pattern, text in (("the terminal", re.compile("^" + SUMMARY, re.MULTILINE), run.console),
                                 ("the Info log", re.compile(SUMMARY), facts["info_log"])):
        found = pattern.findall(text)
        assert len(found) == 1, f"the summary is told once in {where}:\n{text[-3000:]}"
        assert float(found[0]) == pytest.approx(audio_seconds, abs=0.15)
    assert (Path(run.facts["screenshots"][0])).is_file()
