"""Issue 11's acceptance check in background mode: dub an edit of twelve shots of mixed sizes and rates.

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


def test_twelve_shots_of_mixed_sizes_and_rates_are_each_placed_above_themselves_in_sync(extension, edit, sandbox):
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
    # To come with the takes branch: "New Take" on two of these shots gives each two takes
    # (v001, v002) on the channels above it; switching takes mutes the other takes.
