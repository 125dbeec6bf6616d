"""Prepare what is uploaded: the visible range of the chosen strips, as files on disk.

Video: a movie strip showing its whole .mp4/.mov file is uploaded as that file,
untouched; anything else is cut to exactly its visible frames by ``cut_video`` (in
this process with ``prepare_video``, or in a background Blender with
``cut_video_command``). Audio: an audio file as it is, or a sound strip's visible
range or a movie strip's own sound cut to a 16-bit WAV by ``cut_audio`` (in this process,
or in a background Blender with ``cut_audio_command``), on builds with or without ``aud``.
The artist's length choice (``lengths``) reaches both: a picture extended to a longer audio
is always cut; an audio cut at the shot's end or filled with silence is always written as WAV.

Nothing here changes the user's scene; files are written only under ``work_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import math
import os
import pathlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import bpy

from ..newport_api import content
from . import compat, cut_audio, cut_video, shots
from .cut_audio import CutAudioRequest
from .cut_video import CutError, CutRequest, ProgressCallback, StripSpan, source_range

UNTOUCHED_VIDEO_SUFFIXES = (".mp4", ".mov")
# Uploaded as they are when a sound strip shows the whole file: every service takes these.
UNTOUCHED_AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac")
CUT_SCRIPT = pathlib.Path(cut_video.__file__)
CUT_PROGRESS_PREFIX = cut_video.PROGRESS_PREFIX


class MediaError(Exception):
    """An input cannot be prepared; the message is one sentence for the artist."""


@dataclass(frozen=True)
class PreparedMedia:
    path: str
    duration: float  # seconds
    fps: float  # 0.0 for audio
    frames: int  # 0 for audio
    is_source_file: bool  # True = the original file, uploaded untouched
    sha256: str


def file_sha256(path: str) -> str:
    """The file's SHA-256, remembered while it is unchanged (see ``newport_api.content``)."""
    return content.file_sha256(path)


# --- ISO base media (mp4/mov) video track: frame count and rate without decoding -------------

