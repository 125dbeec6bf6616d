"""Import a downloaded result into the sequencer, in sync with the scene's frame rate.

The result (a movie and its sound, or the job's audio when it has none) lands on the
lowest channels free above the source strips over the whole span, from the source's
first visible frame. Each new strip carries the job's id, so a job is never imported
twice. The scene's frame rate, frame range and view transform are never changed, and
the source strips only get muted (when asked).

How strips are added: ``strips.new_movie`` places a movie frame for frame, which is
right only when the result's frame rate is the scene's. Otherwise only
``bpy.ops.sequencer.movie_strip_add(adjust_playback_rate=True)`` stretches it to play
in real time (a 25 fps clip over 1.2× the frames of a 30 fps scene); setting the speed
through the data API instead (``retiming_keys.add()``/``reset()`` on a fresh strip)
crashes bpy 4.5 and 5.0. So the movie comes from the data API where that gives the
right length and from the operator where only it does; as that operator may not run beside
the jobs' threads on most builds (see ``compat``), such a result waits for them to end. Sound always comes from
``strips.new_sound``: sound strips play in seconds, so its length is right at any rate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bpy

from . import compat, media
from .media import video_track_info

JOB_PROPERTY = "talking_face_job"
# A take's strips also say which take of which source they are, and what they were made with (takes.py).
TAKE_PROPERTY = "talking_face_take"
SOURCE_PROPERTY = "talking_face_source"
OPTIONS_PROPERTY = "talking_face_options"
MAX_CHANNEL = 128
RESULTS_NEXT_TO_BLEND = "talking_face"  # where an unsaved file's results go when it is first saved
# How a strip looks, beyond its pixels: what the result takes over from its source.
LOOK_PROPERTIES = ("use_flip_x", "use_flip_y", "blend_type", "blend_alpha", "color_saturation", "color_multiply",
                   "use_float", "alpha_mode")
TRANSFORM_KEPT = ("offset_x", "offset_y", "rotation", "origin", "filter")


class PlacementError(Exception):
    """The result cannot be placed; the message is one sentence for the artist."""


class PlacementDeferred(Exception):
    """The result can be placed only when the jobs' threads have ended (``compat.overridden_operator_must_wait``).

    Raised before anything is added: the caller leaves the result waiting and tries again later.
    """


@dataclass(frozen=True)
class _Slot:
    movie_channel: int
    sound_channel: int  # 0: no sound strip
    start: int
    length: int  # the movie's length on the timeline, in scene frames
    meta: Any = None  # the meta strip the source is in (the result goes in beside it); None: top level

    def collection(self, scene: bpy.types.Scene) -> Any:
        return compat.meta_contents(self.meta) if self.meta is not None else compat.strips(scene)


def find_imported(scene: bpy.types.Scene, job_id: str) -> list[str]:
    """Names of the strips already imported for ``job_id``, movie first."""
    tagged = [strip for strip in compat.all_strips(scene) if strip.get(JOB_PROPERTY) == job_id]
    tagged.sort(key=lambda strip: (not compat.is_movie(strip), strip.channel))
    return [strip.name for strip in tagged]


def _strip_named(scene: bpy.types.Scene, name: str) -> Any:
    strip = compat.all_strips(scene).get(name) if name else None
    if strip is None:
        raise PlacementError(f"The source strip “{name}” is no longer in scene “{scene.name}”.")
    return strip


def _result_seconds(video_path: str) -> float:
    """The result's duration: from its mp4 track, else as Blender reads it in a throw-away scene."""
    info = video_track_info(video_path)
    if info is not None:
        return info[0] / info[1]
    probe_scene = bpy.data.scenes.new("Talking Face probe")
    try:
        probe = compat.new_movie(probe_scene, "probe", video_path, channel=1, frame_start=1)
        if probe.frame_duration < 1 or probe.fps <= 0:
            raise PlacementError(f"Blender cannot read the result video {video_path}.")
        return probe.frame_duration / probe.fps
    finally:
        bpy.data.scenes.remove(probe_scene)


