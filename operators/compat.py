"""The one place where Blender 4.2 LTS, 4.5 LTS and 5.0 differ, decided by feature detection.

Nothing here compares version numbers: each helper looks for the property or
argument it needs, so a future Blender that keeps an API keeps working.

Differences handled here (measured on the bpy 4.2.23, 4.5.15 and 5.0.1 wheels):

- Strip collections: ``sequence_editor.strips``/``strips_all`` (4.4+), ``sequences``/
  ``sequences_all`` (4.2; 5.0 removed them); a meta strip's contents likewise ``strips`` (4.4+)
  or ``sequences`` (4.2; 5.0 removed it).
- Type names: ``bpy.types.Strip``/``MovieStrip`` (4.4+) or ``Sequence``/``MovieSequence``.
- ``strips.new_effect``: ``length`` and ``input1`` on 5.0, ``frame_end`` and ``seq1`` on 4.2,
  ``frame_end`` and ``input1`` on 4.5.
- Movie output: 5.0 needs ``image_settings.media_type = 'VIDEO'`` before ``file_format = 'FFMPEG'``.
- Sequencer operators: 5.0 edits ``workspace.sequencer_scene``; 4.x edits the context scene.
- Audio: the 4.2 wheels are built without Audaspace (no ``aud``; ``new_sound`` raises);
  Debian/Ubuntu's Blender has Audaspace in C (sound strips, ``sound.mixdown``) but no ``aud``.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import bpy


class NoSequencerContext(RuntimeError):
    """Raised when no window exists to host a Sequence Editor for an operator call."""


def ensure_editor(scene: bpy.types.Scene) -> bpy.types.SequenceEditor:
    return scene.sequence_editor or scene.sequence_editor_create()


# For ``UILayout.prop_search(data, ALL_STRIPS_PROPERTY, editor, ...)`` and other by-name lookups.
ALL_STRIPS_PROPERTY = ("strips_all" if "strips_all" in bpy.types.SequenceEditor.bl_rna.properties
                       else "sequences_all")

# Preference paths accept a blend-relative "//" only where Blender lets a property say so (4.5+);
# 4.2 takes them without the flag and would refuse the flag itself.
BLEND_RELATIVE_PATH_OPTIONS = ({"PATH_SUPPORTS_BLEND_RELATIVE"}
                               if "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties
                               else set())


class _NoStrips(tuple):
    """Stands for the strips of a scene without a sequence editor: empty, with ``get`` like the real ones."""

    def get(self, _name: str, default: Any = None) -> Any:
        return default


_NO_STRIPS = _NoStrips()


def strips(scene: bpy.types.Scene) -> Any:
    """Top-level strips of the scene (empty, never created, when it has no sequence editor yet)."""
    editor = scene.sequence_editor
    if editor is None:
        return _NO_STRIPS
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(scene: bpy.types.Scene) -> Any:
    """Every strip of the scene, including those inside meta strips."""
    editor = scene.sequence_editor
    if editor is None:
        return _NO_STRIPS
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def is_meta(strip: Any) -> bool:
    return strip is not None and strip.type == "META"


def meta_contents(meta: Any) -> Any:
    """The strips directly inside a meta strip (its own collection, with ``new_movie`` and ``remove``)."""
    return meta.strips if hasattr(meta, "strips") else meta.sequences


def strips_beside(scene: bpy.types.Scene, strip: Any) -> Any:
    """The collection that holds ``strip``: its meta strip's contents, or the scene's top-level strips."""
    meta = strip.parent_meta()
    return meta_contents(meta) if meta is not None else strips(scene)


def strip_type(kind: str = "") -> type:
    """The RNA class of a strip kind, e.g. ``strip_type("Movie")``; ``strip_type()`` is the base."""
    return getattr(bpy.types, f"{kind}Strip", None) or getattr(bpy.types, f"{kind}Sequence")


def is_movie(strip: Any) -> bool:
    return strip is not None and strip.type == "MOVIE"


def is_sound(strip: Any) -> bool:
    return strip is not None and strip.type == "SOUND"


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def set_scene_fps(scene: bpy.types.Scene, fps: float) -> None:
    """Store a float rate the way Blender does: an integer rate and a base (29.97 = 30 / 1.001)."""
    whole = max(1, round(fps))
    scene.render.fps = whole
    scene.render.fps_base = whole / fps


def has_audio_support() -> bool:
    """True when Blender itself plays sound: sound strips and ``sound.mixdown`` work.

    False on builds without Audaspace, such as the bpy 4.2 wheels. Python's ``aud`` is a
    separate question (``has_aud_module``): Debian's Blender has Audaspace without it.
    """
    return bool(getattr(bpy.app.build_options, "audaspace", False))


def has_aud_module() -> bool:
    """True when Python's ``aud`` module exists (official builds; not Debian's, not the 4.2 wheels)."""
    try:
        importlib.import_module("aud")
    except ImportError:
        return False
    return True


def sound_rate(sound: Any) -> int:
    """The sample rate Blender read from a sound datablock; 0 when unknown (no Audaspace)."""
    return int(getattr(sound, "samplerate", 0) or 0)


def new_movie(scene: bpy.types.Scene, name: str, filepath: str, channel: int, frame_start: int,
              fit_method: str = "FIT", *, into: Any = None) -> Any:
    """A movie strip at the top level, or in ``into`` (a collection such as ``meta_contents(meta)``)."""
    ensure_editor(scene)
    return (into if into is not None else strips(scene)).new_movie(
        name=name, filepath=filepath, channel=channel, frame_start=frame_start, fit_method=fit_method)


def new_sound(scene: bpy.types.Scene, name: str, filepath: str, channel: int, frame_start: int, *,
              into: Any = None) -> Any:
    """A sound strip (top level, or in ``into``); raises RuntimeError on builds without audio support."""
    ensure_editor(scene)
    return (into if into is not None else strips(scene)).new_sound(
        name=name, filepath=filepath, channel=channel, frame_start=frame_start)


def new_effect(scene: bpy.types.Scene, name: str, effect_type: str, channel: int, frame_start: int,
               length: int, inputs: tuple[Any, ...] = ()) -> Any:
    """An effect strip (COLOR, TEXT, ...) spanning ``length`` frames, whatever the API's argument names."""
    ensure_editor(scene)
    collection = strips(scene)
    parameters = collection.bl_rna.functions["new_effect"].parameters.keys()
    keywords: dict[str, Any] = {"name": name, "type": effect_type, "channel": channel,
                                "frame_start": frame_start}
    if "length" in parameters:
        keywords["length"] = length
    else:
        keywords["frame_end"] = frame_start + length
    input_names = ("input1", "input2") if "input1" in parameters else ("seq1", "seq2")
    keywords.update(zip(input_names, inputs, strict=False))
    return collection.new_effect(**keywords)


