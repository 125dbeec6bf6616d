"""The benchmark's inputs, made once and cached under bench/.cache/ (gitignored).

* ``long_clip``: 90 s of 1920×1080 at 25 fps, H.264 (ffmpeg's ``testsrc2`` pattern
  with a little temporal noise, so that every frame differs from its neighbours and
  the encoder has camera-like work to do); the trimmed ranges are cut from it.
* ``e2e_clip``: about 100 MiB of 1080p H.264 with AAC sound (10 s at ~84 Mbit/s, heavy
  noise), the source of the end-to-end run, uploaded untouched; the sandbox's result
  is this file again, so it is also the result placed on the timeline.
* ``line_wav``: 10 s of a 440 Hz tone, the audio of the end-to-end run.
* ``transfer_file``: 1 GiB of random bytes for the transfers.

Each file is written under a temporary name and renamed when complete, so an
interrupted run never leaves a broken cache entry.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import CACHE_DIR, GIB, MIB, display_command, run_timed, say

FPS = 25
LONG_SECONDS = 90
E2E_SECONDS = 10
E2E_BITRATE = "81M"  # 10 s at ~84 Mbit/s actual ≈ 100 MiB (x264 overshoots a little)


@dataclass(frozen=True)
class Fixtures:
    long_clip: Path
    e2e_clip: Path
    line_wav: Path
    transfer_file: Path


def cache_path(name: str, recipe: str = "") -> Path:
    """``bench/.cache/<name>``, with a hash of ``recipe`` in the name: a new recipe, a new file."""
    if recipe:
        stem, suffix = os.path.splitext(name)
        name = f"{stem}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}{suffix}"
    return CACHE_DIR / name


def cached(name: str, make: Callable[[Path], None], recipe: str = "") -> Path:
    """The cached file, made by ``make`` first if it is not there yet."""
    path = cache_path(name, recipe)
    if path.is_file():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"partial-{path.name}")
    say(f"making {path.name} (once; cached in bench/.cache/)")
    make(partial)
    os.replace(partial, path)
    return path


SIZE = "size=1920x1080:rate=25"
TONE = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
LONG_CLIP = ("long_1080p25_90s.mp4", f"testsrc2={SIZE},noise=alls=3:allf=t", LONG_SECONDS,
             ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20"), ())
E2E_CLIP = ("e2e_1080p25_100mib.mp4", f"testsrc2={SIZE},noise=alls=8:allf=t+u", E2E_SECONDS,
            ("-c:v", "libx264", "-preset", "ultrafast", "-b:v", E2E_BITRATE, "-maxrate", E2E_BITRATE,
             "-bufsize", E2E_BITRATE, "-c:a", "aac", "-b:a", "128k"), TONE)
ClipSpec = tuple[str, str, int, tuple[str, ...], tuple[str, ...]]


def clip_command(spec: ClipSpec, path: Path) -> list[str]:
    _, source_filter, seconds, encoder, sound = spec
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source_filter, *sound,
            "-t", str(seconds), *encoder, "-pix_fmt", "yuv420p", "-f", "mp4", str(path)]


def commands() -> list[str]:
    """How the cached clips are made, for BENCHMARKS.md."""
    specs = (LONG_CLIP, E2E_CLIP)
    return [display_command(clip_command(spec, cache_path(spec[0], repr(spec)))) for spec in specs]


def ffmpeg_clip(spec: ClipSpec) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        run_timed(clip_command(spec, path), record=False)
    return make


def write_tone(path: Path, seconds: int = 10, rate: int = 48000) -> None:
    frames = b"".join(struct.pack("<h", round(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                      for i in range(seconds * rate))
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)


def write_random(path: Path, size: int = GIB) -> None:
    with open(path, "wb") as out:
        out.writelines(os.urandom(16 * MIB) for _ in range(size // (16 * MIB)))


def prepare() -> Fixtures:
    return Fixtures(
        long_clip=cached(LONG_CLIP[0], ffmpeg_clip(LONG_CLIP), recipe=repr(LONG_CLIP)),
        e2e_clip=cached(E2E_CLIP[0], ffmpeg_clip(E2E_CLIP), recipe=repr(E2E_CLIP)),
        line_wav=cached("line_10s.wav", write_tone),
        transfer_file=cached("transfer_1gib.bin", write_random),
    )
