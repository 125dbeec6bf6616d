"""Cut a time range of a file's sound into a 16-bit WAV, on every Blender build.

Used two ways, with one implementation (as ``cut_video``):

- imported as ``operators.cut_audio`` by ``media.prepare_audio_strip``/``prepare_movie_audio``
  to cut in this process (background mode and tests, where blocking is fine);
- run as a script by a background Blender, so the UI never waits on a long file::

      blender -b --factory-startup --python-exit-code 1 --python cut_audio.py -- --source=... \\
          --output=... --start=... --seconds=...

  It prints ``TALKING_FACE_PROGRESS <done> <total>`` lines, then ``TALKING_FACE_DONE
  <samples> <output>`` or ``TALKING_FACE_ERROR <sentence>``.

How the sound is read, best first, chosen by what the build has (never by its version):

1. WAV (integer PCM 8/16/24/32-bit, float 32/64-bit, any channel count): read by the
   standard library, exact to the sample and without bpy (so it may run in a worker thread).
2. Python's ``aud`` (official builds): Audaspace decodes any format FFmpeg reads.
3. Audaspace without ``aud`` (Debian/Ubuntu's Blender): Blender's own mixdown of a
   temporary scene holding only the sound writes the range, a few samples wider, to a
   WAV; step 1 then trims it to the exact samples.
4. No Audaspace at all (the bpy 4.2 wheels): WAV only; other formats are refused in one
   sentence saying what to do.

The result is 16-bit PCM at the source's own rate, mono or stereo (more channels are
mixed down to stereo), written under a ``.partial`` name and renamed when complete.

No ``from __future__ import annotations`` here: run as a script this module is
``__main__`` and dataclasses would look string annotations up in ``sys.modules``.
"""

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import math
import os
import pathlib
import struct
import sys
import wave
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import bpy

if __package__:
    from . import cut_video
else:  # run as a script: there is no package, so the sibling is loaded by path
    _spec = importlib.util.spec_from_file_location("talking_face_cut_video",
                                                   pathlib.Path(__file__).with_name("cut_video.py"))
    cut_video = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(cut_video)

compat = cut_video.compat
lengths = cut_video.lengths
CutError = cut_video.CutError
run_script = cut_video.run_script
script_arguments = cut_video.script_arguments

ProgressCallback = Callable[[int, int], None]

# Samples handled at once: bounds memory whatever the file's length.
BLOCK_FRAMES = 1 << 16
# How much sound ``aud`` decodes per seek: each seek may land one sample off, so blocks are long.
AUD_BLOCK_SECONDS = 60.0
# Scene frames per second of the mixdown scene, at most: a frame must be a whole number of samples.
MIXDOWN_MAX_FPS = 100
MAX_SCENE_FRAME = 1_048_574  # Blender's MAXFRAME
# Frame rate of the scene a sound's length is measured in: 10 ms steps, up to 2.9 hours of sound.
PROBE_FPS = 100

_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# Speaker bits of WAVE_FORMAT_EXTENSIBLE's channel mask, by the side of a stereo image they feed.
_LEFT_SPEAKERS = {0: 1.0, 4: 0.7071, 6: 0.7071, 9: 0.7071, 12: 0.7071, 15: 0.7071}
_RIGHT_SPEAKERS = {1: 1.0, 5: 0.7071, 7: 0.7071, 10: 0.7071, 14: 0.7071, 17: 0.7071}
_CENTRE_SPEAKERS = {2: 0.7071, 8: 0.7071, 11: 0.7071, 13: 0.7071, 16: 0.7071}  # bit 3, the LFE, is left out
# Channel masks of files that do not say (Microsoft's defaults for each channel count).
_DEFAULT_MASKS = {1: 0x4, 2: 0x3, 3: 0x7, 4: 0x33, 5: 0x37, 6: 0x3F, 7: 0x13F, 8: 0x63F}


# --- WAV, with the standard library only (no bpy: safe in a worker thread) ----------------------


