"""Per-scene settings of a Talking Face job: ``scene.talking_face``.

Strips are referred to by name (strip pointers cannot be stored in a
PropertyGroup); an empty ``video_strip`` means "the active movie strip".
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from ..operators.lengths import LONGER_AUDIO_ITEMS, SHORTER_AUDIO_ITEMS

AUDIO_SOURCES = (
    ("STRIP", "Sound Strip", "Speak the visible part of a sound strip"),
    ("FILE", "Audio File", "Speak an audio file from disk"),
    ("MOVIE", "Movie's Own Sound", "Speak the movie strip's own sound track"),
)
FPS_MODES = (
    ("25", "25 fps", "The service's standard rate: 1 credit per second"),
    ("ORIGINAL", "Source fps", "Keep the source's frame rate: costs source fps / 25 credits per second"),
)


class TalkingFaceSettings(bpy.types.PropertyGroup):
    video_strip: StringProperty(
        name="Movie Strip", description="The movie strip to lip-sync (empty: the active movie strip)")
    audio_source: EnumProperty(
        name="Audio", items=AUDIO_SOURCES, default="STRIP", description="Where the new speech comes from")
    audio_strip: StringProperty(name="Sound Strip", description="The sound strip whose visible part is spoken")
    audio_file: StringProperty(
        name="Audio File", subtype="FILE_PATH", description="An audio file to speak (used when no sound strip is set)")
    vocals_file: StringProperty(
        name="Vocals Only", subtype="FILE_PATH",
        description="Optional vocals-only stem that drives the mouth while the audio stays the soundtrack")
    video_width: IntProperty(
        name="Width", min=0, max=4096, default=0, description="Output width in pixels (0 keeps the source's)")
    video_height: IntProperty(
        name="Height", min=0, max=4096, default=0, description="Output height in pixels (0 keeps the source's)")
    enhance: BoolProperty(name="Face Enhance", default=False, description="Sharpen faces in the result")
    fps_mode: EnumProperty(name="Frame Rate", items=FPS_MODES, default="25",
                           description="Frame rate of the result")
    longer_audio: EnumProperty(
        name="Longer Audio", items=LONGER_AUDIO_ITEMS, default="AS_IS",
        description="What to send when the audio lasts longer than the shot's visible range")
    shorter_audio: EnumProperty(
        name="Shorter Audio", items=SHORTER_AUDIO_ITEMS, default="SHORTER",
        description="What to send when the audio ends before the shot's visible range")
    # Stored as "regenerate" since 0.1 (files and scripts set it); the panel's New Take button does it once.
    regenerate: BoolProperty(
        name="Always New Take", default=False,
        description="Generate and Dub Shots pay for a new take even when an identical job already succeeded "
                    "on this computer")


CLASSES = (TalkingFaceSettings,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.talking_face = PointerProperty(type=TalkingFaceSettings)


def unregister() -> None:
    del bpy.types.Scene.talking_face
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