def _sound_seconds(path: str) -> float:
    """How long the file's sound lasts; 0.0 when it has none or this build cannot add sound strips.

    Without Python's ``aud`` (Debian's Blender) it is read from the file's header or
    measured by Blender itself, so the sound is still placed.
    """
    if not path or not compat.has_audio_support():
        return 0.0
    return media.measure_audio_seconds(path) or 0.0


def _channel_is_free(scene: bpy.types.Scene, channel: int, start: int, end: int, collection: Any = None) -> bool:
    return not any(strip.channel == channel and strip.frame_final_start < end and start < strip.frame_final_end
                   for strip in (collection if collection is not None else compat.strips(scene)))


def lowest_free_channel(scene: bpy.types.Scene, above: int, start: int, end: int, count: int,
                        collection: Any = None) -> int:
    """The lowest channel > ``above`` such that it and the ``count - 1`` above it are free in [start, end).

    Channels of ``collection`` (a meta strip's contents; by default the top level).
    """
    for channel in range(above + 1, MAX_CHANNEL - count + 2):
        if all(_channel_is_free(scene, channel + step, start, end, collection) for step in range(count)):
            return channel
    raise PlacementError("No free channels are left above the source strips for the result.")


def _plan_slot(scene: bpy.types.Scene, start: int, above: int, length: int, sound_length: int,
               meta: Any = None) -> _Slot:
    """Channels for the movie (and its sound) free over the longer of the two, from ``start``, above ``above``.

    In ``meta`` (a meta strip) when the shot is inside one: the result goes in beside it.
    """
    with_sound = sound_length > 0
    collection = compat.meta_contents(meta) if meta is not None else None
    lowest = lowest_free_channel(scene, above, start, start + max(length, sound_length), 2 if with_sound else 1,
                                 collection)
    # Blender's own layout: a movie's sound just below its picture.
    if with_sound:
        return _Slot(movie_channel=lowest + 1, sound_channel=lowest, start=start, length=length, meta=meta)
    return _Slot(movie_channel=lowest, sound_channel=0, start=start, length=length, meta=meta)


@contextlib.contextmanager
def _scene_settings_kept(scene: bpy.types.Scene) -> Iterator[None]:
    """Guard the frame rate, range and view transform, and the selection of existing strips.

    ``movie_strip_add`` is called with ``use_framerate=False`` and ``set_view_transform=False``
    and measured not to touch them; the guard keeps that true on any version, writing
    only what changed (writing the fps, even unchanged, makes Blender re-measure every
    sound strip). The operator deselects every strip: the existing ones get their
    selection back.
    """
    guarded = ((scene.render, "fps"), (scene.render, "fps_base"), (scene, "frame_start"),
               (scene, "frame_end"), (scene.view_settings, "view_transform"))
    kept = [(owner, attribute, getattr(owner, attribute)) for owner, attribute in guarded]
    selected = {strip.name: strip.select for strip in compat.all_strips(scene)}
    try:
        yield
    finally:
        for owner, attribute, value in kept:
            if getattr(owner, attribute) != value:
                setattr(owner, attribute, value)
        for strip in compat.all_strips(scene):
            if strip.name in selected and strip.select != selected[strip.name]:
                strip.select = selected[strip.name]


def _add_with_data_api(scene: bpy.types.Scene, video_path: str, slot: _Slot, name: str) -> Any | None:
    """The movie strip via ``new_movie`` when that gives the right length, else None (nothing left).

    ``new_movie`` places the clip frame for frame: right only when it lasts exactly as long
    as the clip in scene frames (off by one means another rate, which drifts).
    """
    movie = compat.new_movie(scene, name, video_path, channel=slot.movie_channel, frame_start=slot.start,
                             into=slot.collection(scene))
    if movie.frame_final_duration == slot.length:
        return movie
    slot.collection(scene).remove(movie)
    return None


