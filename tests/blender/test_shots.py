"""Shots read from a real timeline, and jobs started from them, through the installed extension.

Oracles outside the code under test: ffprobe's frame counts and rates of the files, the trims
and offsets this test sets (converted by hand), the colour index of every frame of what was
sent (the sandbox echoes the uploaded video as the result), and the sandbox's request log.
"""

from __future__ import annotations

import hashlib
import pathlib
import time
import urllib.request
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips

from newport_api.sandbox import Sandbox  # the source tree's: the artist's zip has no sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-shots-test-5c1e9a7b3d"
SCENE_FPS = 25
LINE_SECONDS = 1.6


@pytest.fixture(scope="module")
def files(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("shots_media")
    compat = extension.operators.compat
    return {"movie": sample_media.make_movie(compat, folder / "take.mp4", frames=50, fps=25),
            "fast": sample_media.make_movie(compat, folder / "fast.mp4", frames=60, fps=30, size=(256, 144)),
            "line": sample_media.write_sine_wav(folder / "line.wav", seconds=LINE_SECONDS)}


@pytest.fixture
def sandbox(extension: ModuleType):
    with Sandbox(processing_seconds=0.2, queued_seconds=0.05) as server:
        yield server


@pytest.fixture
def prefs(extension: ModuleType, sandbox, tmp_path: pathlib.Path):
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    yield preferences
    preferences.api_key = ""


@pytest.fixture
def edit(extension: ModuleType, files, prefs):
    """Four shots — trimmed, held, retimed, transformed — and a trimmed dialogue line on channel 1."""
    compat = extension.operators.compat
    previous = bpy.context.window.scene
    scene = bpy.data.scenes.new("shots edit")
    compat.set_scene_fps(scene, SCENE_FPS)
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    trimmed = compat.new_movie(scene, "Trimmed", str(files["movie"]), channel=2, frame_start=11)
    trimmed.frame_offset_start, trimmed.frame_offset_end = 7, 5
    held = compat.new_movie(scene, "Held", str(files["movie"]), channel=2, frame_start=101)
    held.animation_offset_start, held.animation_offset_end = 3, 2
    held.frame_offset_start = 4
    retimed = sample_media.add_stretched_movie(extension, scene, files["fast"], frame_start=201, channel=2)
    retimed.name = "Retimed"
    retimed.frame_offset_start, retimed.frame_offset_end = 5, 5
    framed = compat.new_movie(scene, "Framed", str(files["movie"]), channel=4, frame_start=301)
    framed.transform.offset_x, framed.transform.scale_x, framed.crop.min_x = 40, 0.5, 8
    line = sound_strips.add_sound_strip(compat, scene, "Line", files["line"], channel=1, frame_start=6)
    line.frame_offset_start = 5  # 0.2 s at 25 fps
    line.frame_offset_end += 5  # 0.2 s off its end too
    for strip in compat.all_strips(scene):
        strip.select = False
    scene.frame_start, scene.frame_end = 1, 400
    scene.talking_face.regenerate = True  # every test pays for its own jobs
    yield scene
    bpy.context.window.scene = previous  # the scene is kept, not removed: see conftest.KEEP_SCENES_NOTE


def read(extension: ModuleType, scene, name: str, audio=None):
    timeline = extension.operators.timeline
    strip = extension.operators.compat.all_strips(scene)[name]
    choice = audio or timeline.AudioChoice("STRIP", strip=extension.operators.compat.all_strips(scene)["Line"])
    return timeline.read_shot(bpy.context, strip, choice)


def test_shots_read_the_source_frames_each_strip_shows(extension, edit, files):
    movie, fast = sample_media.probe_video(files["movie"]), sample_media.probe_video(files["fast"])
    frames, fast_frames = int(movie["nb_read_frames"]), int(fast["nb_read_frames"])
    assert (frames, fast_frames, movie["r_frame_rate"], fast["r_frame_rate"]) == (50, 60, "25/1", "30/1")

    trimmed = read(extension, edit, "Trimmed")
    assert (trimmed.source.first, trimmed.source.end) == (7, frames - 5)  # the trims this test set
    assert (trimmed.source.fps, trimmed.source.width, trimmed.source.height) == (25.0, movie["width"],
                                                                                 movie["height"])
    assert trimmed.source.path == str(files["movie"]) and not trimmed.source.whole_file and trimmed.reason is None
    held = read(extension, edit, "Held")  # 3 frames held out, then 4 trimmed: from source frame 7; 2 held at the end
    assert (held.source.first, held.source.end) == (7, frames - 2)
    retimed = read(extension, edit, "Retimed")  # 5 scene frames = 0.2 s = 6 frames of the 30 fps source
    assert (retimed.source.first, retimed.source.end, retimed.source.fps) == (6, fast_frames - 6, 30.0)
    framed = read(extension, edit, "Framed")
    assert (framed.source.first, framed.source.end) == (0, frames) and framed.source.whole_file
    assert (framed.slot.start, framed.slot.channel, framed.slot.length) == (301, 4, frames)
    assert trimmed.slot.sources == ("Trimmed", "Line") and trimmed.slot.floor_channel == 2


def test_the_audio_range_is_what_the_sound_strip_plays(extension, edit, files):
    shot = read(extension, edit, "Trimmed")
    assert (shot.audio.kind, shot.audio.path, shot.audio.strip) == ("STRIP", str(files["line"]), "Line")
    assert shot.audio.offset == pytest.approx(0.2) and shot.audio.seconds == pytest.approx(LINE_SECONDS - 0.4)
    own = read(extension, edit, "Trimmed", extension.operators.timeline.AudioChoice(
        "MOVIE", strip=extension.operators.compat.all_strips(edit)["Trimmed"]))
    assert own.reason == "The movie in 'Trimmed' has no sound — pick a sound strip or an audio file."
    # 38 frames at 25 fps against 1.2 s of speech, sent as they are: 1.2 credits.
    cost = extension.operators.shots.estimate(shot)
    assert cost.video_seconds == pytest.approx(38 / 25) and cost.credits == pytest.approx(LINE_SECONDS - 0.4)


def test_a_job_keeps_the_shot_it_started_with_whatever_is_edited_meanwhile(extension, edit, sandbox, tmp_path):
    compat = extension.operators.compat
    strip = compat.all_strips(edit)["Trimmed"]
    edit.sequence_editor.active_strip = strip
    settings = edit.talking_face
    settings.audio_source, settings.audio_strip = "STRIP", "Line"
    jobs = extension.operators.controller.get_controller()
    before = set(jobs.views)
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    [job_id] = set(jobs.views) - before
    # The artist goes on editing before the job is done: moved, re-trimmed, raised.
    strip.frame_offset_start, strip.frame_offset_end = 0, 0
    strip.frame_start += 500
    strip.channel = 6
    assert tick_until(jobs, lambda: jobs.views[job_id].phase.value in ("done", "failed"))
    record = jobs.views[job_id]
    assert record.phase.value == "done", record.error
    # What was sent (echoed back as the result) is what the strip showed at Generate: frames 7..44.
    sent = pathlib.Path(record.output_path)
    assert int(sample_media.probe_video(sent)["nb_read_frames"]) == 38
    # Colours encode frame indices modulo 27.
    assert sample_media.read_frame_indices(compat, sent, tmp_path / "frames") == [i % 27 for i in range(7, 45)]
    [movie] = [placed for placed in compat.all_strips(edit)
               if placed.get("talking_face_job") == job_id and compat.is_movie(placed)]
    assert movie.frame_final_start == 11 + 7, "placed where the shot was when its job started"
    assert 2 < movie.channel < 6, "above where the shot was, not above where it went"
    assert sandbox.count("submit") == 1


def test_a_batch_of_one_sends_what_generate_sends(extension, edit, sandbox):
    compat = extension.operators.compat
    strip = compat.all_strips(edit)["Retimed"]
    edit.sequence_editor.active_strip = strip
    settings = edit.talking_face
    settings.audio_source, settings.audio_strip = "STRIP", "Line"
    compat.all_strips(edit)["Line"].frame_start = strip.frame_final_start - 5  # the line overlaps the shot
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    generated = submitted(sandbox)
    sandbox.reset()
    strip.select = True
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1) == {"FINISHED"}
    batched = submitted(sandbox)
    assert len(generated) == len(batched) == 1
    assert generated == batched, "the same parameters and the same bytes of picture and speech"


def submitted(sandbox: Sandbox) -> list[dict]:
    """Each submit's body, its URLs replaced by the SHA-256 of what they serve (fetched on loopback)."""
    bodies = []
    for request in sandbox.requests:
        if request.phase != "submit":
            continue
        body = dict(request.body)
        for name, value in request.body.items():
            if isinstance(value, str) and value.startswith("http://127.0.0.1"):
                with urllib.request.urlopen(value, timeout=10) as response:  # the loopback sandbox
                    body[name] = hashlib.sha256(response.read()).hexdigest()
        bodies.append(body)
    return bodies


def tick_until(jobs, predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.tick()
        if predicate():
            return True
        time.sleep(0.02)
    return False