_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _boxes(stream: BinaryIO, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload offset, payload size) of each box up to ``end``; ``mdat`` is never read."""
    while stream.tell() + 8 <= end:
        start = stream.tell()
        size, kind = struct.unpack(">I4s", stream.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", stream.read(8))[0], 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, size - header
        stream.seek(start + size)


def _track_boxes(stream: BinaryIO, offset: int, size: int, found: dict[bytes, bytes]) -> None:
    stream.seek(offset)
    for kind, payload, length in list(_boxes(stream, offset + size)):
        if kind in _CONTAINER_BOXES:
            _track_boxes(stream, payload, length, found)
        elif kind in (b"hdlr", b"mdhd", b"stsz", b"tkhd"):
            stream.seek(payload)
            found[kind] = stream.read(min(length, 96))  # the fields read sit at the start


def _video_track_timing(found: dict[bytes, bytes]) -> tuple[int, float] | None:
    """(frames, fps) of a track whose handler is ``vide``."""
    if found.get(b"hdlr", b"")[8:12] != b"vide" or not {b"mdhd", b"stsz"} <= found.keys():
        return None
    mdhd = found[b"mdhd"]
    if mdhd[0] == 1:
        timescale, duration = struct.unpack(">IQ", mdhd[20:32])
    else:
        timescale, duration = struct.unpack(">II", mdhd[12:20])
    frames = struct.unpack(">I", found[b"stsz"][8:12])[0]
    if not (frames and duration and timescale):
        return None  # fragmented files keep their samples elsewhere
    return frames, frames * timescale / duration  # in one division: 25 fps stays exactly 25.0


def _track_turn(tkhd: bytes) -> tuple[int, int, int] | None:
    """(degrees the player turns the picture, stored width, stored height) from a track header."""
    matrix_at = 52 if tkhd[:1] == b"\x01" else 40
    if len(tkhd) < matrix_at + 44:
        return None
    a, b = struct.unpack(">ii", tkhd[matrix_at:matrix_at + 8])
    width, height = struct.unpack(">II", tkhd[matrix_at + 36:matrix_at + 44])
    return round(math.degrees(math.atan2(b, a))) % 360, width >> 16, height >> 16


@dataclass(frozen=True)
class _TrackFacts:
    frames: int
    fps: float
    turn: tuple[int, int, int] | None


def _mp4_tracks(stream: BinaryIO, size: int) -> list[dict[bytes, bytes]] | None:
    """The header boxes (``hdlr``, ``mdhd``, ``stsz``, ``tkhd``) of each track in the file's ``moov``.

    None when the file has no ``moov`` (not an mp4/mov, or one whose header is missing).
    """
    for kind, payload, length in list(_boxes(stream, size)):
        if kind != b"moov":
            continue
        tracks = []
        stream.seek(payload)
        for track_kind, track, track_length in list(_boxes(stream, payload + length)):
            if track_kind == b"trak":
                found: dict[bytes, bytes] = {}
                _track_boxes(stream, track, track_length, found)
                tracks.append(found)
        return tracks
    return None


@functools.lru_cache(maxsize=64)
def _cached_track_facts(path: str, modified: float, size: int) -> _TrackFacts | None:
    try:
        with open(path, "rb") as stream:
            for found in _mp4_tracks(stream, size) or ():
                timing = _video_track_timing(found)
                if timing:
                    return _TrackFacts(*timing, turn=_track_turn(found.get(b"tkhd", b"")))
    except (OSError, struct.error, IndexError):
        return None
    return None


def _track_facts(path: str) -> _TrackFacts | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _cached_track_facts(path, status.st_mtime, status.st_size)


def video_track_info(path: str) -> tuple[int, float] | None:
    """(frames, fps) of the first video track of an mp4/mov file, or None when unreadable.

    Reads only the few header fields it needs, and remembers the answer while the file
    is unchanged: the panel asks on every redraw.
    """
    facts = _track_facts(path)
    return (facts.frames, facts.fps) if facts else None


# --- Movie strips ----------------------------------------------------------------------------------


def _strip_file(strip: Any, filepath: str) -> str:
    return os.path.normpath(bpy.path.abspath(filepath, library=strip.id_data.library))


def is_image_sequence(strip: Any) -> bool:
    return strip is not None and strip.type == "IMAGE"


def is_video_strip(strip: Any) -> bool:
    """A strip whose pictures can be sent: a movie, or an image sequence (cut to H.264 like a movie)."""
    return compat.is_movie(strip) or is_image_sequence(strip)


def _require_movie(strip: Any) -> None:
    if not is_video_strip(strip):
        kind = getattr(strip, "type", "missing").replace("_", " ").lower()
        raise MediaError(f"“{getattr(strip, 'name', '')}” is not a movie strip ({kind}); "
                         "choose a movie strip or an image sequence as the video source.")


def _image_path(strip: Any, index: int = 0) -> str:
    return _strip_file(strip, os.path.join(strip.directory, strip.elements[index].filename))


def video_file(strip: Any) -> str:
    """The movie's file, or an image sequence's first image (which may be missing)."""
    _require_movie(strip)
    return _image_path(strip) if is_image_sequence(strip) else _strip_file(strip, strip.filepath)


def _movie_path(strip: Any) -> str:
    path = video_file(strip)
    if not os.path.isfile(path):
        raise MediaError(f"The movie file of “{strip.name}” is missing: {path}")
    return path


def strip_source_fps(strip: Any) -> float:
    """The frame rate of the strip's movie file (not the scene's); an image sequence plays at the scene's."""
    if is_image_sequence(strip):
        return compat.scene_fps(strip.id_data)
    fps = float(getattr(strip, "fps", 0.0) or 0.0)
    if fps <= 0.0 and len(strip.elements):
        fps = float(strip.elements[0].orig_fps)
    return fps


def strip_span(strip: Any) -> StripSpan:
    """The strip's content and visible range on the timeline, whatever its playback rate."""
    content_length = (strip.frame_final_end - strip.frame_final_start
                      + round(strip.frame_offset_start) + round(strip.frame_offset_end))
    return StripSpan(content_start=round(strip.frame_start), content_length=content_length,
                     visible_start=strip.frame_final_start, visible_end=strip.frame_final_end,
                     hold_start=strip.animation_offset_start, hold_end=strip.animation_offset_end)


def _source_frame_count(strip: Any, span: StripSpan) -> int:
    """The movie's frame count, from the file; unreadable files are taken as played 1:1."""
    if is_image_sequence(strip):
        return len(strip.elements)
    info = video_track_info(_strip_file(strip, strip.filepath))
    if info:
        return info[0]
    return span.content_length + span.hold_start + span.hold_end


