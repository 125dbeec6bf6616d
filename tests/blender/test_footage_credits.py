"""Never paying twice for a trimmed strip: the job's identity comes from the inputs, not from a cut.

A cut MP4 carries an encoding date, so two cuts of the same frames differ by a few bytes;
the fingerprint and the cut cache are keyed by the source's content and the range taken
from it. The oracle is the sandbox's request log (what was uploaded and submitted).
"""

from __future__ import annotations

import importlib
import os
import pathlib
from types import ModuleType

import bpy
import pytest
import sample_media
from sample_media import Footage

from newport_api.content import file_sha256, selection_key
from newport_api.sandbox import Sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-footage-credits-3c9e1a"
CLIP = Footage("credits_640x360_25", (640, 360), "25", 30)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return sample_media.make_footage(CLIP, tmp_path_factory.mktemp("credits"))


@pytest.fixture
def sandbox(extension: ModuleType):
    with Sandbox(processing_seconds=0.1, queued_seconds=0.02) as server:
        yield server


@pytest.fixture
def trimmed_scene(extension: ModuleType, compat: ModuleType, sandbox: Sandbox, clip_path: pathlib.Path,
                  tmp_path: pathlib.Path):
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    window = bpy.context.window
    previous = window.scene
    scene = bpy.data.scenes.new("credits")
    compat.set_scene_fps(scene, 25)
    window.scene = scene
    compat.ensure_editor(scene)
    strip = compat.new_movie(scene, "Take", str(clip_path), channel=2, frame_start=5)
    strip.frame_offset_start, strip.frame_offset_end = 4, 6
    scene.sequence_editor.active_strip = strip
    # Picked by name: after a job the placed result becomes the active strip.
    scene.talking_face.video_strip = "Take"
    speech = sample_media.write_sine_wav(tmp_path / "line.wav", seconds=0.8)
    scene.talking_face.audio_source = "FILE"
    scene.talking_face.audio_file = str(speech)
    yield scene
    window.scene = previous  # kept: see conftest.KEEP_SCENES_NOTE
    preferences.api_key = ""


def jobs(extension: ModuleType) -> list:
    controller = importlib.import_module(f"{EXTENSION_MODULE}.operators.controller").get_controller()
    return sorted(controller.views.values(), key=lambda record: record.created_at)


def placed_movies(compat: ModuleType, scene, job_id: str) -> list:
    return [strip for strip in compat.all_strips(scene)
            if strip.get("talking_face_job") == job_id and compat.is_movie(strip)]


def test_generate_twice_on_a_trimmed_strip_uploads_and_pays_once(extension, compat, trimmed_scene, sandbox):
    trimmed_scene.talking_face.regenerate = False
    before = {record.job_id for record in jobs(extension)}
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}

    first, second = [record for record in jobs(extension) if record.job_id not in before]
    assert first.phase.value == second.phase.value == "done", (first.error, second.error)
    assert sandbox.count("storage") == 2, "one upload of the video and one of the audio"
    assert sandbox.count("submit") == 1, "the second Generate pays nothing"
    assert second.owner.get("reused_from") == first.job_id
    assert len(placed_movies(compat, trimmed_scene, first.job_id)) == 1
    assert len(placed_movies(compat, trimmed_scene, second.job_id)) == 1
    # What was sent is the visible range, by ffprobe: 30 frames less 4 and 6 hidden ones.
    assert int(sample_media.probe_video(pathlib.Path(first.video))["nb_read_frames"]) == 20


def test_generate_twice_with_the_active_strip_pays_once(extension, compat, trimmed_scene, sandbox):
    """After the first job its placed result is the active strip: Generate again means the source again."""
    trimmed_scene.talking_face.video_strip = ""
    trimmed_scene.talking_face.regenerate = False
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    submitted = sandbox.count("submit")
    assert compat.all_strips(trimmed_scene).get("Take") != trimmed_scene.sequence_editor.active_strip
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    assert sandbox.count("submit") == submitted
    assert jobs(extension)[-1].owner["source_strip"] == "Take"


