"""Length choices with a window: the panel offers them when the line outlasts the shot, and a job
with Hold Last Frame is cut by a background Blender to the line's length and lands in place."""

from __future__ import annotations

from conftest import TRIM

SHOT_FRAMES = 40
LINE_FRAMES = 57  # the sound strip plays 60 frames of the 2.4 s MP3 less the 3 it hides: 2.28 s


def test_hold_last_frame_extends_the_shot_to_the_line(gui, sandbox):
    run = gui.run("lengths.py", blend=gui.project).check()
    facts = run.facts
    shown = facts["estimate"]
    assert shown["differ"] and shown["length_choice"] == "HOLD"
    assert abs(shown["video_seconds"] - SHOT_FRAMES / 25) < 1e-6
    assert abs(shown["audio_seconds"] - LINE_FRAMES / 25) < 1e-6
    assert any(path.endswith("lengths-panel.png") for path in facts["screenshots"])
    assert sandbox.count("submit") == 1

    job = facts["jobs"][facts["job_id"]]
    assert job["phase"] == "done"
    # Cut by Debian's Blender in the background: the 40 visible frames, then the last one held to 2.28 s.
    assert gui.ffprobe_frames(job["video"]) == LINE_FRAMES
    assert abs(gui.ffprobe_seconds(job["audio"]) - LINE_FRAMES / 25) < 0.001, "the line goes as it is"
    assert abs(job["estimated_credits"] - LINE_FRAMES / 25) < 1e-6 and abs(shown["credits"] - LINE_FRAMES / 25) < 1e-6
    saved = gui.inspect()
    source = next(strip for strip in saved["strips"] if strip["name"] == "Take")
    (movie,) = [strip for strip in saved["strips"] if strip["job"] == facts["job_id"] and strip["type"] == "MOVIE"]
    assert movie["start"] == source["start"] == 1 + TRIM
    assert movie["end"] - movie["start"] == LINE_FRAMES