def _visible_source_frames(strip: Any) -> tuple[int, int]:
    span = strip_span(strip)
    return source_range(span, _source_frame_count(strip, span))


def _sound_visible_seconds(strip: Any, scene: bpy.types.Scene) -> tuple[float, float]:
    """(start in the file, length) in seconds of what a sound strip plays."""
    fps = compat.scene_fps(scene)
    content_start = strip.frame_start
    content_end = content_start + strip.frame_duration
    shown_from = max(strip.frame_final_start, content_start)
    shown_to = min(strip.frame_final_end, content_end)
    start = (shown_from - content_start + strip.animation_offset_start) / fps
    start += getattr(strip, "sound_offset", 0.0)  # 4.5+: a shift of the sound within the strip
    return start, max(0.0, (shown_to - shown_from) / fps)


def visible_seconds(strip: Any, scene: bpy.types.Scene) -> float:
    """Seconds of source media the strip shows: what preparing it will send."""
    if compat.is_sound(strip):
        return _sound_visible_seconds(strip, scene)[1]
    _require_movie(strip)
    first, end = _visible_source_frames(strip)
    fps = strip_source_fps(strip)
    return (end - first) / fps if fps > 0 else 0.0


def needs_cut(strip: Any, scene: bpy.types.Scene, *, extend: str = "") -> bool:
    """False when the strip shows its whole file and the service takes that file as it is.

    ``extend`` (``lengths``' HOLD, LOOP or PINGPONG): the picture is extended, always by a cut.
    """
    _require_movie(strip)
    return is_image_sequence(strip) or bool(extend) or not _shows_whole_movie(strip)


def _shows_whole_movie(strip: Any) -> bool:
    shows_whole_file = (strip.frame_offset_start <= 0 and strip.frame_offset_end <= 0
                        and strip.animation_offset_start == 0 and strip.animation_offset_end == 0)
    return shows_whole_file and pathlib.Path(strip.filepath).suffix.lower() in UNTOUCHED_VIDEO_SUFFIXES


def source_of(strip: Any, *, measure: bool = True) -> shots.Source:
    """What a movie or image-sequence strip shows, as plain data (main thread; headers only, no hashing).

    ``measure=False`` (``draw()``): an image sequence whose size Blender does not know yet is not
    loaded to measure it; its size is then (0, 0).
    """
    _require_movie(strip)
    path = video_file(strip)
    span = strip_span(strip)
    first, end = source_range(span, _source_frame_count(strip, span))
    width, height = _picture_size(strip, path, measure=measure) if os.path.isfile(path) else (0, 0)
    images = tuple(element.filename for element in strip.elements) if is_image_sequence(strip) else ()
    return shots.Source(
        strip=strip.name, kind=shots.IMAGES if images else shots.MOVIE, path=path, first=first, end=end,
        fps=strip_source_fps(strip), width=width, height=height, colorspace=strip.colorspace_settings.name,
        frame_count=_source_frame_count(strip, span), span=shots.Span(**dataclasses.asdict(span)),
        whole_file=not images and _shows_whole_movie(strip), images=images)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "strip"


def _image_size(path: str) -> tuple[int, int]:
    """An image's size as Blender reads it (0, 0 when it cannot), leaving no image behind."""
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:
        return 0, 0
    try:
        return tuple(image.size)
    finally:
        bpy.data.images.remove(image)


def _picture_size(strip: Any, source: str, *, measure: bool = True) -> tuple[int, int]:
    element = strip.elements[0] if len(strip.elements) else None
    if element is not None and element.orig_width > 0:
        return element.orig_width, element.orig_height
    return _image_size(source) if measure and is_image_sequence(strip) else (0, 0)


