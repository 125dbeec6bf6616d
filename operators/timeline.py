"""The one place that reads the timeline into ``Shot``s: which strips, which audio, which options.

Generate (the panel's shot), the batch (a shot per picture strip), Redo (a take's stored
options) and the panel's estimate all read their shots here, with ``read_shot``; everything
after works from the plain ``Shot``. Main thread; cheap enough for ``draw()`` when asked
with ``measure=False``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import bpy

from . import compat, lengths, media, placement, shots
from .addon import preferences
from .controller import get_controller

# Which strips to use, not how to make the result: a take keeps its audio apart, and New Take is a one-off.
SETTINGS_NOT_KEPT = frozenset({"rna_type", "name", "video_strip", "audio_source", "audio_strip", "audio_file",
                               "regenerate"})


@dataclass(frozen=True)
class AudioChoice:
    """What the artist pointed at for the speech (strips, before they are read into a ``Shot``)."""

    kind: str  # "STRIP", "FILE" or "MOVIE"
    strip: bpy.types.Sequence | None = None
    path: str = ""


@dataclass(frozen=True)
class LengthChoice:
    """What the artist wants when the audio and the shot last differently (see ``lengths``)."""

    longer_audio: str = lengths.AS_IS
    shorter_audio: str = lengths.SHORTER


def settings(context: bpy.types.Context):
    return context.scene.talking_face


def length_choice(context: bpy.types.Context, options=None) -> LengthChoice:
    """The panel's length choice, or that of ``options`` read like the panel's settings (a take's)."""
    options = options if options is not None else settings(context)
    return LengthChoice(options.longer_audio, options.shorter_audio)


# -- the panel's strips ------------------------------------------------------------------------

def video_strip(context: bpy.types.Context):
    """The chosen movie strip, or the active strip when none is chosen."""
    scene = context.scene
    if scene.sequence_editor is None:
        return None
    name = settings(context).video_strip
    if name:
        return compat.all_strips(scene).get(name)
    active = scene.sequence_editor.active_strip
    source = _source_of_result(scene, active)
    if source is not None:  # a placed result is active: its source again, which an identical job reuses
        return source
    return active if media.is_video_strip(active) else None


def _source_of_result(scene: bpy.types.Scene, strip) -> bpy.types.Sequence | None:
    if strip is None:
        return None
    source = strip.get(placement.SOURCE_PROPERTY)  # a take names its source, even once its job is dismissed
    if not source:
        record = get_controller().views.get(strip.get(placement.JOB_PROPERTY, ""))
        source = record.owner.get("source_strip", "") if record else ""
    return compat.all_strips(scene).get(source) if source else None


def audio_choice(context: bpy.types.Context) -> AudioChoice:
    options = settings(context)
    if options.audio_source == "MOVIE":
        return AudioChoice("MOVIE", strip=video_strip(context))
    if options.audio_source == "STRIP" and options.audio_strip and context.scene.sequence_editor:
        return AudioChoice("STRIP", strip=compat.all_strips(context.scene).get(options.audio_strip))
    return AudioChoice("FILE", path=bpy.path.abspath(options.audio_file) if options.audio_file else "")


def panel_reason(context: bpy.types.Context) -> str | None:
    """Why the panel points at no shot at all (no scene, no strip), or None."""
    if context.scene is None or not hasattr(context.scene, "talking_face"):
        return "Open a scene with a Video Sequencer to use Talking Face."
    if video_strip(context) is None:
        name = settings(context).video_strip
        return (f"There is no strip called '{name}' — pick the movie strip again." if name
                else "Select a movie strip (or pick one in the panel) to lip-sync.")
    return None


def panel_shot(context: bpy.types.Context, *, new_take: bool = False, measure: bool = True) -> shots.Shot | None:
    """The shot Generate sends: the panel's strips and options; None when it points at no strip."""
    if panel_reason(context) is not None:
        return None
    return read_shot(context, video_strip(context), audio_choice(context), new_take=new_take, measure=measure)


# -- reading a shot --------------------------------------------------------------------------------

def read_shot(context: bpy.types.Context, strip, audio: AudioChoice, *, options=None,
              lengths_choice: LengthChoice | None = None, new_take: bool = False, measure: bool = True) -> shots.Shot:
    """Read ``strip`` and ``audio`` into a ``Shot``, with its reason when it cannot run (no network check).

    ``options``: read like the panel's settings (a take's stored ones, to redo it); by default
    the panel's. ``lengths_choice``: by default that of ``options``. ``measure=False`` in
    ``draw()``: an image sequence whose size Blender does not know yet is not loaded to measure it.
    """
    scene = context.scene
    options = options if options is not None else settings(context)
    lengths_choice = lengths_choice or length_choice(context, options)
    picture = media.is_video_strip(strip)
    source = media.source_of(strip, measure=measure) if picture else None
    sound = audio.strip if audio.kind == "STRIP" and audio.strip is not None else None
    parts = [strip] + ([sound] if sound is not None else [])
    meta = strip.parent_meta()
    beside = [part for part in parts if part.parent_meta() == meta]  # channels count inside the shot's meta only
    slot = shots.Slot(scene=scene.name, channel=strip.channel, start=strip.frame_final_start,
                      length=strip.frame_final_duration, floor_channel=max(part.channel for part in beside),
                      sources=tuple(part.name for part in parts), meta=meta.name if meta is not None else "")
    return shots.Shot(source=source, audio=_read_audio(scene, audio, options), slot=slot,
                      options=_read_options(context, options, audio, lengths_choice, new_take),
                      reason=shot_blocking_reason(strip, audio, options))


def _read_audio(scene: bpy.types.Scene, choice: AudioChoice, options) -> shots.Audio:
    if choice.kind == "STRIP":
        if choice.strip is None or not compat.is_sound(choice.strip):
            name = choice.strip.name if choice.strip is not None else options.audio_strip
            return shots.Audio(shots.AUDIO_STRIP, "", strip=name)
        return media.sound_strip_audio(choice.strip, scene)
    if choice.kind == "MOVIE":
        if not compat.is_movie(choice.strip):
            return shots.Audio(shots.AUDIO_MOVIE, "", strip=getattr(choice.strip, "name", ""))
        return media.movie_audio(choice.strip)
    return shots.Audio(shots.AUDIO_FILE, choice.path,
                       seconds=media.audio_file_seconds(choice.path) if choice.path else None)


def _read_options(context: bpy.types.Context, options, audio: AudioChoice, lengths_choice: LengthChoice,
                  new_take: bool) -> shots.Options:
    prefs = preferences()
    return shots.Options(
        width=options.video_width, height=options.video_height, enhance=options.enhance, fps_mode=options.fps_mode,
        vocals=bpy.path.abspath(options.vocals_file) if options.vocals_file else "",
        longer_audio=lengths_choice.longer_audio, shorter_audio=lengths_choice.shorter_audio,
        new_take=bool(options.regenerate) or new_take, mute_sources=bool(prefs.mute_sources) if prefs else True,
        kept=take_options(context, options, audio, lengths_choice))


def take_options(context: bpy.types.Context, options, choice: AudioChoice, length: LengthChoice) -> dict:
    """What a job is made with, as JSON-able data: every job setting of the panel, the length choice
    applied (a batch may have its own) and the audio.

    Kept on the take's strips, so Redo makes it again the same way. Settings are read by name
    from the panel's property group, so a setting added there is kept without a change here.
    """
    names = [prop.identifier for prop in settings(context).bl_rna.properties
             if prop.identifier not in SETTINGS_NOT_KEPT and not prop.is_readonly
             and prop.type not in {"POINTER", "COLLECTION"}]  # data-blocks and lists are no option values
    kept = {name: _plain(getattr(options, name)) for name in names}
    audio: dict[str, Any] = {"kind": choice.kind}
    if choice.kind == "STRIP" and choice.strip is not None:
        audio["strip"] = choice.strip.name
    elif choice.kind == "FILE":
        audio["path"] = choice.path
    return {**kept, **asdict(length), "audio": audio}


def _plain(value):
    """A setting's value as JSON holds it (vector settings are arrays)."""
    return value if isinstance(value, (bool, int, float, str)) else list(value)


# -- why a shot cannot run ----------------------------------------------------------------------------

def shot_blocking_reason(strip, choice: AudioChoice, options) -> str | None:
    """One sentence on why this strip cannot be lip-synced to ``choice``, or None (no network check)."""
    if not media.is_video_strip(strip):
        return f"'{strip.name}' is not a movie strip — pick a movie or image-sequence strip to lip-sync."
    if not os.path.isfile(media.video_file(strip)):
        return f"The movie file of '{strip.name}' is missing — relink it, then try again."
    return _audio_blocking_reason(choice, options)


def _audio_blocking_reason(choice: AudioChoice, options) -> str | None:
    if choice.kind == "STRIP":
        if choice.strip is None:
            return f"There is no strip called '{options.audio_strip}' — pick the sound strip again."
        if not compat.is_sound(choice.strip):
            return f"'{choice.strip.name}' is not a sound strip — pick a sound strip for the audio."
    elif choice.kind == "FILE":
        if not choice.path:
            return "Pick the audio to speak: a sound strip or an audio file."
        if not os.path.isfile(choice.path):
            return f"The audio file '{choice.path}' does not exist — pick it again."
    elif choice.strip is not None and not media.movie_has_audio(choice.strip):
        return f"The movie in '{choice.strip.name}' has no sound — pick a sound strip or an audio file."
    if options.vocals_file and not os.path.isfile(bpy.path.abspath(options.vocals_file)):
        return f"The vocals file '{options.vocals_file}' does not exist — pick it again or clear it."
    return None
