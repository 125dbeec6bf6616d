"""Scenario a: install with a window, start again with the extension enabled, Generate on a trimmed
movie strip with a sound strip — checked from the outside."""

from __future__ import annotations

from conftest import GOALS, MOVIE_FRAMES, TRIM


def test_install_from_disk_with_a_window_enables_the_extension(installed):
    assert installed.facts["installed"], installed.console[-3000:]
    assert "Exception in module register" not in installed.console
    assert installed.facts["movie"]["end"] - installed.facts["movie"]["start"] == MOVIE_FRAMES - 2 * TRIM
    assert installed.facts["sound"]["start"] == 1 + TRIM, "the sound strip starts with the movie's visible part"


def test_generate_on_a_trimmed_strip_lands_once_above_the_source(gui, sandbox):
    run = gui.run("generate.py", blend=gui.project).check()
    facts = run.facts
    assert facts["enabled_at_startup"], "the extension was not enabled when Blender started"
    assert "Exception in module register" not in run.console
    assert facts["generate"]["result"] == ["FINISHED"]
    GOALS["Generate returns (ms), trimmed 640x360 strip"] = facts["generate"]["ms"]
    assert sandbox.count("submit") == 1

    job = facts["jobs"][facts["job_id"]]
    assert job["phase"] == "done"
    cut_command = job["owner"]["prepare"]["cut_command"] if "prepare" in job["owner"] else None
    assert cut_command is None, "the preparation plan is dropped once carried out"
    # The clip was cut by the real Blender program in the background, to exactly the visible frames.
    assert gui.ffprobe_frames(job["video"]) == MOVIE_FRAMES - 2 * TRIM
    assert gui.ffprobe_frames(job["output_path"]) == MOVIE_FRAMES - 2 * TRIM
    saved = gui.inspect()
    # What was sent as the audio is the sound strip's visible span on the timeline (as a second
    # Blender reads the saved file), cut from the MP3 by Blender's own mixdown: this build has no aud.
    line = next(strip for strip in saved["strips"] if strip["name"] == "Line")
    assert job["audio"].endswith(".wav")
    assert abs(gui.ffprobe_seconds(job["audio"]) - (line["end"] - line["start"]) / saved["fps"]) < 0.001
    source = next(strip for strip in saved["strips"] if strip["name"] == "Take")
    results = [strip for strip in saved["strips"] if strip["job"] == facts["job_id"]]
    movies = [strip for strip in results if strip["type"] == "MOVIE"]
    assert len(movies) == 1, results
    assert movies[0]["channel"] > source["channel"]
    assert movies[0]["start"] == source["start"] == 1 + TRIM
    assert movies[0]["end"] - movies[0]["start"] == MOVIE_FRAMES - 2 * TRIM
    assert source["mute"], "the source is muted once the result is placed"