def _refuse_unsendable_picture(source: shots.Source) -> None:
    """One sentence for pictures an H.264 cut cannot carry as the artist sees them."""
    width, height = source.width, source.height
    if width % 2 or height % 2:
        raise MediaError(f"“{source.strip}” is {width}×{height} and an H.264 MP4 needs an even width and "
                         "height, so render or export it at an even size, then Generate again.")
    facts = None if source.kind == shots.IMAGES else _track_facts(source.path)
    turn = facts.turn if facts else None
    if turn and turn[0] % 180 == 90 and (width, height) == turn[1:]:
        raise MediaError(f"This Blender shows “{source.strip}” sideways because it ignores the rotation stored "
                         "in the file; rotate the clip in a video editor or use Blender 4.5 or later.")
    if facts and facts.frames != _blender_frame_count(source.path):
        raise MediaError(f"“{source.strip}” has a variable frame rate, which Blender shows with repeated frames "
                         "that would be sent as new ones; convert it to a constant frame rate first.")


@functools.lru_cache(maxsize=64)
def _cached_blender_frame_count(path: str, modified: float, size: int) -> int:
    scene = bpy.data.scenes.new("Talking Face probe")
    try:
        return compat.new_movie(scene, "probe", path, channel=1, frame_start=1).frame_duration
    finally:
        bpy.data.scenes.remove(scene)


def _blender_frame_count(path: str) -> int:
    """How many frames Blender shows of a movie: by time at its rate, so a variable rate gains frames."""
    status = os.stat(path)
    return _cached_blender_frame_count(path, status.st_mtime, status.st_size)


def _image_list(source: shots.Source, work_dir: str) -> str:
    """A file naming the sequence's images, one a line: too many for a command line."""
    listing = pathlib.Path(work_dir) / f"{_slug(source.strip)}_images.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{name}\n" for name in source.images), encoding="utf-8")
    return str(listing)


def _require_file(source: shots.Source) -> None:
    if not os.path.isfile(source.path):
        raise MediaError(f"The movie file of “{source.strip}” is missing: {source.path}")


def source_key(source: shots.Source, *, extend: str = "", frames: int = 0) -> str:
    """The content key of the picture a shot sends: equal keys send equal pictures (hashes the source).

    ``extend``/``frames``: the picture extended to ``frames`` (another picture, so another key).
    """
    _require_file(source)
    try:
        return content.selection_key(*source.key_inputs(extend, frames))
    except OSError as error:
        raise MediaError(f"The movie file of “{source.strip}” cannot be read: {error.strerror}.") from error


def _cut_request(source: shots.Source, work_dir: str, output: str = "", *, extend: str = "",
                 frames: int = 0) -> CutRequest:
    _require_file(source)
    if source.width <= 0 or source.fps <= 0:
        raise MediaError(f"Blender cannot read the movie of “{source.strip}”: {source.path}")
    _refuse_unsendable_picture(source)
    span = StripSpan(**dataclasses.asdict(source.span))
    extended = f"_{extend.lower()}{frames}" if extend else ""
    output = output or str(pathlib.Path(work_dir)
                           / f"{_slug(source.strip)}_{span.visible_start}-{span.visible_end}{extended}.mp4")
    return CutRequest(source=source.path, output=str(output), fps=source.fps, width=source.width,
                      height=source.height, span=span, colorspace=source.colorspace,
                      images=_image_list(source, work_dir) if source.kind == shots.IMAGES else "",
                      extend=extend, frames=frames if extend else 0)


def describe_video(path: str, *, is_source_file: bool) -> PreparedMedia:
    """A PreparedMedia for an mp4/mov file, timed from its own video track."""
    info = video_track_info(path)
    if info is None:
        raise MediaError(f"The video {path} has no readable video track.")
    frames, fps = info
    return PreparedMedia(path=path, duration=frames / fps, fps=fps, frames=frames,
                         is_source_file=is_source_file, sha256=file_sha256(path))


def _describe_source_file(source: shots.Source) -> PreparedMedia:
    """The untouched source; files whose track cannot be parsed (fragmented mp4) are timed by Blender."""
    if source.width <= 0 or source.frame_count < 1:
        raise MediaError(f"Blender cannot decode any frame of “{source.strip}” ({source.path}); "
                         "check the file plays, then Generate again.")
    if video_track_info(source.path) is not None:
        return describe_video(source.path, is_source_file=True)
    return PreparedMedia(path=source.path, duration=source.seconds, fps=source.fps, frames=source.frames,
                         is_source_file=True, sha256=file_sha256(source.path))


