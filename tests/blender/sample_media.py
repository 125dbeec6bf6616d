"""Test media made by Blender itself, and ways to read it back.

Movies: every frame is one solid colour that encodes its index (27 colours from three
levels per channel, far apart enough that H.264's noise never blurs them), rendered by
the sequencer to H.264. Reading a movie back renders its frames to PNG with Blender's
own decoder and turns each centre pixel back into an index.

Sounds: a WAV whose every sample holds its own index (8 kHz, so 3 s fit in 16 bits):
a cut's samples tell exactly which part of the file they came from.

Footage: clips made by ffmpeg (``testsrc2`` with the frame number burnt in) in any size,
rate, container and codec, and read back by ffmpeg: the oracle for cuts is a decoder that
is not Blender's.

Everything uses the installed extension's ``compat`` (passed in), never the repo's files.
"""

from __future__ import annotations

import array
import dataclasses
import json
import math
import pathlib
import shutil
import subprocess
import wave
from types import ModuleType
from typing import Any

import bpy

# Colour strips take display-referred values: 0.2 comes out as byte 51.
LEVELS = (0.0, 0.2, 1.0)
LEVEL_BYTES = (0, 51, 255)
RAMP_RATE = 8000
CONTAINERS = {".mp4": "MPEG4", ".mov": "QUICKTIME", ".mkv": "MKV"}