def draw_progress(layout: bpy.types.UILayout, fraction: float, text: str = "") -> None:
    """A progress bar where the layout has one (4.0+), else the percentage as a label."""
    label = text or f"{fraction:.0%}"
    if hasattr(layout, "progress"):
        layout.progress(factor=max(0.0, min(1.0, fraction)), type="BAR", text=label)
    else:
        layout.label(text=f"{label} ({fraction:.0%})" if text else label)


def set_ffmpeg_output(render: bpy.types.RenderSettings) -> None:
    """Make the render write a movie file; 5.0 only offers FFMPEG once the media type is VIDEO."""
    settings = render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"


def uses_sequencer_scene() -> bool:
    """True on 5.0+, where sequencer operators act on ``workspace.sequencer_scene``."""
    return "sequencer_scene" in bpy.types.WorkSpace.bl_rna.properties


def _any_window() -> Any:
    window = bpy.context.window
    if window is None and bpy.context.window_manager is not None:
        window = next(iter(bpy.context.window_manager.windows), None)
    if window is None:
        raise NoSequencerContext("no window to host a Sequence Editor (pure background without a screen)")
    return window


@contextlib.contextmanager
def _sequence_editor_area(window: Any) -> Iterator[Any]:
    """A SEQUENCE_EDITOR area of the window: an existing one, else one borrowed and given back."""
    areas = window.screen.areas
    editors = [area for area in areas if area.type == "SEQUENCE_EDITOR"]
    # A timeline view first: a preview-only area is a Sequence Editor too.
    editors.sort(key=lambda area: area.spaces.active.view_type == "PREVIEW")
    existing = next(iter(editors), None)
    if existing is not None:
        yield existing
        return
    borrowed = max(areas, key=lambda area: area.width * area.height)
    previous_type = borrowed.type
    borrowed.type = "SEQUENCE_EDITOR"
    try:
        yield borrowed
    finally:
        borrowed.type = previous_type


@contextlib.contextmanager
def sequencer_scene(workspace: Any, scene: bpy.types.Scene) -> Iterator[None]:
    """On 5.0 point the workspace's sequencer at ``scene`` inside the block, then put it back.

    5.0's sequencer operators act on it, and ``strip.modifiers.new`` crashes Blender while it
    is unset (measured on the 5.0.1 wheel). Elsewhere (4.x, or no workspace) it does nothing.
    """
    if not uses_sequencer_scene() or workspace is None:
        yield
        return
    previous = workspace.sequencer_scene
    workspace.sequencer_scene = scene
    try:
        yield
    finally:
        workspace.sequencer_scene = previous