def prepare_video(strip: Any, scene: bpy.types.Scene, work_dir: str, *,
                  on_progress: ProgressCallback | None = None, cut_output: str = "",
                  extend: str = "", frames: int = 0) -> PreparedMedia:
    """``prepare_source_video`` for what a strip shows now (tests and tools that hold a strip)."""
    _movie_path(strip)
    return prepare_source_video(source_of(strip), work_dir, on_progress=on_progress, cut_output=cut_output,
                                extend=extend, frames=frames)


def prepare_source_video(source: shots.Source, work_dir: str, *, on_progress: ProgressCallback | None = None,
                         cut_output: str = "", extend: str = "", frames: int = 0) -> PreparedMedia:
    """The video to upload, cut in this process (blocks: for background mode and tests).

    ``on_progress(done, total)`` is called after each frame of a cut. The user's scene is left
    exactly as it was: the cut renders a temporary scene of its own. ``cut_output``: where
    the cut goes; a finished file already there is that cut, and is used as it is. ``extend``/
    ``frames``: the visible frames extended to ``frames`` (see ``lengths``).
    """
    _require_file(source)
    if not source.needs_cut(extend):
        return _describe_source_file(source)
    request = _cut_request(source, work_dir, cut_output, extend=extend, frames=frames)
    if cut_output and video_track_info(cut_output) is not None:
        return describe_video(cut_output, is_source_file=False)
    try:
        cut_video.render_cut(request, on_progress=on_progress)
    except CutError as error:
        raise MediaError(str(error)) from error
    return describe_video(request.output, is_source_file=False)


def background_cut_available() -> bool:
    """True when a Blender program exists to cut in a background process (not the bpy module)."""
    binary = bpy.app.binary_path
    return bool(binary) and os.path.isfile(binary)


def cut_video_command(strip: Any, scene: bpy.types.Scene, work_dir: str, *,
                      blender: str = "", output: str = "", extend: str = "", frames: int = 0) -> tuple[list[str], str]:
    """``source_cut_command`` for what a strip shows now."""
    _movie_path(strip)
    return source_cut_command(source_of(strip), work_dir, blender=blender, output=output, extend=extend,
                              frames=frames)


def source_cut_command(source: shots.Source, work_dir: str, *, blender: str = "", output: str = "",
                       extend: str = "", frames: int = 0) -> tuple[list[str], str]:
    """The command line of a background Blender that cuts the shot's picture, and the file it writes.

    ``blender`` defaults to ``bpy.app.binary_path``, which is empty in the bpy module: check
    ``background_cut_available()`` and use ``prepare_source_video`` there. Progress lines on the
    process's stdout read with ``parse_cut_progress``; afterwards ``describe_video(output,
    is_source_file=False)`` gives the PreparedMedia.
    """
    program = _cut_program(blender, "video")
    return _background_cut(program, CUT_SCRIPT, _cut_request(source, work_dir, output, extend=extend, frames=frames))


def _cut_program(blender: str, what: str) -> str:
    program = blender or bpy.app.binary_path
    if not program:
        raise MediaError(f"This Blender has no program to cut the {what} in the background.")
    return program


def _background_cut(program: str, script: pathlib.Path, request: CutRequest | CutAudioRequest) -> tuple[list[str], str]:
    """A background Blender running a cut script on ``request``, and the file it writes."""
    command = [program, "-b", "--factory-startup", "--python-exit-code", "1",
               "--python", str(script), "--", *request.to_args()]
    return command, request.output