def _add_with_operator(scene: bpy.types.Scene, video_path: str, slot: _Slot, name: str) -> Any:
    """The movie via ``movie_strip_add``, stretched to play in real time at the scene's rate.

    Its sound is added apart, with the data API: on 5.0 the operator's sound strip is
    sized to the unstretched clip and trimmed back, and any later refresh of sound
    lengths (a change of fps, reloading the file) recomputes the size and leaves it
    short by that trim.
    """
    if compat.overridden_operator_must_wait():
        raise PlacementDeferred("placed when the running jobs are done")
    before = {strip.as_pointer() for strip in compat.all_strips(scene)}
    try:
        with compat.periodic_threads_paused(), compat.sequencer_context_override(scene), \
                compat.no_proxy_job_when_headless():
            result = bpy.ops.sequencer.movie_strip_add(
                filepath=video_path, frame_start=slot.start, channel=slot.movie_channel, sound=False,
                adjust_playback_rate=True, use_framerate=False, set_view_transform=False)
    except (compat.NoSequencerContext, RuntimeError) as error:
        raise PlacementError(f"Blender could not add the result to the sequencer: {error}") from error
    added = [strip for strip in compat.all_strips(scene) if strip.as_pointer() not in before]
    if result != {"FINISHED"} or len(added) != 1 or not compat.is_movie(added[0]):
        raise PlacementError(f"Blender could not add the result video {video_path} to the sequencer.")
    if slot.meta is not None and added[0].parent_meta() != slot.meta:  # the operator adds at the top level
        added[0].move_to_meta(slot.meta)
        added[0].channel = slot.movie_channel
    added[0].name = name
    _round_length(added[0], slot.length)
    return added[0]


def _round_length(movie: Any, length: int) -> None:
    """The stretched clip's length rounded to the nearest scene frame, as its sound's is.

    Blender rounds a stretched clip's length down (8.8 scene frames give 8): the last frame
    is held for the fraction instead, so the picture lasts as long as the clip.
    """
    if abs(movie.frame_final_duration - length) == 1:
        movie.frame_final_duration = length


def _add_sound(scene: bpy.types.Scene, path: str, slot: _Slot, name: str) -> Any | None:
    try:
        return compat.new_sound(scene, name, path, channel=slot.sound_channel, frame_start=slot.start,
                                into=slot.collection(scene))
    except RuntimeError:
        return None  # a build without audio support; _sound_seconds already said so


def _add_strips(scene: bpy.types.Scene, video_path: str, audio_path: str, slot: _Slot, name: str) -> list[Any]:
    movie = _add_with_data_api(scene, video_path, slot, name)
    if movie is None:
        movie = _add_with_operator(scene, video_path, slot, name)
    sound = _add_sound(scene, audio_path, slot, f"{name} sound") if audio_path else None
    return [movie, sound] if sound is not None else [movie]


def _copy_curve_mapping(source: Any, target: Any) -> None:
    for source_curve, target_curve in zip(source.curves, target.curves, strict=False):
        points = target_curve.points
        while len(points) > len(source_curve.points):
            points.remove(points[-1])
        while len(points) < len(source_curve.points):
            points.new(0.0, 0.0)
        for source_point, target_point in zip(source_curve.points, points, strict=True):
            target_point.location = source_point.location
            target_point.handle_type = source_point.handle_type
    target.update()


def _copy_properties(source: Any, target: Any) -> None:
    """Every writable setting of an RNA struct, nested settings (not data-blocks) included."""
    if isinstance(source, bpy.types.CurveMapping):
        _copy_curve_mapping(source, target)
    for prop in source.bl_rna.properties:
        name = prop.identifier
        if name in {"rna_type", "name", "type"} or prop.type == "COLLECTION":
            continue
        value = getattr(source, name)
        if prop.type == "POINTER" and prop.is_readonly:
            if value is not None and not isinstance(value, bpy.types.ID):
                _copy_properties(value, getattr(target, name))
            continue
        if not prop.is_readonly:
            with contextlib.suppress(AttributeError, TypeError, ValueError, RuntimeError):
                setattr(target, name, value)


