"""Takes: each new result for a source strip is a take (v001, v002, …) stacked above it, the newest playing.

Through the installed extension against the sandbox. The oracles are outside the code under
test: the sandbox's request log (how many submits, and the size and enhance each one asked
for), the lengths of the WAV files this test wrote (which audio a take spoke), the fixture's
own frame numbers (where the source's first visible frame is) and the strips on the timeline.
"""

from __future__ import annotations

import json
import pathlib
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips

from newport_api.sandbox import Sandbox  # the source tree's: the artist's zip has no sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-takes-test-5b7d9f1e3a"
SOURCE = "Take 3"
SOURCE_START, TRIM_START, TRIM_END = 5, 4, 6  # so the first visible frame is 9
FIRST_VISIBLE = SOURCE_START + TRIM_START
SOURCE_OFFSET_X = 12.0  # a framing the takes take over
LINE_SECONDS, OTHER_SECONDS, LONG_SECONDS = 1.2, 0.8, 2.0
SHOT_SECONDS = (40 - TRIM_START - TRIM_END) / 25  # the source's visible range: 30 of its 40 frames at 25 fps


@pytest.fixture(scope="module")
def movie(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return sample_media.make_movie(extension.operators.compat, tmp_path_factory.mktemp("takes") / "take.mp4",
                                   frames=40)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("takes_audio")
    return {"line": sample_media.write_sine_wav(folder / "line.wav", seconds=LINE_SECONDS),
            "other": sample_media.write_sine_wav(folder / "other.wav", seconds=OTHER_SECONDS),
            "long": sample_media.write_sine_wav(folder / "long.wav", seconds=LONG_SECONDS)}


@pytest.fixture
def sandbox(extension: ModuleType):
    with Sandbox(processing_seconds=0.1, queued_seconds=0.02) as server:
        yield server


@pytest.fixture
def scene(extension: ModuleType, movie: pathlib.Path, speech: dict, sandbox: Sandbox, tmp_path: pathlib.Path):
    """A trimmed, shifted source strip; the line as an audio file; sized, enhanced output."""
    compat = extension.operators.compat
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    window = bpy.context.window
    previous = window.scene
    fresh = bpy.data.scenes.new("takes")
    compat.set_scene_fps(fresh, 25)
    window.scene = fresh
    compat.ensure_editor(fresh)
    source = compat.new_movie(fresh, SOURCE, str(movie), channel=2, frame_start=SOURCE_START)
    source.frame_offset_start, source.frame_offset_end = TRIM_START, TRIM_END
    source.transform.offset_x = SOURCE_OFFSET_X
    fresh.sequence_editor.active_strip = source
    settings = fresh.talking_face
    settings.audio_source, settings.audio_file = "FILE", str(speech["line"])
    settings.video_width, settings.video_height, settings.enhance = 320, 240, True
    yield fresh
    window.scene = previous  # kept: see conftest.KEEP_SCENES_NOTE
    preferences.api_key = ""


def controller(extension: ModuleType):
    return extension.operators.controller.get_controller()


def generate(extension: ModuleType, operator=None, **options) -> object:
    """Press Generate (or ``operator``); the one new job, done."""
    before = set(controller(extension).views)
    assert (operator or bpy.ops.sequencer.talking_face_generate)(**options) == {"FINISHED"}
    [record] = [record for job_id, record in controller(extension).views.items() if job_id not in before]
    assert record.phase.value == "done", record.error
    return record


def takes(extension: ModuleType, scene) -> dict[int, list]:
    """Take number → its strips (movie first), read from the strips' own properties."""
    compat = extension.operators.compat
    found: dict[int, list] = {}
    for strip in compat.all_strips(scene):
        if strip.get("talking_face_source") == SOURCE:
            found.setdefault(strip["talking_face_take"], []).append(strip)
    return {number: sorted(strips, key=lambda strip: not compat.is_movie(strip))
            for number, strips in sorted(found.items())}


def playing(extension: ModuleType, scene) -> list[int]:
    """The takes whose picture plays; each take's sound must follow its picture."""
    for strips in takes(extension, scene).values():
        assert all(strip.mute == strips[0].mute for strip in strips), "a take's sound plays with its picture"
    return [number for number, strips in takes(extension, scene).items() if not strips[0].mute]


def source_facts(extension: ModuleType, scene) -> dict:
    strip = extension.operators.compat.all_strips(scene)[SOURCE]
    return {"channel": strip.channel, "start": strip.frame_start, "final": (strip.frame_final_start,
            strip.frame_final_end), "offsets": (strip.frame_offset_start, strip.frame_offset_end),
            "file": strip.filepath, "offset_x": strip.transform.offset_x, "mute": strip.mute}


def submitted_video_params(sandbox: Sandbox) -> list[dict]:
    return [request.body["videoParams"] for request in sandbox.requests if request.phase == "submit"]


def test_two_new_takes_stack_above_the_source_and_the_newest_plays(extension, scene, sandbox):
    compat = extension.operators.compat
    first = generate(extension, new_take=True)
    source_after_first = source_facts(extension, scene)
    for strip in takes(extension, scene)[1]:  # the artist lifts the first take, leaving free channels below it
        strip.channel += 4
    second = generate(extension, new_take=True)

    assert sandbox.count("submit") == 2, "New Take pays for a new result though the job is identical"
    assert first.owner["fingerprint"] == second.owner["fingerprint"]
    placed = takes(extension, scene)
    assert sorted(placed) == [1, 2]
    assert [strips[0].name for strips in placed.values()] == [f"{SOURCE} TF v001", f"{SOURCE} TF v002"]
    assert (first.label, second.label) == (f"{SOURCE} TF v001", f"{SOURCE} TF v002"), "the Jobs list names the takes"
    source = compat.all_strips(scene)[SOURCE]
    for number, strips in placed.items():
        assert compat.is_movie(strips[0]) and strips[0].get("talking_face_job") == (first, second)[number - 1].job_id
        assert all(strip.frame_final_start == FIRST_VISIBLE for strip in strips), "aligned to the first visible frame"
        assert min(strip.channel for strip in strips) > source.channel
        assert strips[0].transform.offset_x == SOURCE_OFFSET_X, "framed as the source"
        assert any(compat.is_sound(strip) for strip in strips) == compat.has_audio_support()
        options = json.loads(strips[0]["talking_face_options"])
        assert (options["video_width"], options["video_height"], options["enhance"]) == (320, 240, True)
        assert options["audio"] == {"kind": "FILE", "path": scene.talking_face.audio_file}
    assert min(strip.channel for strip in placed[2]) > max(strip.channel for strip in placed[1]), \
        "the new take lands above the earlier one"
    assert playing(extension, scene) == [2], "the newest plays, the older is muted"
    assert source_facts(extension, scene) == source_after_first, "the second take leaves the source alone"
    assert source.mute, "the source stays muted under its takes (the Mute Sources preference)"
    assert submitted_video_params(sandbox) == [{"video_width": 320, "video_height": 240, "video_enhance": 1}] * 2
    # Placing a placed job again (a resume after a crash) neither adds a take nor renumbers one.
    assert extension.operators.takes.place_take(scene, first)[0] == f"{SOURCE} TF v001"
    assert sorted(takes(extension, scene)) == [1, 2] and playing(extension, scene) == [2]


def test_switching_takes_wraps_around_and_mutes_the_others(extension, scene, sandbox):
    for _ in range(3):
        generate(extension, new_take=True)
    source_before = source_facts(extension, scene)
    assert playing(extension, scene) == [3]
    assert scene.sequence_editor.active_strip.name == f"{SOURCE} TF v003"
    for direction, expected in (("NEXT", 1), ("NEXT", 2), ("PREVIOUS", 1), ("PREVIOUS", 3), ("NEXT", 1)):
        assert bpy.ops.sequencer.talking_face_take(direction=direction) == {"FINISHED"}
        assert playing(extension, scene) == [expected], direction
        assert scene.sequence_editor.active_strip.name == f"{SOURCE} TF v{expected:03d}"
    assert source_facts(extension, scene) == source_before, "switching takes never touches the source"
    assert sandbox.count("submit") == 3, "switching sends nothing"


def test_switching_from_the_source_itself_and_greyed_with_a_reason(extension, scene, sandbox):
    compat = extension.operators.compat
    with pytest.raises(RuntimeError, match="Select a Talking Face result strip"):
        bpy.ops.sequencer.talking_face_take(direction="NEXT")
    generate(extension, new_take=True)
    assert bpy.ops.sequencer.talking_face_take.poll() is False
    with pytest.raises(RuntimeError, match="only one take"):
        bpy.ops.sequencer.talking_face_take(direction="NEXT")
    generate(extension, new_take=True)
    scene.sequence_editor.active_strip = compat.all_strips(scene)[SOURCE]
    assert bpy.ops.sequencer.talking_face_take(direction="PREVIOUS") == {"FINISHED"}
    assert playing(extension, scene) == [1]
    assert scene.sequence_editor.active_strip.name == SOURCE, "the source stays the active strip"


def test_redo_submits_again_with_the_take_s_own_options(extension, scene, sandbox, speech):
    compat = extension.operators.compat
    sound_strips.add_sound_strip(compat, scene, "Line", speech["long"], channel=1, frame_start=FIRST_VISIBLE)
    settings = scene.talking_face
    settings.audio_source, settings.audio_strip = "STRIP", "Line"
    settings.video_width, settings.video_height, settings.enhance = 256, 144, True
    settings.longer_audio = "CUT_AUDIO"  # the 2 s line is cut at the shot's end
    first = generate(extension, new_take=True)
    assert first.owner["audio_seconds"] == pytest.approx(SHOT_SECONDS, abs=0.01)
    # The panel moves on: another size, no enhance, another audio and length choice. Redo keeps to the take's own.
    settings.video_width, settings.video_height, settings.enhance = 0, 0, False
    settings.audio_source, settings.audio_file = "FILE", str(speech["other"])
    settings.longer_audio = "AS_IS"
    assert scene.sequence_editor.active_strip.name == f"{SOURCE} TF v001"
    redone = generate(extension, bpy.ops.sequencer.talking_face_redo)

    assert sandbox.count("submit") == 2, "Redo pays again: it never reuses the identical job's result"
    assert submitted_video_params(sandbox) == [{"video_width": 256, "video_height": 144, "video_enhance": 1}] * 2
    assert redone.owner["audio_seconds"] == pytest.approx(SHOT_SECONDS, abs=0.01), \
        "the take's line cut at the shot's end, not the panel's file nor the whole line"
    assert "Line" in redone.owner["source_strips"] and redone.owner["source_strip"] == SOURCE
    placed = takes(extension, scene)
    assert sorted(placed) == [1, 2] and placed[2][0].get("talking_face_job") == redone.job_id
    assert placed[2][0]["talking_face_options"] == placed[1][0]["talking_face_options"]
    assert playing(extension, scene) == [2]
    assert first.job_id != redone.job_id


def test_redo_says_why_it_is_greyed(extension, scene, sandbox):
    with pytest.raises(RuntimeError, match="Select a Talking Face take"):
        bpy.ops.sequencer.talking_face_redo()
    generate(extension, new_take=True)
    for strip in takes(extension, scene)[1]:
        del strip["talking_face_options"]  # as a result placed before takes kept their options
    with pytest.raises(RuntimeError, match=f"made before takes kept their options — select '{SOURCE}'"):
        bpy.ops.sequencer.talking_face_redo()
    assert sandbox.count("submit") == 1