def parse_cut_progress(line: str) -> float | None:
    """The fraction done from a ``TALKING_FACE_PROGRESS <done> <total>`` line, else None."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != CUT_PROGRESS_PREFIX:
        return None
    try:
        done, total = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return min(1.0, done / total) if total > 0 else None


# --- Audio -------------------------------------------------------------------------------------

CUT_AUDIO_SCRIPT = pathlib.Path(cut_audio.__file__)
_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"}


def _sound_track_seconds(found: dict[bytes, bytes]) -> float | None:
    """Seconds of a track whose handler is ``soun``, from its media header."""
    if found.get(b"hdlr", b"")[8:12] != b"soun" or b"mdhd" not in found:
        return None
    mdhd = found[b"mdhd"]
    timescale, duration = (struct.unpack(">IQ", mdhd[20:32]) if mdhd[0] == 1
                           else struct.unpack(">II", mdhd[12:20]))
    return duration / timescale if timescale else None


def _mp4_sound_seconds(path: str, size: int) -> float | None:
    """Seconds of the first sound track of an mp4/mov/m4a (0.0: it has none); None when not such a file."""
    try:
        with open(path, "rb") as stream:
            if stream.read(8)[4:] not in _MP4_FIRST_BOXES:
                return None  # another format: its bytes are not walked as boxes
            stream.seek(0)
            tracks = _mp4_tracks(stream, size)
            if tracks is None:
                return None
            sounds = (_sound_track_seconds(found) for found in tracks)
            return next((seconds for seconds in sounds if seconds is not None), 0.0)
    except (OSError, struct.error, IndexError):
        return None


def _aud_seconds(path: str) -> float | None:
    if not compat.has_aud_module():
        return None
    aud = importlib.import_module("aud")
    try:
        sound = aud.Sound(path)
        return sound.length / sound.specs[0]
    except (aud.error, ZeroDivisionError):
        return 0.0


@functools.lru_cache(maxsize=64)
def _cached_sound_seconds(path: str, modified: float, size: int) -> float | None:
    """Seconds of the file's sound (0.0: it has none), or None when that cannot be told cheaply.

    Headers only, without bpy: a WAV's, an mp4 family file's tracks, else ``aud`` where it exists.
    """
    for measure in (cut_audio.wav_seconds, lambda source: _mp4_sound_seconds(source, size), _aud_seconds):
        seconds = measure(path)
        if seconds is not None:
            return seconds
    return None


def _known_sound_seconds(path: str) -> float | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _cached_sound_seconds(path, status.st_mtime, status.st_size)


def audio_file_seconds(path: str) -> float | None:
    """How long an audio file lasts, or None when it has no sound or that cannot be told cheaply.

    Reads headers only and remembers the answer: safe in ``draw()``. Exact for WAV and the
    mp4 family on every build; other formats need Python's ``aud`` (``measure_audio_seconds``
    also asks Blender itself).
    """
    return _known_sound_seconds(os.path.normpath(bpy.path.abspath(path))) or None


def measure_audio_seconds(path: str) -> float | None:
    """As ``audio_file_seconds``, else measured by a throw-away sound strip where Blender has Audaspace.

    Adds and removes a scene: main thread, outside ``draw()``. None when the file has no
    sound Blender can read.
    """
    path = os.path.normpath(bpy.path.abspath(path))
    seconds = _known_sound_seconds(path)
    if seconds is None and compat.has_audio_support() and os.path.isfile(path):
        with contextlib.suppress(CutError):
            seconds = cut_audio.probe_sound_seconds(path)
    return seconds or None


def describe_audio(path: str, *, is_source_file: bool) -> PreparedMedia:
    """A PreparedMedia for a prepared WAV (or a file whose length is known); no bpy, fine in a worker thread."""
    seconds = cut_audio.wav_seconds(path)
    if seconds is None:
        raise MediaError(f"The audio {path} is not a readable WAV file.")
    return PreparedMedia(path=path, duration=seconds, fps=0.0, frames=0,
                         is_source_file=is_source_file, sha256=file_sha256(path))


def prepare_audio_file(path: str, *, hashed: bool = True) -> PreparedMedia:
    """An audio file chosen by the artist, uploaded as it is.

    Its length is measured where this Blender can; on a build without Audaspace a format
    only Audaspace reads (MP3, Ogg, FLAC) is still uploaded, with its length unknown (0.0).
    Without ``hashed`` its content hash is left for a preparation thread ('').
    """
    path = os.path.normpath(bpy.path.abspath(path))
    if not os.path.isfile(path):
        raise MediaError(f"The audio file is missing: {path}")
    seconds = measure_audio_seconds(path)
    # Unknown is not silent: without Audaspace, an MP3 is only unmeasured. Known silence is refused.
    cannot_tell = not compat.has_audio_support() and _known_sound_seconds(path) is None
    if seconds is None and not cannot_tell:
        raise MediaError(f"The file {path} has no sound Blender can read.")
    return PreparedMedia(path=path, duration=seconds or 0.0, fps=0.0, frames=0,
                         is_source_file=True, sha256=file_sha256(path) if hashed else "")


def _sound_source(strip: Any, work_dir: str) -> str:
    """The sound's file on disk; a packed sound is written out under ``work_dir`` first."""
    sound = strip.sound
    if sound is None:
        raise MediaError(f"The sound strip “{strip.name}” has no sound.")
    if sound.packed_file is not None:
        suffix = pathlib.Path(sound.filepath).suffix or ".wav"
        path = pathlib.Path(work_dir) / f"{_slug(sound.name)}_packed{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sound.packed_file.data)
        return str(path)
    path = _strip_file(sound, sound.filepath)
    if not os.path.isfile(path):
        raise MediaError(f"The sound file of “{strip.name}” is missing: {path}")
    return path