def _picture_width_height(strip: Any) -> tuple[int, int]:
    element = strip.elements[0] if len(getattr(strip, "elements", ())) else None
    return (element.orig_width, element.orig_height) if element is not None else (0, 0)


def inherit_look(source: Any, result: Any) -> None:
    """Frame the result as its source is framed: transform, crop, mirror, blending, colour and modifiers.

    A result of another size than its source's picture is scaled (and its crop converted)
    so that it covers exactly what the source covers.
    """
    if not hasattr(source, "transform"):  # a sound strip has no picture to frame
        return
    source_size, result_size = _picture_width_height(source), _picture_width_height(result)
    factors = [(s / r) if s > 0 and r > 0 else 1.0 for s, r in zip(source_size, result_size, strict=True)]
    for name in TRANSFORM_KEPT:
        if hasattr(source.transform, name):
            setattr(result.transform, name, getattr(source.transform, name))
    result.transform.scale_x = source.transform.scale_x * factors[0]
    result.transform.scale_y = source.transform.scale_y * factors[1]
    for name, factor in (("min_x", factors[0]), ("max_x", factors[0]), ("min_y", factors[1]), ("max_y", factors[1])):
        setattr(result.crop, name, round(getattr(source.crop, name) / factor))
    for name in LOOK_PROPERTIES:
        if hasattr(source, name) and hasattr(result, name):
            setattr(result, name, getattr(source, name))
    with contextlib.suppress(AttributeError, TypeError, ValueError):  # effect strips have no colour space
        result.colorspace_settings.name = source.colorspace_settings.name
    if len(source.modifiers):
        window = bpy.context.window
        with compat.sequencer_scene(window.workspace if window else bpy.context.workspace, result.id_data):
            for modifier in source.modifiers:
                _copy_properties(modifier, result.modifiers.new(name=modifier.name, type=modifier.type))


def _blend_relative(path: str, blend_path: str) -> str:
    """``//…`` relative to the .blend when it is saved (and on the same drive), else the path as it is."""
    if not blend_path:
        return path
    try:
        return "//" + os.path.relpath(path, os.path.dirname(blend_path)).replace(os.sep, "/")
    except ValueError:  # another drive (Windows)
        return path


def _media_owner(strip: Any) -> Any:
    """What holds a strip's file path: the strip for movies, its sound data-block for sounds."""
    return strip.sound if compat.is_sound(strip) else strip


def _make_paths_relative(added: list[Any], blend_path: str) -> None:
    for strip in added:
        owner = _media_owner(strip)
        if owner is not None:
            owner.filepath = _blend_relative(bpy.path.abspath(owner.filepath), blend_path)


def _unique_path(folder: str, name: str) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, number = os.path.join(folder, name), 1
    while os.path.exists(candidate):
        candidate, number = os.path.join(folder, f"{stem}_{number}{suffix}"), number + 1
    return candidate


def move_results_next_to(blend_path: str, user_results: str) -> dict[str, str]:
    """Move results kept under ``user_results`` into a folder beside ``blend_path``; {old path: new path}.

    For a ``save_pre`` handler (which gets the path being saved): an unsaved file's results
    live under the extension's user folder, which Blender deletes with the extension. The
    strips are pointed at the moved files, relative to the .blend, before it is written.
    """
    if not blend_path:
        return {}
    keep = os.path.realpath(user_results)
    target = os.path.join(os.path.dirname(blend_path), RESULTS_NEXT_TO_BLEND)
    moved: dict[str, str] = {}
    for scene in bpy.data.scenes:
        for strip in compat.all_strips(scene):
            owner = _media_owner(strip) if strip.get(JOB_PROPERTY) else None
            if owner is None:
                continue
            path = os.path.realpath(bpy.path.abspath(owner.filepath))
            if path not in moved and os.path.commonpath([path, keep]) == keep and os.path.isfile(path):
                os.makedirs(target, exist_ok=True)
                moved[path] = shutil.move(path, _unique_path(target, os.path.basename(path)))
            if path in moved:
                owner.filepath = _blend_relative(moved[path], blend_path)
    return moved