@dataclasses.dataclass(frozen=True)
class WavLayout:
    """Where a WAV file's samples are and how they are stored."""

    is_float: bool
    channels: int
    rate: int
    sample_bytes: int  # per channel, as stored
    channel_mask: int
    data_offset: int
    frames: int

    @property
    def frame_bytes(self) -> int:
        return self.sample_bytes * self.channels

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def _riff_chunks(stream: BinaryIO, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, payload offset, payload size) of each chunk after the RIFF header."""
    offset = 12
    while offset + 8 <= end:
        stream.seek(offset)
        kind, size = struct.unpack("<4sI", stream.read(8))
        yield kind, offset + 8, size
        offset += 8 + size + size % 2  # chunks are padded to an even length


def _layout(fmt: bytes, data_offset: int, data_size: int) -> WavLayout | None:
    if len(fmt) < 16:
        return None
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    mask = 0
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
        mask, tag = struct.unpack("<IH", fmt[20:26])  # the sub-format GUID starts with the tag
    if not (channels and rate and block_align) or block_align % channels:
        return None
    sample_bytes = block_align // channels
    supported = (tag == _WAVE_PCM and sample_bytes in (1, 2, 3, 4)) or (tag == _WAVE_FLOAT and sample_bytes in (4, 8))
    if not supported or bits > 8 * sample_bytes:
        return None
    return WavLayout(is_float=tag == _WAVE_FLOAT, channels=channels, rate=rate, sample_bytes=sample_bytes,
                     channel_mask=mask or _DEFAULT_MASKS.get(channels, 0), data_offset=data_offset,
                     frames=data_size // block_align)


def read_wav_layout(path: str) -> WavLayout | None:
    """The layout of a WAV file the standard library can cut, else None (not WAV, or compressed)."""
    try:
        with open(path, "rb") as stream:
            end = os.fstat(stream.fileno()).st_size
            head = stream.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                return None
            fmt = b""
            for kind, offset, size in _riff_chunks(stream, end):
                if kind == b"fmt ":
                    stream.seek(offset)
                    fmt = stream.read(min(size, 64))
                elif kind == b"data":
                    # Writers that stream (size unknown when they start) may leave it too large.
                    return _layout(fmt, offset, min(size, end - offset))
    except (OSError, struct.error):
        return None
    return None


def _stereo_weights(layout: WavLayout) -> Any:
    """(channels × 2) gains that mix the file's speakers to stereo, normalised so nothing clips."""
    import numpy  # shipped with Blender; only needed for more than two channels

    speakers = [bit for bit in range(32) if layout.channel_mask >> bit & 1][:layout.channels]
    weights = numpy.zeros((layout.channels, 2))
    for channel, bit in enumerate(speakers):
        weights[channel] = (_LEFT_SPEAKERS.get(bit, 0.0) + _CENTRE_SPEAKERS.get(bit, 0.0),
                            _RIGHT_SPEAKERS.get(bit, 0.0) + _CENTRE_SPEAKERS.get(bit, 0.0))
    return weights / max(1e-9, weights.sum(axis=0).max())


def _as_floats(raw: bytes, layout: WavLayout) -> Any:
    """Samples as float64 in [-1, 1), shaped (frames, channels)."""
    import numpy

    width = layout.sample_bytes
    if layout.is_float:
        values = numpy.frombuffer(raw, dtype=f"<f{width}").astype(numpy.float64)
    elif width == 1:
        values = (numpy.frombuffer(raw, dtype=numpy.uint8).astype(numpy.float64) - 128.0) / 128.0
    elif width == 3:
        bytes_ = numpy.frombuffer(raw, dtype=numpy.uint8).reshape(-1, 3).astype(numpy.int32)
        values = ((bytes_[:, 0] | bytes_[:, 1] << 8 | bytes_[:, 2] << 16) << 8 >> 8) / float(1 << 23)
    else:
        values = numpy.frombuffer(raw, dtype=f"<i{width}").astype(numpy.float64) / float(1 << (8 * width - 1))
    return values.reshape(-1, layout.channels)