def _shows_whole_sound(strip: Any) -> bool:
    return (strip.frame_offset_start <= 0 and strip.frame_offset_end <= 0
            and strip.animation_offset_start == 0 and strip.animation_offset_end == 0
            and getattr(strip, "sound_offset", 0.0) == 0.0)


def _require_sound(strip: Any) -> None:
    if not compat.is_sound(strip):
        raise MediaError(f"“{getattr(strip, 'name', '')}” is not a sound strip; choose a sound strip or a file.")


def audio_needs_cut(strip: Any, *, length: float = 0.0) -> bool:
    """False when a sound strip plays its whole, unpacked file and the service takes that file as it is.

    A movie strip's own sound is always cut out of its movie, and a sound fitted to a
    ``length`` (``lengths``: cut at the shot's end or filled with silence) is always cut.
    """
    if compat.is_movie(strip) or length > 0:
        return True
    _require_sound(strip)
    sound = strip.sound
    return not (sound is not None and sound.packed_file is None and _shows_whole_sound(strip)
                and pathlib.Path(sound.filepath).suffix.lower() in UNTOUCHED_AUDIO_SUFFIXES)


def _sound_cut_request(strip: Any, scene: bpy.types.Scene, work_dir: str, length: float = 0.0) -> CutAudioRequest:
    audio = sound_strip_audio(strip, scene)
    if not audio.seconds:
        raise MediaError(f"The sound strip “{strip.name}” plays nothing; widen it on the timeline.")
    source = _sound_source(strip, work_dir)  # a packed sound is written out first
    return shot_audio_cut_request(dataclasses.replace(audio, path=source, packed=False), work_dir, length=length)


def _movie_sound_cut_request(strip: Any, work_dir: str, length: float = 0.0) -> CutAudioRequest:
    _movie_path(strip)
    if not movie_has_audio(strip):
        raise MediaError(f"The movie of “{strip.name}” has no sound; choose a sound strip or a file.")
    return shot_audio_cut_request(movie_audio(strip), work_dir, length=length)


def sound_strip_audio(strip: Any, scene: bpy.types.Scene) -> shots.Audio:
    """What a sound strip plays, as plain data: its file, and where in it the visible part starts and ends."""
    _require_sound(strip)
    offset, seconds = _sound_visible_seconds(strip, scene)
    sound = strip.sound
    packed = sound is not None and sound.packed_file is not None
    path = _strip_file(sound, sound.filepath) if sound is not None and not packed else ""
    return shots.Audio(shots.AUDIO_STRIP, path, strip=strip.name, offset=offset, seconds=seconds,
                       whole_file=not audio_needs_cut(strip), packed=packed)


def movie_audio(strip: Any) -> shots.Audio:
    """A movie strip's own sound over its visible range, as plain data."""
    _require_movie(strip)
    first, end = _visible_source_frames(strip)
    fps = strip_source_fps(strip)
    return shots.Audio(shots.AUDIO_MOVIE, video_file(strip), strip=strip.name, offset=first / fps if fps else 0.0,
                       seconds=(end - first) / fps if fps else 0.0)


def shot_audio_cut_request(audio: shots.Audio, work_dir: str, *, length: float = 0.0) -> CutAudioRequest:
    """What to cut for a shot's sound strip or movie sound (not packed: see ``audio_cut_request``)."""
    if audio.kind == shots.AUDIO_FILE:
        return audio_file_cut_request(audio.path, work_dir, length=length)
    what = "movie" if audio.kind == shots.AUDIO_MOVIE else "sound file"
    if not os.path.isfile(audio.path):
        raise MediaError(f"The {what} of “{audio.strip}” is missing: {audio.path}")
    if not audio.seconds or audio.seconds <= 0:
        raise MediaError(f"The sound strip “{audio.strip}” plays nothing; widen it on the timeline.")
    stem = f"{_slug(audio.strip)}_sound" if audio.kind == shots.AUDIO_MOVIE else _slug(audio.strip)
    output = pathlib.Path(work_dir) / f"{stem}_{round(audio.offset * 1000)}-{round(audio.seconds * 1000)}ms.wav"
    return CutAudioRequest(source=audio.path, output=str(output), start=audio.offset, seconds=audio.seconds,
                           length=length)