def test_regenerating_pays_again_but_reuses_the_cut_and_its_upload(extension, compat, trimmed_scene, sandbox):
    trimmed_scene.talking_face.regenerate = True
    before = {record.job_id for record in jobs(extension)}
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    cut = pathlib.Path(jobs(extension)[-1].video)
    cut_written = cut.stat().st_mtime_ns
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}

    first, second = [record for record in jobs(extension) if record.job_id not in before]
    assert sandbox.count("submit") == 2, "regenerate asks for a new result"
    assert sandbox.count("storage") <= 2, "the same cut is not uploaded again"
    assert second.video == first.video and cut.stat().st_mtime_ns == cut_written, "the cut is made once"
    assert first.owner["fingerprint"] == second.owner["fingerprint"]


def test_a_different_range_is_a_different_job(extension, compat, trimmed_scene, sandbox):
    trimmed_scene.talking_face.regenerate = False
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}  # may reuse an earlier test's result
    submitted = sandbox.count("submit")
    compat.all_strips(trimmed_scene)["Take"].frame_offset_start = 5
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    assert sandbox.count("submit") == submitted + 1
    assert not jobs(extension)[-1].owner.get("reused_from")


def test_content_keys_follow_content_not_names(tmp_path: pathlib.Path):
    first = tmp_path / "a.bin"
    first.write_bytes(b"frame data" * 1000)
    renamed = tmp_path / "b.bin"
    renamed.write_bytes(first.read_bytes())
    assert file_sha256(str(first)) == file_sha256(str(renamed))
    assert selection_key([str(first)], {"frames": [1, 5]}) == selection_key([str(renamed)], {"frames": [1, 5]})
    assert selection_key([str(first)], {"frames": [1, 5]}) != selection_key([str(first)], {"frames": [1, 6]})
    stamp = first.stat().st_mtime_ns
    first.write_bytes(b"other data" * 1000)
    os.utime(first, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert file_sha256(str(first)) != file_sha256(str(renamed)), "a changed file is hashed again"


# --- Preflight: refused in one sentence before anything is uploaded ---------------------------------


def refusal(sandbox: Sandbox) -> str:
    with pytest.raises(RuntimeError) as raised:
        bpy.ops.sequencer.talking_face_generate()
    assert sandbox.requests == [], "nothing may be sent"
    message = str(raised.value).strip().splitlines()[-1]
    assert message.endswith(".") and ". " not in message, f"not one sentence: {message!r}"
    return message


def test_an_empty_audio_is_refused_before_upload(trimmed_scene, sandbox, tmp_path):
    silent = tmp_path / "silent.wav"
    sample_media.write_sine_wav(silent, seconds=0.0)
    trimmed_scene.talking_face.audio_file = str(silent)
    assert "empty" in refusal(sandbox)


def test_a_video_without_a_decodable_frame_is_refused_before_upload(compat, trimmed_scene, sandbox, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(range(256)) * 64)
    compat.new_movie(trimmed_scene, "Broken", str(broken), channel=3, frame_start=1)
    trimmed_scene.talking_face.video_strip = "Broken"
    assert "cannot decode any frame" in refusal(sandbox)


def test_an_input_larger_than_the_storage_takes_is_refused_before_upload(trimmed_scene, sandbox, tmp_path):
    huge = tmp_path / "vocals.wav"
    with huge.open("wb") as stream:  # sparse: 5 GiB + 1 byte that take no disk space
        stream.truncate(5 * 1024**3 + 1)
    trimmed_scene.talking_face.vocals_file = str(huge)
    assert "at most 5 GiB" in refusal(sandbox)


def test_cuts_older_than_a_week_are_deleted(extension):
    job_setup = importlib.import_module(f"{EXTENSION_MODULE}.operators.job_setup")
    folder = pathlib.Path(job_setup.cached_cut_path("0" * 64)).parent
    stale, recent = folder / ("a" * 64 + ".mp4"), folder / ("b" * 64 + ".mp4")
    for path, days in ((stale, job_setup.CUT_CACHE_DAYS + 1), (recent, job_setup.CUT_CACHE_DAYS - 1)):
        path.write_bytes(b"cut")
        old = path.stat().st_mtime - days * 86400
        os.utime(path, (old, old))
    job_setup.cached_cut_path("c" * 64)
    assert not stale.exists() and recent.exists()
    recent.unlink()
