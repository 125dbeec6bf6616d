"""Real media files for the command-line tests, made by ffmpeg: a test-pattern movie with a tone, and tones.

The CLI's preflight decodes its inputs (ffprobe, or the container's signature), so
these tests need real containers, not random bytes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FFMPEG = shutil.which("ffmpeg")
NO_FFMPEG = "ffmpeg is needed to make real test media"


def ffmpeg(folder: Path, *args: str) -> None:
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", *args], check=True, cwd=folder,
                   stdin=subprocess.DEVNULL)


def write_movie(path: Path, seconds: float = 1.0) -> Path:
    """H.264 + AAC in MP4: a moving test pattern (testsrc2) with a 440 Hz tone."""
    ffmpeg(path.parent, "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def write_tone(path: Path, seconds: float, frequency: int = 220) -> Path:
    """A sine tone, in the container the suffix names (.wav: PCM)."""
    ffmpeg(path.parent, "-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}", str(path))
    return path
