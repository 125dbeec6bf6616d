"""Cut the visible frames of a movie into an H.264 MP4 by rendering them with Blender's sequencer.

Used two ways, with one implementation:

- imported as ``operators.cut_video`` by ``media.prepare_video`` to cut in this process
  (background mode and tests, where blocking is fine);
- run as a script by a background Blender, so the UI never freezes::

      blender -b --factory-startup --python-exit-code 1 --python cut_video.py -- --source ...

  It prints ``TALKING_FACE_PROGRESS <done> <total>`` after each frame it writes.

The cut is a temporary scene holding a fresh movie strip of the source file, at the
source's size and frame rate, rendered with the view transform ``Standard`` (the
default AgX/Filmic would tone-map the clip a second time and shift its colours), and
removed afterwards. The strip's modifiers, transform and crop are not applied: the
service gets the pixels as shot. When the artist extends the picture to a longer audio
(``CutRequest.extend``: hold, loop, ping-pong), the visible frames are laid out again in
the order ``lengths`` gives, one strip per run, and rendered the same way.

No ``from __future__ import annotations`` here: run as a script this module is
``__main__`` and dataclasses would look string annotations up in ``sys.modules``.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import bpy

PROGRESS_PREFIX = "TALKING_FACE_PROGRESS"

ProgressCallback = Callable[[int, int], None]


def _load_sibling(name: str) -> ModuleType:
    """Load ``<name>.py`` from this folder by path: run as a script there is no package to import from."""
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"talking_face_cut_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __package__:
    from . import compat, lengths
else:
    compat = _load_sibling("compat")
    lengths = _load_sibling("lengths")


class CutError(RuntimeError):
    """The cut could not be made; the message is one sentence for the artist."""


@dataclasses.dataclass(frozen=True)
class StripSpan:
    """Where a movie strip's content and its visible part lie on the timeline, in scene frames.

    ``content_start``/``content_length``: the frames the whole (held-in) content covers;
    ``visible_start``/``visible_end``: the strip's final start and end (end exclusive);
    ``hold_start``/``hold_end``: source frames cut off by the hold offsets.
    """

    content_start: int
    content_length: int
    visible_start: int
    visible_end: int
    hold_start: int = 0
    hold_end: int = 0


def source_range(span: StripSpan, source_frames: int) -> tuple[int, int]:
    """The source frames ``[first, end)`` the visible part shows, 0-based.

    A strip whose playback rate was adjusted (or retimed) shows the held-in source frames
    over ``content_length`` scene frames; the speed is taken as uniform. Frames held past
    the content's ends (negative offsets) are still images and are not included.
    """
    shown = max(1, source_frames - span.hold_start - span.hold_end)
    frames_per_scene_frame = shown / max(1, span.content_length)
    visible_from = max(span.visible_start, span.content_start) - span.content_start
    visible_to = min(span.visible_end, span.content_start + span.content_length) - span.content_start
    first = span.hold_start + round(visible_from * frames_per_scene_frame)
    end = span.hold_start + round(visible_to * frames_per_scene_frame)
    return first, min(end, source_frames - span.hold_end)


@dataclasses.dataclass(frozen=True)
class CutRequest:
    """Everything the cut needs, plain data so that it survives a command line."""

    source: str
    output: str
    fps: float
    width: int
    height: int
    span: StripSpan
    colorspace: str = "sRGB"
    images: str = ""  # an image sequence: a file naming its images (in ``source``'s folder), one a line
    extend: str = ""  # HOLD, LOOP or PINGPONG: the visible frames are extended to ``frames`` (``lengths``)
    frames: int = 0  # with ``extend``: how many frames the cut has in all

    def to_args(self) -> list[str]:
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                  if field.name != "span"}
        values.update(dataclasses.asdict(self.span))
        # "--name=value": a value starting with "-" is never taken for an option.
        return [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]

    @classmethod
    def from_args(cls, argv: list[str]) -> "CutRequest":
        parser = argparse.ArgumentParser(prog="cut_video.py")
        parser.add_argument("--source", required=True)
        parser.add_argument("--output", required=True)
        parser.add_argument("--colorspace", default="sRGB")
        parser.add_argument("--images", default="")
        parser.add_argument("--extend", default="")
        parser.add_argument("--frames", type=int, default=0)
        parser.add_argument("--fps", type=float, required=True)
        for name in ("width", "height", *(field.name for field in dataclasses.fields(StripSpan))):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, required=True)
        parsed = vars(parser.parse_args(argv))
        span = StripSpan(**{f.name: parsed.pop(f.name) for f in dataclasses.fields(StripSpan)})
        return cls(span=span, **parsed)


def _configure_output(scene: bpy.types.Scene, request: CutRequest, filepath: str) -> None:
    render = scene.render
    render.resolution_x, render.resolution_y = request.width, request.height
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    compat.set_scene_fps(scene, request.fps)
    render.use_sequencer = True
    render.use_compositing = False
    # Standard leaves the clip's pixels as they are; AgX/Filmic would grade them again.
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    render.filepath = filepath
    render.use_file_extension = True
    compat.set_ffmpeg_output(render)
    render.image_settings.color_mode = "RGB"
    ffmpeg = render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = "PERC_LOSSLESS"
    ffmpeg.ffmpeg_preset = "GOOD"
    ffmpeg.gopsize = max(1, round(request.fps))
    # The sound goes to the service separately, and the 4.2 wheels cannot mix it down.
    ffmpeg.audio_codec = "NONE"
    # Every frame is rendered once: caching them only costs copies (12-15% of a cut, bench/).
    editor = compat.ensure_editor(scene)
    for cache in ("use_cache_raw", "use_cache_preprocessed", "use_cache_composite", "use_cache_final"):
        if hasattr(editor, cache):
            setattr(editor, cache, False)


@contextlib.contextmanager
def _temporary_scene() -> Iterator[bpy.types.Scene]:
    scene = bpy.data.scenes.new("Talking Face cut")
    try:
        yield scene
    finally:
        bpy.data.scenes.remove(scene)


@contextlib.contextmanager
def _reporting_frames(scene_name: str, total: int, on_progress: ProgressCallback | None) -> Iterator[None]:
    done = 0

    def frame_written(scene: bpy.types.Scene, *_: object) -> None:
        nonlocal done
        if scene.name == scene_name:
            done += 1
            on_progress(done, total)

    if on_progress is None:
        yield
        return
    bpy.app.handlers.render_write.append(frame_written)
    try:
        yield
    finally:
        bpy.app.handlers.render_write.remove(frame_written)


def _image_strip(scene: bpy.types.Scene, request: CutRequest, frame_start: int = 1) -> Any:
    names = pathlib.Path(request.images).read_text(encoding="utf-8").splitlines()
    folder = pathlib.Path(request.source).parent
    compat.ensure_editor(scene)
    strip = compat.strips(scene).new_image(name="source", filepath=str(folder / names[0]), channel=1,
                                           frame_start=frame_start, fit_method="ORIGINAL")
    for name in names[1:]:
        strip.elements.append(name)
    return strip


def _source_strip(scene: bpy.types.Scene, request: CutRequest, frame_start: int = 1) -> Any:
    # ORIGINAL: one source pixel per output pixel, whatever size the scene had when the strip was added.
    if request.images:
        strip = _image_strip(scene, request, frame_start)
    else:
        strip = compat.new_movie(scene, "source", request.source, channel=1, frame_start=frame_start,
                                 fit_method="ORIGINAL")
    with contextlib.suppress(TypeError, ValueError):  # an unknown colour space keeps the default
        strip.colorspace_settings.name = request.colorspace
    if strip.frame_duration < 1:
        raise CutError(f"Blender could not read any frame of {request.source}.")
    return strip


def _extend_picture(scene: bpy.types.Scene, request: CutRequest, source: Any, first: int, end: int) -> None:
    """Lay out the visible frames ``[first, end)`` extended to ``request.frames`` as the scene's frame range.

    One strip per run of ``lengths.extension_runs``, one after another from frame 1: each
    shows its source frames through hold offsets, backward runs play reversed, and a held
    frame is a one-frame strip stretched past its content (Blender then holds that frame).
    """
    source_frames = source.frame_duration
    compat.strips(scene).remove(source)
    at = 1
    for run in lengths.extension_runs(request.extend, first, end, request.frames):
        strip = _source_strip(scene, request, frame_start=at)
        shown = 1 if run.step == 0 else run.count
        strip.animation_offset_start = run.lowest
        strip.animation_offset_end = source_frames - run.lowest - shown
        strip.frame_start = at  # the content, now only the run's frames, starts at the run
        strip.use_reverse_frames = run.step < 0
        strip.frame_final_end = at + run.count  # a held frame: past its content
        at += run.count
    scene.frame_start, scene.frame_end = 1, at - 1


def render_cut(request: CutRequest, *, on_progress: ProgressCallback | None = None) -> int:
    """Write the visible frames (extended when the request says so) to ``request.output``; returns how many."""
    output = pathlib.Path(request.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Per process: two jobs of one selection may cut into the same cached file at once.
    partial = output.with_name(f"{output.stem}.{os.getpid()}.partial.mp4")
    with _temporary_scene() as scene:
        # At the source's own rate a fresh strip maps scene frame f to source frame f - 1.
        # The size first: a strip is framed against the scene's size when it is added.
        _configure_output(scene, request, str(partial))
        strip = _source_strip(scene, request)
        first, end = source_range(request.span, strip.frame_duration)
        if end <= first:
            raise CutError("The strip shows no frame of its movie; widen it on the timeline.")
        scene.frame_start, scene.frame_end = first + 1, end
        if request.extend and request.frames > end - first:
            _extend_picture(scene, request, strip, first, end)
        count = scene.frame_end - scene.frame_start + 1
        with _reporting_frames(scene.name, count, on_progress):
            result = bpy.ops.render.render(animation=True, scene=scene.name)
        written = pathlib.Path(scene.render.frame_path(frame=scene.frame_start))
    if result != {"FINISHED"} or not written.is_file():
        written.unlink(missing_ok=True)
        raise CutError(f"Blender could not render the cut of {request.source}.")
    os.replace(written, output)
    return count


def print_progress(done: int, total: int) -> None:
    print(f"{PROGRESS_PREFIX} {done} {total}", flush=True)


def run_script(cut: Callable[..., int], request: Any) -> int:
    """A cut script's entry: ``cut(request, on_progress=…)``, reported in lines the controller reads.

    Progress lines while it runs, then ``TALKING_FACE_DONE <count> <output>`` and 0, or
    ``TALKING_FACE_ERROR <sentence>`` and 1.
    """
    try:
        count = cut(request, on_progress=print_progress)
    except CutError as error:
        print(f"TALKING_FACE_ERROR {error}", flush=True)
        return 1
    print(f"TALKING_FACE_DONE {count} {request.output}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Script entry: cut as the arguments say, printing progress lines; 0 on success."""
    return run_script(render_cut, CutRequest.from_args(argv))


def script_arguments(argv: list[str]) -> list[str]:
    """Blender's own arguments end at ``--``; the script's follow it."""
    return argv[argv.index("--") + 1:] if "--" in argv else []


if __name__ == "__main__":
    sys.exit(main(script_arguments(sys.argv)))