def _finish(scene: bpy.types.Scene, added: list[Any], name: str, job_id: str,
            properties: dict[str, Any]) -> list[str]:
    for strip in added:
        strip.name = name if compat.is_movie(strip) else f"{name} sound"
        strip[JOB_PROPERTY] = job_id
        for key, value in properties.items():
            strip[key] = value
        strip.select = True
    compat.ensure_editor(scene).active_strip = added[0]
    return [strip.name for strip in added]


def _push_undo_step(name: str) -> None:
    """One undo step for the import where a window exists; headless there is no undo stack to feed."""
    if bpy.context.window is None:
        return
    with contextlib.suppress(RuntimeError):
        bpy.ops.ed.undo_push(message=f"Import Talking Face result “{name}”")


def place_result(scene: bpy.types.Scene, source_strip_name: str, video_path: str, *, job_id: str, name: str,
                 fallback_audio_path: str = "", mute_sources: bool = True,
                 source_strip_names: tuple[str, ...] = (), floor_channel: int = 0,
                 properties: dict[str, Any] | None = None, start: int | None = None, meta: str = "") -> list[str]:
    """Import the result of ``job_id`` above its sources; returns the new strip names, movie first.

    A job already imported in this scene is not imported again: its strips' names are returned.
    ``fallback_audio_path`` (the job's audio) becomes the sound when the result has none. The
    strips land above ``floor_channel`` too, and carry ``properties`` (custom properties) besides
    the job's id: set together, so a placed strip never lacks them.

    ``start`` and ``meta`` (the slot of the job's shot, see ``shots.Slot``): the result lands there
    (inside the meta strip so named, while it exists), above ``floor_channel``, wherever the source
    strips are now; those that still exist lend their look and are muted. Without ``start`` (jobs
    from before shots) it lands at the source's first visible frame, beside and above the sources,
    which must exist.
    """
    existing = find_imported(scene, job_id)
    if existing:
        return existing
    if not os.path.isfile(video_path):
        raise PlacementError(f"The result video is missing: {video_path}")
    names = dict.fromkeys((source_strip_name, *source_strip_names))
    if start is None:
        sources = [_strip_named(scene, source) for source in names]
        start, inside = sources[0].frame_final_start, sources[0].parent_meta()
        # A shot inside a meta strip gets its result inside that meta, above the sources in there.
        floor_channel = max(floor_channel, *(strip.channel for strip in sources if strip.parent_meta() == inside))
    else:
        sources = [strip for strip in map(compat.all_strips(scene).get, names) if strip is not None]
        inside = compat.all_strips(scene).get(meta) if meta else None
    fps = compat.scene_fps(scene)
    audio_path = video_path if _sound_seconds(video_path) > 0 else fallback_audio_path
    length = round(_result_seconds(video_path) * fps)
    slot = _plan_slot(scene, start, floor_channel, length, sound_length=round(_sound_seconds(audio_path) * fps),
                      meta=inside)
    with _scene_settings_kept(scene):
        added = _add_strips(scene, video_path, audio_path if slot.sound_channel else "", slot, name)
    if sources and sources[0].name == source_strip_name:  # the look of the source itself, never of its sound
        inherit_look(sources[0], added[0])
    _make_paths_relative(added, bpy.data.filepath)
    new_names = _finish(scene, added, name, job_id, properties or {})
    if mute_sources:
        for source in sources:
            source.mute = True
    _push_undo_step(name)
    return new_names