def audio_cut_request(strip: Any, scene: bpy.types.Scene, work_dir: str, *, length: float = 0.0) -> CutAudioRequest:
    """What to cut for a sound strip, or for a movie strip's own sound (packed sounds are written out first).

    ``length``, when not 0: the cut lasts exactly this long (cut there, or filled with silence).
    """
    if compat.is_movie(strip):
        return _movie_sound_cut_request(strip, work_dir, length)
    _require_sound(strip)
    return _sound_cut_request(strip, scene, work_dir, length)


def audio_file_cut_request(path: str, work_dir: str, *, length: float) -> CutAudioRequest:
    """An audio file fitted to ``length`` seconds (cut there, or filled with silence) as a WAV."""
    path = os.path.normpath(bpy.path.abspath(path))
    seconds = _known_sound_seconds(path) or length
    output = pathlib.Path(work_dir) / f"{_slug(pathlib.Path(path).stem)}_{round(length * 1000)}ms.wav"
    return CutAudioRequest(source=path, output=str(output), start=0.0, seconds=seconds, length=length)


def cut_audio_in_process(request: CutAudioRequest) -> PreparedMedia:
    try:
        cut_audio.cut_audio(request)
    except CutError as error:
        raise MediaError(str(error)) from error
    return describe_audio(request.output, is_source_file=False)


def prepare_audio_strip(strip: Any, scene: bpy.types.Scene, work_dir: str, *, hashed: bool = True,
                        length: float = 0.0) -> PreparedMedia:
    """What a sound strip plays, as a file: its own file when it plays all of it, else a WAV cut (blocks).

    ``length``, when not 0: cut to exactly that many seconds (filled with silence if need be).
    """
    _require_sound(strip)
    if not audio_needs_cut(strip, length=length):
        return prepare_audio_file(_sound_source(strip, work_dir), hashed=hashed)
    return cut_audio_in_process(_sound_cut_request(strip, scene, work_dir, length))


def movie_has_audio(strip: Any) -> bool:
    """True when the movie file has a sound stream, or when that cannot be told cheaply (the cut then says).

    Headers only, remembered while the file is unchanged: safe in ``draw()``.
    """
    if not compat.is_movie(strip):
        return False
    seconds = _known_sound_seconds(_strip_file(strip, strip.filepath))
    return seconds is None or seconds > 0


def prepare_movie_audio(strip: Any, scene: bpy.types.Scene, work_dir: str, *, length: float = 0.0) -> PreparedMedia:
    """The movie strip's own sound over its visible range, as a WAV file (blocks); ``length`` as above."""
    return cut_audio_in_process(_movie_sound_cut_request(strip, work_dir, length))


def cut_audio_command(strip: Any, scene: bpy.types.Scene, work_dir: str, *,
                      blender: str = "", length: float = 0.0) -> tuple[list[str], str]:
    """The command line of a background Blender that cuts the strip's sound, and the WAV it writes.

    For a sound strip for which ``audio_needs_cut`` is True, or a movie strip's own sound.
    ``blender`` defaults to ``bpy.app.binary_path`` (empty in the bpy module: use
    ``prepare_audio_strip``/``prepare_movie_audio`` there). Progress lines read with
    ``parse_cut_progress``; the process exits 0 once the WAV is complete, else 1 after a
    ``TALKING_FACE_ERROR <sentence>`` line. Then ``describe_audio(output, is_source_file=False)``
    (bpy-free) gives the PreparedMedia.
    """
    return audio_request_command(audio_cut_request(strip, scene, work_dir, length=length), blender=blender)


def audio_request_command(request: CutAudioRequest, *, blender: str = "") -> tuple[list[str], str]:
    """The command line of a background Blender that carries out ``request``, and the WAV it writes."""
    return _background_cut(_cut_program(blender, "sound"), CUT_AUDIO_SCRIPT, request)