def frame_colour(index: int) -> tuple[float, float, float]:
    return LEVELS[index % 3], LEVELS[index // 3 % 3], LEVELS[index // 9 % 3]


def frame_index(rgb_bytes: tuple[int, int, int]) -> int:
    """The index a colour encodes (modulo 27), from 8-bit values."""
    levels = [min(range(3), key=lambda level, value=value: abs(LEVEL_BYTES[level] - value))
              for value in rgb_bytes]
    return levels[0] + 3 * levels[1] + 9 * levels[2]


def write_ramp_wav(path: pathlib.Path, seconds: float) -> pathlib.Path:
    """A mono 16-bit WAV at ``RAMP_RATE`` whose sample i holds the value i."""
    assert seconds * RAMP_RATE < 32768, "the index must fit in a 16-bit sample"
    rate = RAMP_RATE
    return _write_mono_wav(path, array.array("h", range(round(seconds * rate))), rate)


def write_sine_wav(path: pathlib.Path, seconds: float, rate: int = 48000) -> pathlib.Path:
    samples = array.array("h", (round(8000 * math.sin(2 * math.pi * 440 * i / rate))
                                for i in range(round(seconds * rate))))
    return _write_mono_wav(path, samples, rate)


def _write_mono_wav(path: pathlib.Path, samples: array.array, rate: int) -> pathlib.Path:
    """A mono 16-bit WAV of ``samples``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return path


def wav_samples(path: str) -> tuple[array.array, int]:
    """The first channel's samples and the rate of a 16-bit WAV."""
    with wave.open(path, "rb") as reader:
        channels, rate = reader.getnchannels(), reader.getframerate()
        data = array.array("h", reader.readframes(reader.getnframes()))
    return data[::channels], rate


def _scratch_scene(compat: ModuleType, name: str, fps: float, size: tuple[int, int]) -> bpy.types.Scene:
    scene = bpy.data.scenes.new(name)
    compat.set_scene_fps(scene, fps)
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    compat.ensure_editor(scene)
    return scene


def make_movie(compat: ModuleType, path: pathlib.Path, *, frames: int, fps: float = 25,
               size: tuple[int, int] = (320, 240), sound: pathlib.Path | None = None) -> pathlib.Path:
    """An H.264 movie (container from the suffix) of ``frames`` colour-coded frames, with ``sound`` muxed in."""
    scene = _scratch_scene(compat, "sample movie", fps, size)
    try:
        for index in range(frames):
            strip = compat.new_effect(scene, f"frame {index}", "COLOR", channel=1, frame_start=index + 1, length=1)
            strip.color = frame_colour(index)
        if sound is not None:
            compat.new_sound(scene, "sound", str(sound), channel=2, frame_start=1)
        scene.frame_start, scene.frame_end = 1, frames
        render = scene.render
        compat.set_ffmpeg_output(render)
        render.ffmpeg.format = CONTAINERS[path.suffix]
        render.ffmpeg.codec = "H264"
        render.ffmpeg.constant_rate_factor = "HIGH"
        render.ffmpeg.audio_codec = "AAC" if sound is not None else "NONE"
        render.filepath = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert bpy.ops.render.render(animation=True, scene=scene.name) == {"FINISHED"}
        assert pathlib.Path(render.frame_path(frame=1)) == path, render.frame_path(frame=1)
    finally:
        bpy.data.scenes.remove(scene)
    return path


def add_stretched_movie(extension: ModuleType, scene: bpy.types.Scene, path: pathlib.Path, *, frame_start: int,
                        channel: int) -> Any:
    """The movie added as the artist adds it with "Adjust Playback Rate": stretched to play in time.

    Called as the extension calls it, with none of its threads running: an operator under a
    context override beside a thread running Python can crash Blender (the extension's ``compat``).
    """
    compat = extension.operators.compat
    before = {strip.as_pointer() for strip in compat.all_strips(scene)}
    with compat.periodic_threads_paused(), compat.sequencer_context_override(scene):
        bpy.ops.sequencer.movie_strip_add(filepath=str(path), frame_start=frame_start, channel=channel, sound=False,
                                          adjust_playback_rate=True, use_framerate=False, set_view_transform=False)
    [added] = [strip for strip in compat.all_strips(scene) if strip.as_pointer() not in before]
    return added


def movie_facts(compat: ModuleType, path: pathlib.Path) -> dict[str, float]:
    """Frame count, size and rate as Blender reads the movie (a fresh strip plays it 1:1)."""
    scene = _scratch_scene(compat, "movie facts", 25, (16, 16))
    try:
        strip = compat.new_movie(scene, "probe", str(path), channel=1, frame_start=1)
        element = strip.elements[0]
        return {"frames": strip.frame_duration, "width": element.orig_width,
                "height": element.orig_height, "fps": strip.fps}
    finally:
        bpy.data.scenes.remove(scene)


def read_frame_indices(compat: ModuleType, path: pathlib.Path, work_dir: pathlib.Path) -> list[int]:
    """The colour index of every frame of the movie, decoded by Blender."""
    return [frame_index(rgb) for rgb in read_frame_colours(compat, path, work_dir)]


def read_frame_colours(compat: ModuleType, path: pathlib.Path,
                       work_dir: pathlib.Path) -> list[tuple[int, int, int]]:
    """The 8-bit centre pixel of every frame of the movie, decoded by Blender."""
    facts = movie_facts(compat, path)
    scene = _scratch_scene(compat, "read frames", facts["fps"], (int(facts["width"]), int(facts["height"])))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        compat.new_movie(scene, "movie", str(path), channel=1, frame_start=1)
        scene.frame_start, scene.frame_end = 1, int(facts["frames"])
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGB"
        scene.render.filepath = str(work_dir / "frame_####")
        assert bpy.ops.render.render(animation=True, scene=scene.name) == {"FINISHED"}
        return [_centre_colour(pathlib.Path(scene.render.frame_path(frame=frame)))
                for frame in range(1, int(facts["frames"]) + 1)]
    finally:
        bpy.data.scenes.remove(scene)


def _centre_colour(png: pathlib.Path) -> tuple[int, int, int]:
    image = bpy.data.images.load(str(png))
    try:
        width, height = image.size
        offset = 4 * (height // 2 * width + width // 2)
        return tuple(round(value * 255) for value in image.pixels[offset:offset + 3])
    finally:
        bpy.data.images.remove(image)


# --- Footage made by ffmpeg, read back by ffmpeg (the oracle: never the code under test) ------------

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
FFMPEG_MISSING = ("ffmpeg and ffprobe are needed to make and check test footage: "
                  "`python3 tools/dev.py test` installs Debian's ffmpeg, or run apt-get install -y ffmpeg")


@dataclasses.dataclass(frozen=True)
class Footage:
    """A clip for the matrix: ``testsrc2`` (moving, coloured, structured) with its frame number burnt in."""

    name: str
    size: tuple[int, int]
    rate: str  # as ffmpeg takes it: "30000/1001"
    frames: int
    suffix: str = ".mp4"
    codec: tuple[str, ...] = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
    sar: str = "1/1"
    rotate: int = 0  # degrees of rotation metadata (a phone held upright)
    image_sequence: bool = False
    vfr: bool = False  # every other frame dropped after the tenth, timestamps kept: a variable rate

    @property
    def fps(self) -> float:
        numerator, _, denominator = self.rate.partition("/")
        return int(numerator) / int(denominator or 1)


def require_ffmpeg() -> None:
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        raise AssertionError(FFMPEG_MISSING)


def _ffmpeg(*arguments: str) -> bytes:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *arguments],
                          capture_output=True, check=False)
    assert done.returncode == 0, f"ffmpeg {' '.join(arguments)} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout


