"""The placed result is framed as its source: transform, crop, mirror, blending, colour, modifiers.

And its files are kept where the project is: paths relative to the .blend, and an unsaved
file's results moved beside it when it is first saved.
"""

from __future__ import annotations

import os
import pathlib
from types import ModuleType

import bpy
import pytest
import sample_media
from sample_media import Footage

SOURCE = Footage("framed_source_640x360", (640, 360), "25", 10)
BIGGER_RESULT = Footage("result_1280x720", (1280, 720), "25", 10)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("framing")
    return {clip.name: sample_media.make_footage(clip, folder) for clip in (SOURCE, BIGGER_RESULT)}


def framed_source(compat: ModuleType, scene: bpy.types.Scene, path: pathlib.Path):
    """A source the editor moved, scaled, turned, cropped, mirrored, blended and graded."""
    strip = compat.new_movie(scene, "Framed", str(path), channel=2, frame_start=1)
    strip.transform.offset_x, strip.transform.offset_y = 120.0, -45.0
    strip.transform.scale_x, strip.transform.scale_y = 1.7, 1.4
    strip.transform.rotation = 0.2
    strip.transform.origin = (0.3, 0.6)
    strip.crop.min_x, strip.crop.max_x, strip.crop.min_y, strip.crop.max_y = 10, 20, 6, 8
    strip.use_flip_x = True
    strip.blend_type = "ADD"
    strip.blend_alpha = 0.6
    strip.colorspace_settings.name = "Linear Rec.709" if "Linear Rec.709" in {
        item.identifier for item in strip.colorspace_settings.bl_rna.properties["name"].enum_items} else "Non-Color"
    with compat.sequencer_scene(bpy.context.window.workspace, scene):  # 5.0.1 crashes in modifiers.new without one
        balance = strip.modifiers.new(name="Grade", type="COLOR_BALANCE")
    balance.color_balance.gain = (1.2, 0.9, 0.8)
    balance.color_multiply = 1.3
    return strip


def framing(strip) -> dict:
    transform, crop = strip.transform, strip.crop
    return {"offset": (transform.offset_x, transform.offset_y), "scale": (transform.scale_x, transform.scale_y),
            "rotation": transform.rotation, "origin": tuple(transform.origin),
            "crop": (crop.min_x, crop.max_x, crop.min_y, crop.max_y), "flip": (strip.use_flip_x, strip.use_flip_y),
            "blend": (strip.blend_type, strip.blend_alpha), "colorspace": strip.colorspace_settings.name,
            "modifiers": [(m.name, m.type, tuple(round(v, 4) for v in m.color_balance.gain), m.color_multiply)
                          for m in strip.modifiers]}


def test_a_result_of_the_same_size_is_framed_exactly_as_its_source(compat, placement, user_scene, footage):
    source = framed_source(compat, user_scene, footage[SOURCE.name])
    expected = framing(source)
    [name] = placement.place_result(user_scene, "Framed", str(footage[SOURCE.name]), job_id="framing-same",
                                    name="Framed TF", mute_sources=False)
    result = compat.all_strips(user_scene)[name]
    assert framing(result) == expected  # values copied from the same float32 fields: exact
    assert framing(source) == expected, "the source strip is never modified"


def test_a_bigger_result_covers_what_the_source_covers(compat, placement, user_scene, footage):
    framed_source(compat, user_scene, footage[SOURCE.name])
    [name] = placement.place_result(user_scene, "Framed", str(footage[BIGGER_RESULT.name]), job_id="framing-big",
                                    name="Framed TF", mute_sources=False)
    result = compat.all_strips(user_scene)[name]
    # 1280×720 for a 640×360 picture: half the scale, twice the crop in its own pixels.
    assert (result.transform.scale_x, result.transform.scale_y) == pytest.approx((0.85, 0.7))
    assert (result.crop.min_x, result.crop.max_x, result.crop.min_y, result.crop.max_y) == (20, 40, 12, 16)
    assert (result.transform.offset_x, result.transform.offset_y) == pytest.approx((120.0, -45.0))


def test_an_unsaved_files_results_move_beside_it_on_first_save(compat, placement, user_scene, footage, tmp_path):
    user_results = tmp_path / "extension_user_folder" / "results"
    user_results.mkdir(parents=True)
    kept = user_results / "Framed_talking_face_1234.mp4"
    kept.write_bytes(footage[SOURCE.name].read_bytes())
    compat.new_movie(user_scene, "Framed", str(footage[SOURCE.name]), channel=2, frame_start=1)
    [name] = placement.place_result(user_scene, "Framed", str(kept), job_id="framing-move", name="Moved TF",
                                    mute_sources=False)
    result = compat.all_strips(user_scene)[name]
    assert pathlib.Path(result.filepath) == kept, "unsaved: the path stays absolute"

    blend = tmp_path / "project" / "edit.blend"
    blend.parent.mkdir()
    moved = placement.move_results_next_to(str(blend), str(user_results))

    assert result.filepath == "//talking_face/Framed_talking_face_1234.mp4"
    resolved = blend.parent / result.filepath[2:]
    assert resolved.is_file() and not kept.exists()
    assert moved == {os.path.realpath(kept): str(resolved)}
    assert int(sample_media.probe_video(resolved)["nb_read_frames"]) == SOURCE.frames
