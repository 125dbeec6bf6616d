"""Sound strips in tests, on every build.

Where Blender has Audaspace, ``strips.new_sound`` makes them. The bpy 4.2 wheels have
none and ``new_sound`` raises there, yet a .blend saved by an artist's Blender brings its
sound strips along and the extension must prepare them. So on such builds the strip is
pasted from ``data/sound_strip.blend`` (written by ``make_sound_strip_blend.py``), as
arriving in a saved file, and pointed at the test's sound. Blender without Audaspace
cannot measure a sound: the strip keeps the donor's length (``DONOR_SECONDS`` at
``DONOR_FPS``), trimmed at its end to the file's length.
"""

from __future__ import annotations

import pathlib
import wave
from types import ModuleType
from typing import Any

import bpy

DONOR_BLEND = pathlib.Path(__file__).with_name("data") / "sound_strip.blend"
DONOR_SCENE = "Sound strip donor"
DONOR_SECONDS = 3.0
DONOR_FPS = 25


def add_sound_strip(compat: ModuleType, scene: bpy.types.Scene, name: str, path: pathlib.Path,
                    channel: int, frame_start: int) -> Any:
    """A sound strip of the WAV ``path`` in ``scene``, whatever the build."""
    if compat.has_audio_support():
        return compat.new_sound(scene, name, str(path), channel=channel, frame_start=frame_start)
    assert compat.scene_fps(scene) == DONOR_FPS, f"without Audaspace, sound strips come at {DONOR_FPS} fps only"
    with wave.open(str(path), "rb") as reader:
        seconds = reader.getnframes() / reader.getframerate()
    assert seconds <= DONOR_SECONDS, f"without Audaspace, sound strips last {DONOR_SECONDS} s at most"
    strip = _pasted_donor_strip(compat, scene)
    strip.name = name
    strip.sound.filepath = str(path)
    strip.channel = channel
    strip.frame_start = frame_start
    strip.frame_offset_end = round((DONOR_SECONDS - seconds) * DONOR_FPS)
    return strip


def _pasted_donor_strip(compat: ModuleType, scene: bpy.types.Scene) -> Any:
    with bpy.data.libraries.load(str(DONOR_BLEND), link=False) as (_, appended):
        appended.scenes = [DONOR_SCENE]
    donor = appended.scenes[0]
    try:
        for strip in compat.strips(donor):
            strip.select = True
        with compat.sequencer_context_override(donor):
            assert bpy.ops.sequencer.copy() == {"FINISHED"}
        before = {strip.as_pointer() for strip in compat.strips(scene)}
        for strip in compat.strips(scene):
            strip.select = False
        with compat.sequencer_context_override(scene):
            assert bpy.ops.sequencer.paste(keep_offset=True) == {"FINISHED"}
    finally:
        bpy.data.scenes.remove(donor)
    (pasted,) = [strip for strip in compat.strips(scene) if strip.as_pointer() not in before]
    return pasted