def make_footage(clip: Footage, folder: pathlib.Path) -> pathlib.Path:
    """The clip as a file (or, for an image sequence, its first image), made by ffmpeg."""
    require_ffmpeg()
    folder.mkdir(parents=True, exist_ok=True)
    width, height = clip.size
    font_size = max(16, min(width, height) // 6)
    # testsrc2 makes even sizes only: an odd one is cut from the next even one, in RGB.
    odd = f",format=rgb24,crop={width}:{height}:0:0" if width % 2 or height % 2 else ""
    pattern = (f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={clip.rate},"
               f"drawtext=fontfile={FONT}:text='%{{n}}':fontsize={font_size}:fontcolor=white:"
               f"box=1:boxcolor=black:x=w/8:y=h/8{odd},setsar={clip.sar}")
    if clip.vfr:
        pattern += ",select='lt(n\\,10)+not(mod(n\\,2))'"
    source = ["-f", "lavfi", "-i", pattern, "-frames:v", str(clip.frames), *(("-fps_mode", "vfr") if clip.vfr else ())]
    if clip.image_sequence:
        sequence = folder / clip.name
        sequence.mkdir(exist_ok=True)
        _ffmpeg(*source, "-start_number", "1", str(sequence / "render_%04d.png"))
        return sequence / "render_0001.png"
    path = folder / f"{clip.name}{clip.suffix}"
    if not clip.rotate:
        _ffmpeg(*source, *clip.codec, str(path))
        return path
    upright = folder / f"{clip.name}_unrotated{clip.suffix}"
    _ffmpeg(*source, *clip.codec, str(upright))
    _ffmpeg("-i", str(upright), "-c", "copy", "-metadata:s:v:0", f"rotate={clip.rotate}", str(path))
    return path


def probe_video(path: pathlib.Path) -> dict[str, Any]:
    """ffprobe's view of the first video stream, with its frames counted by decoding them."""
    require_ffmpeg()
    entries = "stream=width,height,nb_read_frames,sample_aspect_ratio,r_frame_rate,avg_frame_rate,codec_name"
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
                           "-show_entries", entries, "-of", "json", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ffprobe {path} failed: {done.stderr}"
    return json.loads(done.stdout)["streams"][0]


def decoded_frame(path: pathlib.Path, index: int, *, rotate: bool = True, chroma_420: bool = False) -> Any:
    """Frame ``index`` (0-based, in decoding order) as an RGB array decoded by ffmpeg.

    ``rotate``: apply the file's rotation metadata, as a player does (and as Blender 4.5+ does).
    ``chroma_420``: through ffmpeg's own 4:2:0 conversion first, the best an H.264 4:2:0 copy
    of an RGB or 4:4:4 picture can be (testsrc2's sharp colour edges lose ~15 dB there).
    """
    import numpy

    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height:stream_side_data=rotation", "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    width, height = stream["width"], stream["height"]
    turned = any(abs(int(side.get("rotation", 0))) % 180 == 90 for side in stream.get("side_data_list", []))
    if rotate and turned:
        width, height = height, width
    raw = _ffmpeg(*(() if rotate else ("-noautorotate",)), "-i", str(path),
                  "-vf", f"select=eq(n\\,{index})" + (",format=yuv420p" if chroma_420 else ""), "-frames:v", "1", "-vsync", "passthrough",
                  "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    assert len(raw) == width * height * 3, f"{path} has no frame {index}"
    return numpy.frombuffer(raw, dtype=numpy.uint8).reshape(height, width, 3)


def psnr(first: Any, second: Any) -> float:
    """Peak signal-to-noise ratio of two 8-bit RGB frames of the same size, in dB."""
    import numpy

    assert first.shape == second.shape, f"frames differ in size: {first.shape} vs {second.shape}"
    error = numpy.mean((first.astype(numpy.float64) - second.astype(numpy.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255.0 ** 2 / error)
