"""``scope='META'``: the shots inside the selected meta strips, each result placed inside its meta, above its shot.

The oracles: the sandbox's request log (one submit per shot inside the meta, none for the shot
outside), Blender's own ``parent_meta()`` of each placed strip, the frames of the strips on the
timeline, and the lengths of the WAV files the test wrote (which dialogue went with which shot).
"""

from __future__ import annotations

import bpy
import pytest
import sound_strips
from test_batch import (  # noqa: F401 — fixtures shared with the batch's own tests
    controller,
    dialogue_seconds,
    new_jobs,
    prefs,
    results_of,
    sandbox,
    scene_rate_files,
    shot_files,
)

SCENE_FPS = 25
SHOT_GAP = 100
INSIDE = (0, 1, 2)  # Shot 2 sits in a meta nested inside the selected one
OUTSIDE = 3


def make_meta(compat, scene, names: set[str]):
    """Select ``names`` and make a meta strip of them as the artist does (Strip ▸ Make Meta Strip)."""
    before = {strip.as_pointer() for strip in compat.strips(scene)}
    for strip in compat.strips(scene):
        strip.select = strip.name in names
    with compat.sequencer_context_override(scene):
        assert bpy.ops.sequencer.meta_make() == {"FINISHED"}
    [meta] = [strip for strip in compat.strips(scene) if strip.as_pointer() not in before]
    return meta


@pytest.fixture
def meta_edit(extension, scene_rate_files, prefs):  # noqa: F811
    """Shots 0–2 with their lines inside the meta "Dialogue" (Shot 2 in a nested meta); Shot 3 outside it."""
    compat = extension.operators.compat
    previous = bpy.context.window.scene
    scene = bpy.data.scenes.new("meta edit")
    compat.set_scene_fps(scene, SCENE_FPS)
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    for index, (movie, line) in enumerate(scene_rate_files[:OUTSIDE + 1]):
        start = 1 + index * SHOT_GAP
        compat.new_movie(scene, f"Shot {index}", str(movie), channel=2, frame_start=start)
        sound_strips.add_sound_strip(compat, scene, f"Line {index}", line, channel=1, frame_start=start + 1)
    inner = make_meta(compat, scene, {"Shot 2", "Line 2"})
    inner.name = "Pickup"
    outer = make_meta(compat, scene, {"Shot 0", "Line 0", "Shot 1", "Line 1", inner.name})
    outer.name = "Dialogue"
    for strip in compat.all_strips(scene):
        strip.select = strip == outer
    scene.frame_start, scene.frame_end = 1, (OUTSIDE + 1) * SHOT_GAP
    scene.talking_face.regenerate = True
    yield scene
    bpy.context.window.scene = previous  # kept, not removed: see conftest.KEEP_SCENES_NOTE


def test_the_shots_inside_the_selected_meta_are_dubbed_and_placed_inside_it_above_their_shot(
        extension, meta_edit, sandbox):  # noqa: F811
    compat = extension.operators.compat
    scene = meta_edit
    top_level_before = sorted(strip.name for strip in compat.strips(scene))
    before = set(controller(extension).views)
    assert bpy.ops.sequencer.talking_face_batch(scope="META", audio="OVERLAP", audio_channel=1) == {"FINISHED"}
    records = new_jobs(extension, before)
    assert sorted(record.owner["source_strip"] for record in records) == [f"Shot {i}" for i in INSIDE]
    assert sandbox.count("submit") == len(INSIDE), "one submit per shot inside the meta, none for the one outside"
    for record in records:
        assert record.phase.value == "done", record.error
        index = int(record.owner["source_strip"].split()[-1])
        source = compat.all_strips(scene)[f"Shot {index}"]
        placed = results_of(extension, scene, record.job_id)
        assert placed, "the result is on the timeline"
        for strip in placed:
            assert strip.parent_meta() == source.parent_meta(), f"{strip.name} lies in its shot's meta"
            assert strip.frame_final_start == source.frame_final_start, "aligned to its shot"
        [movie] = [strip for strip in placed if compat.is_movie(strip)]
        assert movie.channel > source.channel
        # The dialogue found inside the meta is the one sent: the WAV this test wrote for the shot.
        assert record.owner["audio_seconds"] == pytest.approx(dialogue_seconds(index), abs=0.01)
        assert f"Line {index}" in record.owner["source_strips"]
    assert compat.all_strips(scene)["Shot 2"].parent_meta().name == "Pickup"
    assert sorted(strip.name for strip in compat.strips(scene)) == top_level_before, "nothing lands at the top level"
    assert not compat.all_strips(scene)[f"Shot {OUTSIDE}"].mute, "the shot outside the meta is left alone"


def test_meta_scope_without_a_selected_meta_says_what_to_select(extension, meta_edit, sandbox):  # noqa: F811
    for strip in extension.operators.compat.all_strips(meta_edit):
        strip.select = strip.name.startswith("Shot")  # shots, but no meta
    with pytest.raises(RuntimeError, match="select meta strips that hold shots"):
        bpy.ops.sequencer.talking_face_batch(scope="META", audio="OVERLAP")
    assert sandbox.requests == []


def test_a_shot_of_another_rate_inside_a_meta_is_stretched_and_lands_inside_it(extension, shot_files, prefs,  # noqa: F811
                                                                                  sandbox):  # noqa: F811
    """A 30 fps shot in a 25 fps scene: its result is added by Blender's operator, then moved into the meta."""
    compat = extension.operators.compat
    movie, line = shot_files[1]  # 256×144 at 30 fps, 36 frames
    scene = bpy.data.scenes.new("meta edit, 30 fps shot")
    compat.set_scene_fps(scene, SCENE_FPS)
    previous, bpy.context.window.scene = bpy.context.window.scene, scene
    compat.ensure_editor(scene)
    compat.new_movie(scene, "Shot 1", str(movie), channel=2, frame_start=11)
    sound_strips.add_sound_strip(compat, scene, "Line 1", line, channel=1, frame_start=12)
    meta = make_meta(compat, scene, {"Shot 1", "Line 1"})
    for strip in compat.all_strips(scene):
        strip.select = strip == meta
    scene.talking_face.regenerate = True
    try:
        before = set(controller(extension).views)
        assert bpy.ops.sequencer.talking_face_batch(scope="META", audio="OVERLAP", audio_channel=1) == {"FINISHED"}
        [record] = new_jobs(extension, before)
        assert record.phase.value == "done", record.error
        source = compat.all_strips(scene)["Shot 1"]
        [result] = [strip for strip in results_of(extension, scene, record.job_id) if compat.is_movie(strip)]
        assert result.parent_meta() == meta and result.channel > source.channel
        assert result.frame_final_start == source.frame_final_start
        # The sandbox's result is the clip sent: 36 frames at 30 fps play 1.2 s, 30 frames of the scene.
        assert result.frame_final_duration == round(36 / 30 * SCENE_FPS)
        assert [strip.name for strip in compat.strips(scene)] == [meta.name], "nothing lands at the top level"
    finally:
        bpy.context.window.scene = previous