def _pcm16_block(raw: bytes, layout: WavLayout) -> bytes:
    """A block of the file's frames as 16-bit PCM, mono or stereo."""
    if not layout.is_float and layout.sample_bytes == 2 and layout.channels <= 2:
        return raw  # already what is written: copied, bit for bit
    import numpy

    frames = _as_floats(raw, layout)
    if layout.channels > 2:
        frames = frames @ _stereo_weights(layout)
    return numpy.clip(numpy.round(frames * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _output_channels(channels: int) -> int:
    return min(channels, 2)


@contextlib.contextmanager
def _partial_wav(output: str, channels: int, rate: int) -> Iterator[wave.Wave_write]:
    """A 16-bit WAV writer to ``<output>.partial``, renamed to ``output`` only once complete."""
    target = pathlib.Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.partial{target.suffix}")
    try:
        with wave.open(str(partial), "wb") as writer:
            writer.setnchannels(channels)
            writer.setsampwidth(2)
            writer.setframerate(rate)
            yield writer
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def cut_wav(source: str, first: int, total: int, output: str, *,
            on_progress: ProgressCallback | None = None, pad_to: int = 0) -> int:
    """Samples ``[first, first + total)`` of a WAV file as a 16-bit WAV; returns how many were written.

    Pure standard library (and numpy for other sample formats): never touches bpy. Samples
    past the end of the file are not invented: the cut stops there, then silence fills it
    up to ``pad_to`` samples in all (the artist's choice for a sound shorter than its shot).
    """
    layout = read_wav_layout(source)
    if layout is None:
        raise CutError(f"{source} is not a WAV file this cut can read.")
    first = max(0, first)
    total = max(0, min(total, layout.frames - first))
    with open(source, "rb") as stream, _partial_wav(output, _output_channels(layout.channels), layout.rate) as writer:
        stream.seek(layout.data_offset + first * layout.frame_bytes)
        for done in range(0, total, BLOCK_FRAMES):
            count = min(BLOCK_FRAMES, total - done)
            writer.writeframes(_pcm16_block(stream.read(count * layout.frame_bytes), layout))
            if on_progress is not None:
                on_progress(done + count, total)
        silence = _write_silence(writer, pad_to - total)
    return total + silence


def _write_silence(writer: wave.Wave_write, count: int) -> int:
    """``count`` frames of 16-bit silence (none when ``count`` ≤ 0), in blocks; returns how many."""
    frame_bytes = 2 * writer.getnchannels()
    for done in range(0, max(0, count), BLOCK_FRAMES):
        writer.writeframes(bytes(frame_bytes * min(BLOCK_FRAMES, count - done)))
    return max(0, count)


def wav_seconds(path: str) -> float | None:
    """How long a WAV file lasts, exact to the sample, from its header; None when not a WAV."""
    layout = read_wav_layout(path)
    return layout.seconds if layout else None


# --- What is cut ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CutAudioRequest:
    """``seconds`` of the sound of ``source`` from ``start`` (its own time 0 as Blender plays it).

    ``length``, when not 0: the cut lasts exactly this long — shorter than ``seconds`` is cut
    there, longer is filled with silence (``lengths``: the audio fitted to its shot).
    """

    source: str
    output: str
    start: float
    seconds: float
    length: float = 0.0

    def to_args(self) -> list[str]:
        # str() of a float keeps every digit; "--name=value" keeps a "-" value from looking like an option.
        return [f"--{field.name}={getattr(self, field.name)}" for field in dataclasses.fields(self)]

    @classmethod
    def from_args(cls, argv: list[str]) -> "CutAudioRequest":
        parser = argparse.ArgumentParser(prog="cut_audio.py")
        parser.add_argument("--source", required=True)
        parser.add_argument("--output", required=True)
        parser.add_argument("--start", type=float, required=True)
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--length", type=float, default=0.0)
        return cls(**vars(parser.parse_args(argv)))

    def samples(self, rate: int) -> tuple[int, int]:
        """(first, count) of the sound's samples taken, at ``rate``."""
        first, count = max(0, round(self.start * rate)), max(0, round(self.seconds * rate))
        if self.length > 0:
            count = lengths.fitted_samples(count, self.length, rate)[0]
        return first, count

    def length_samples(self, rate: int) -> int:
        """How many samples the cut has in all with ``length`` (silence included); 0 without it."""
        return sum(lengths.fitted_samples(0, self.length, rate)) if self.length > 0 else 0


def no_decoder_sentence(source: str) -> str:
    kind = pathlib.Path(source).suffix.lstrip(".").upper() or "this"
    return (f"This Blender build cannot decode {kind} sound (it has no Audaspace), "
            "so convert the audio to WAV and pick that file, or use Blender's official build.")


# --- Python's aud ----------------------------------------------------------------------------------


def _aud_sample_time(sample: int, rate: int) -> float:
    """Seconds that Audaspace turns back into exactly ``sample``: it truncates ``seconds × rate``."""
    return (sample + 0.25) / rate


def _cut_with_aud(request: CutAudioRequest, on_progress: ProgressCallback | None) -> int:
    """Decode with ``aud``, write with the stdlib.

    ``aud.Sound.write`` fails for some lengths (e.g. 76,800 samples) and can abort the
    whole process while cleaning up after such a failure, and ``Sound.data()`` aborts on a
    file without sound, so the file is checked first and read in blocks with ``data()``.
    """
    import numpy

    aud = importlib.import_module("aud")
    try:
        sound = aud.Sound(request.source)
        rate, channels = int(sound.specs[0]), int(sound.specs[1])
    except aud.error as error:
        raise CutError(f"The file {request.source} has no sound Blender can read.") from error
    if channels > 2:
        sound, channels = sound.rechannel(aud.CHANNELS_STEREO), 2
    first, total = request.samples(rate)
    block = max(1, round(AUD_BLOCK_SECONDS * rate))
    written = 0
    with _partial_wav(request.output, channels, rate) as writer:
        for done in range(0, total, block):
            begin, end = first + done, first + min(total, done + block)
            samples = sound.limit(_aud_sample_time(begin, rate), _aud_sample_time(end, rate)).data()
            # Audaspace reads 16-bit samples as value / 32767: this gives them back exactly.
            writer.writeframes(numpy.clip(numpy.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes())
            written += len(samples)
            if on_progress is not None:
                on_progress(min(total, done + block), total)
        written += _write_silence(writer, request.length_samples(rate) - written)
    return written


# --- Blender's own mixdown (Audaspace in C, no aud) ----------------------------------------------


def _mixdown_fps(rate: int, last_sample: int) -> int:
    """The largest frame rate that divides ``rate`` (frames are whole samples) and reaches ``last_sample``.

    Scene frames stop at ``MAX_SCENE_FRAME``: a cut late in a long file needs longer frames.
    """
    reachable = max(1, MAX_SCENE_FRAME * rate // max(1, last_sample + 2 * rate))
    return next(fps for fps in range(min(MIXDOWN_MAX_FPS, reachable, rate), 0, -1) if rate % fps == 0)


@contextlib.contextmanager
def _sound_scene(source: str, fps: int = 0) -> Iterator[tuple[bpy.types.Scene, Any]]:
    """A temporary scene holding only a sound strip of ``source``, from frame 1; removed afterwards."""
    scene = bpy.data.scenes.new("Talking Face audio cut")
    sound = None
    try:
        if fps:
            compat.set_scene_fps(scene, fps)
        try:
            strip = compat.new_sound(scene, "source", source, channel=1, frame_start=1)
        except RuntimeError as error:
            raise CutError(f"The file {source} has no sound Blender can read.") from error
        sound = strip.sound
        yield scene, strip
    finally:
        bpy.data.scenes.remove(scene)
        if sound is not None and sound.users == 0:
            bpy.data.sounds.remove(sound)


def probe_sound_seconds(source: str) -> float:
    """How long Blender plays the sound of ``source`` (0.0: it has none), to 1/``PROBE_FPS`` s.

    Needs Audaspace; reads the file's header only. Adds a scene while it measures: not for ``draw()``.
    """
    with _sound_scene(source, fps=PROBE_FPS) as (_, strip):
        return strip.frame_duration / PROBE_FPS if compat.sound_rate(strip.sound) > 0 else 0.0


def _mixdown_channels(sound: Any) -> str:
    return "MONO" if getattr(sound, "channels", "") == "MONO" else "STEREO"


def _cut_with_mixdown(request: CutAudioRequest, on_progress: ProgressCallback | None) -> int:
    """Mix the range down with ``bpy.ops.sound.mixdown``, a few samples wide, then trim it exactly.

    The scene runs at a rate where each frame is ``step`` whole samples, and the sound starts
    at frame 1, so the mix's sample ``step + s`` is the sound's sample ``s`` (measured exact).
    The mixdown pads its last block with stale samples: only the range asked for is kept.
    """
    output = pathlib.Path(request.output)
    mixed = output.with_name(f"{output.stem}.mixdown.partial.wav")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _sound_scene(request.source) as (scene, strip):
            rate = compat.sound_rate(strip.sound)
            if rate <= 0:
                raise CutError(f"The file {request.source} has no sound Blender can read.")
            first, total = request.samples(rate)
            fps = _mixdown_fps(rate, first + total)
            step = rate // fps
            compat.set_scene_fps(scene, fps)
            wanted_from = step + first
            scene.frame_start = wanted_from // step
            scene.frame_end = max(scene.frame_start, math.ceil((wanted_from + total) / step) - 1)
            with compat.periodic_threads_paused(), bpy.context.temp_override(scene=scene):
                result = bpy.ops.sound.mixdown(filepath=str(mixed), check_existing=False, container="WAV",
                                               codec="PCM", format="S16", mixrate=rate,
                                               channels=_mixdown_channels(strip.sound))
            if result != {"FINISHED"} or not mixed.is_file():
                raise CutError(f"Blender could not mix down the sound of {request.source}.")
            trim_from = wanted_from - scene.frame_start * step
        return cut_wav(str(mixed), trim_from, total, request.output, on_progress=on_progress,
                       pad_to=request.length_samples(rate))
    finally:
        mixed.unlink(missing_ok=True)


# --- The cut ------------------------------------------------------------------------------------------


def cut_audio(request: CutAudioRequest, *, on_progress: ProgressCallback | None = None) -> int:
    """Write the request's range to ``request.output``; returns how many samples it holds.

    A WAV source never touches bpy (see the module's docstring for the other readers).
    """
    layout = read_wav_layout(request.source)
    if layout is not None:
        first, total = request.samples(layout.rate)
        return cut_wav(request.source, first, total, request.output, on_progress=on_progress,
                       pad_to=request.length_samples(layout.rate))
    if not os.path.isfile(request.source):
        raise CutError(f"The sound file is missing: {request.source}")
    if compat.has_aud_module() and not _is_ogg_opus(request.source):
        return _cut_with_aud(request, on_progress)
    if compat.has_audio_support():
        return _cut_with_mixdown(request, on_progress)
    raise CutError(no_decoder_sentence(request.source))


def _is_ogg_opus(path: str) -> bool:
    """Opus in Ogg: after a seek ``aud`` lands its pre-skip (312 samples) early and garbles the start,
    measured on 4.5 and 5.0, so such sound is cut by Blender's mixdown, which plays it exactly."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError:
        return False
    return head.startswith(b"OggS") and b"OpusHead" in head


def main(argv: list[str]) -> int:
    """Script entry: cut as the arguments say, printing progress lines; 0 on success."""
    return run_script(cut_audio, CutAudioRequest.from_args(argv))


if __name__ == "__main__":
    sys.exit(main(script_arguments(sys.argv)))