def _override_keywords(window: Any, area: Any, scene: bpy.types.Scene) -> dict[str, Any]:
    if uses_sequencer_scene():
        # 5.0: the area alone; adding its region to the override crashes Blender 5.0.
        return {"area": area}
    region = next(region for region in area.regions if region.type == "WINDOW")
    if window.scene == scene:
        return {"window": window, "screen": window.screen, "area": area, "region": region}
    # 4.x: with a window in the override, ``scene`` is taken from that window and a scene
    # override is ignored, so another scene is reached by leaving the window out.
    return {"scene": scene, "area": area, "region": region}


@contextlib.contextmanager
def sequencer_context_override(scene: bpy.types.Scene) -> Iterator[None]:
    """Run ``bpy.ops.sequencer.*`` on ``scene`` inside the block, on every supported Blender.

    An existing Sequence Editor area is used, else the largest area is switched to one
    for the call and switched back. Measured on the bpy 4.2, 4.5 and 5.0 wheels, which run
    in background mode with the startup file's window: that works headless too. With no
    window at all, ``NoSequencerContext`` is raised (callers then say so rather than add
    strips out of sync). The window's scene, the workspace and the areas are left as
    they were.
    """
    window = _any_window()
    with contextlib.ExitStack() as stack:
        area = stack.enter_context(_sequence_editor_area(window))
        stack.enter_context(sequencer_scene(window.workspace, scene))
        stack.enter_context(bpy.context.temp_override(**_override_keywords(window, area, scene)))
        yield



@contextlib.contextmanager
def no_proxy_job_when_headless() -> Iterator[None]:
    """In background mode, ``movie_strip_add`` inside the block starts no proxy-building job.

    With Proxy Setup at Automatic (the default), the operator starts a proxy job in a
    thread, and in background mode no event loop ever ends it: when a scene it was
    started for is removed, Blender crashes in that thread or at exit (a segfault measured
    on the 4.2 and 5.0 wheels). With a window the job is Blender's own business and the
    artist's preference stands.
    """
    system = bpy.context.preferences.system
    if not bpy.app.background or getattr(system, "sequencer_proxy_setup", "MANUAL") == "MANUAL":
        yield
        return
    previous = system.sequencer_proxy_setup
    system.sequencer_proxy_setup = "MANUAL"
    try:
        yield
    finally:
        system.sequencer_proxy_setup = previous


# Blender's ``bpy.ops`` releases the GIL while the operator runs, and reads context members
# overridden with ``temp_override`` after asking Python whether this thread holds the GIL. Up to
# Python 3.11 that question is answered process-wide ("some thread holds it"; 3.12 made it per
# thread), so when another thread runs Python at that moment Blender reads Python objects without
# the GIL: a segfault in ``PyDict_GetItem`` from ``BPY_context_member_get``, measured in
# ``movie_strip_add`` on the 4.2, 4.5 and 5.0 wheels beside job threads, and beside a sandbox
# whose listeners woke 20 times a second. Official Blender builds (4.2 to 5.0) ship Python 3.11.
OVERRIDDEN_OPERATORS_RACE_PYTHON_THREADS = sys.version_info < (3, 12)
# The threads that run this extension's Python now and then: a job's (newport_api.worker,
# operators.preparation) and a key check. The store's heartbeat is paused instead (controller).
_JOB_THREAD_NAME = re.compile(r"talking-face-(prepare-[0-9a-f]{8}|[0-9a-f]{8}|key-check)")


# How to pause this extension's threads that wake now and then on their own (the job store's
# heartbeat), by name: registered by their owners, entered around every overridden operator call.
_PAUSES: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {}


def pause_around_overridden_operators(name: str,
                                      pause: Callable[[], contextlib.AbstractContextManager[None]] | None) -> None:
    """Register ``pause()``: a context manager in which one of our periodic threads does not run (None: forget it)."""
    if pause is None:
        _PAUSES.pop(name, None)
    else:
        _PAUSES[name] = pause


@contextlib.contextmanager
def periodic_threads_paused() -> Iterator[None]:
    """Around a ``bpy.ops`` call under a context override: our periodic threads stay asleep.

    The jobs' threads are waited for instead (``overridden_operator_must_wait``): they end on their own.
    """
    if not OVERRIDDEN_OPERATORS_RACE_PYTHON_THREADS:
        yield
        return
    with contextlib.ExitStack() as stack:
        for pause in list(_PAUSES.values()):
            stack.enter_context(pause())
        yield


def overridden_operator_must_wait() -> bool:
    """True while a ``bpy.ops`` call under a context override could crash Blender: wait for the job threads.

    The caller puts the call off (the tick tries again) rather than block the main thread;
    the threads end on their own when their jobs are done.
    """
    return OVERRIDDEN_OPERATORS_RACE_PYTHON_THREADS and any(
        _JOB_THREAD_NAME.fullmatch(thread.name) for thread in threading.enumerate()
        if thread is not threading.current_thread())
