"""Length choices with a window: the panel offers them when the line outlasts the shot, and a job
with Hold Last Frame is cut by a background Blender to the line's length and lands in place."""

from __future__ import annotations

from conftest import TRIM

SHOT_FRAMES = 40  # the scenario hides frames at the take's end until it shows 40 (1.6 s at 25 fps)


def test_hold_last_frame_extends_the_shot_to_the_line(gui, sandbox):
    run = gui.run("lengths.py", blend=gui.project).check()
    facts = run.facts
    saved = gui.inspect()
    # The line's length as a second Blender reads the saved file: the MP3's decoder delay makes it
    # a frame longer than the 2.4 s it was made with, less the 3 frames the strip hides.
    line = next(strip for strip in saved["strips"] if strip["name"] == "Line")
    line_frames = line["end"] - line["start"]
    assert line_frames > SHOT_FRAMES + 2
    shown = facts["estimate"]
    assert shown["differ"] and shown["length_choice"] == "HOLD"
    assert abs(shown["video_seconds"] - SHOT_FRAMES / 25) < 1e-6
    assert abs(shown["audio_seconds"] - line_frames / 25) < 1e-6
    assert any(path.endswith("lengths-panel.png") for path in facts["screenshots"])
    assert sandbox.count("submit") == 1

    job = facts["jobs"][facts["job_id"]]
    assert job["phase"] == "done"
    # Cut by Debian's Blender in the background: the 40 visible frames, then the last one held to the line's end.
    assert gui.ffprobe_frames(job["video"]) == line_frames
    assert abs(gui.ffprobe_seconds(job["audio"]) - line_frames / 25) < 0.001, "the line goes as it is"
    assert abs(job["estimated_credits"] - line_frames / 25) < 1e-6
    assert abs(shown["credits"] - line_frames / 25) < 1e-6
    source = next(strip for strip in saved["strips"] if strip["name"] == "Take")
    assert source["end"] - source["start"] == SHOT_FRAMES
    (movie,) = [strip for strip in saved["strips"] if strip["job"] == facts["job_id"] and strip["type"] == "MOVIE"]
    assert movie["start"] == source["start"] == 1 + TRIM
    assert movie["end"] - movie["start"] == line_frames
