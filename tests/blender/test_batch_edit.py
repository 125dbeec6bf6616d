"""Issue 11's acceptance check in background mode: dub an edit of twelve shots of mixed sizes and rates,
then New Take on two of them.

Select the twelve shots (``batch_edit.SHOTS``), each with its dialogue overlapping it on
channel 1, and run ``bpy.ops.sequencer.talking_face_batch`` against the sandbox. The
oracles: the sandbox's request log (one submit per shot, nothing else paid for), ffprobe
(each placed strip lasts what its file lasts at the scene's rate) and the timeline (each
result above its shot, from the shot's first visible frame, picture and sound together).
"""

from __future__ import annotations

import pathlib
from types import ModuleType

import batch_edit
import bpy
import pytest

from newport_api.sandbox import Sandbox  # the source tree's: the artist's zip has no sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-batch-edit-test-5e1c9b"
NEW_TAKES = (2, 7)  # shots given a second take: a portrait one and one at 59.94 fps


@pytest.fixture(scope="module")
def media(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    return batch_edit.make_media(tmp_path_factory.mktemp("batch_edit_media"))


@pytest.fixture
def sandbox(extension: ModuleType):
    with Sandbox(processing_seconds=0.0) as server:  # done at the first poll: no poll interval per shot
        yield server


@pytest.fixture
def edit(extension: ModuleType, media, sandbox, tmp_path: pathlib.Path):
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    previous = bpy.context.window.scene
    yield batch_edit.build_edit(extension.operators.compat, media)
    bpy.context.window.scene = previous  # the scene is kept, not removed: see conftest.KEEP_SCENES_NOTE
    preferences.api_key = ""


def test_twelve_shots_of_mixed_sizes_and_rates_are_each_placed_above_themselves_in_sync_with_new_takes(
        extension, edit, sandbox):
    compat = extension.operators.compat
    jobs = extension.operators.controller.get_controller()
    before = set(jobs.views)
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1) == {"FINISHED"}
    records = [record for job_id, record in jobs.views.items() if job_id not in before]

    assert sandbox.count("submit") == len(batch_edit.SHOTS), "exactly one submit per shot"
    assert sorted(record.owner["source_strip"] for record in records) == [
        batch_edit.shot_name(index) for index in range(len(batch_edit.SHOTS))]
    shots = batch_edit.shots_on_timeline(compat, edit)
    placed = batch_edit.placed_facts(compat, edit)
    problems = {}
    for record in records:
        assert record.phase.value == "done", record.error
        name = record.owner["source_strip"]
        index = int(name.split()[-1])
        # Its own dialogue went with it: the length of the WAV written for this shot.
        assert record.owner["audio_seconds"] == pytest.approx(batch_edit.dialogue_seconds(index), abs=0.02)
        problems[name] = batch_edit.in_sync_problems(placed[record.job_id], shots[name],
                                                     with_sound=compat.has_audio_support())
    assert {name: found for name, found in problems.items() if found} == {}
    # Trimmed shots start on their first visible frame, not where their file starts.
    trimmed = compat.all_strips(edit)[batch_edit.shot_name(1)]
    assert trimmed.frame_final_start > trimmed.frame_start

    # ---- TAKES STEP ----
    # New Take on two shots: each gets a second take above the first, playing; the first is muted.
    settings = edit.talking_face
    for index in NEW_TAKES:
        settings.video_strip = batch_edit.shot_name(index)
        settings.audio_source, settings.audio_strip = "STRIP", batch_edit.line_name(index)
        assert bpy.ops.sequencer.talking_face_generate(new_take=True) == {"FINISHED"}
    settings.video_strip = ""
    assert sandbox.count("submit") == len(batch_edit.SHOTS) + len(NEW_TAKES), "a new take is paid for, once"
    for index in range(len(batch_edit.SHOTS)):
        expected = {1: "muted", 2: "playing"} if index in NEW_TAKES else {1: "playing"}
        assert takes_seen(compat, edit, batch_edit.shot_name(index)) == expected
    for index in NEW_TAKES:
        name = batch_edit.shot_name(index)
        first, second = (movie_of_take(compat, edit, name, number) for number in (1, 2))
        assert second.channel > first.channel, "a new take lands above the earlier ones"
        edit.sequence_editor.active_strip = second
        assert bpy.ops.sequencer.talking_face_take(direction="NEXT") == {"FINISHED"}  # wraps to the first
        assert takes_seen(compat, edit, name) == {1: "playing", 2: "muted"}


def takes_seen(compat: ModuleType, scene, source: str) -> dict[int, str]:
    """Each take of ``source`` on the timeline: "playing", "muted", or "mixed" when its picture and sound
    disagree (read from the strips' own properties and mute flags)."""
    states: dict[int, set[bool]] = {}
    for strip in compat.all_strips(scene):
        if strip.get("talking_face_source") == source and strip.get("talking_face_take") is not None:
            states.setdefault(int(strip["talking_face_take"]), set()).add(strip.mute)
    return {number: "mixed" if len(mutes) > 1 else "muted" if mutes == {True} else "playing"
            for number, mutes in sorted(states.items())}


def movie_of_take(compat: ModuleType, scene, source: str, number: int):
    [movie] = [strip for strip in compat.all_strips(scene) if compat.is_movie(strip)
               and strip.get("talking_face_source") == source and strip.get("talking_face_take") == number]
    return movie
