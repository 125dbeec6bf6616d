"""The command line's preflight: everything that can be refused before a byte is sent.

Each check raises ``Refusal`` with one sentence in the command line's own terms
(flags, paths).  Media are recognised by ffprobe when it is on PATH and by their
container's magic bytes otherwise, so a text file, an empty file or a video given
as ``--audio`` never costs an upload, let alone a credit.  Part of the command
line: not shipped in the extension's zip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .jobs import is_url

MAX_SIZE = 4096  # the largest output width or height accepted (as in the extension's panel)
SNIFF_BYTES = 4096
FFPROBE_SECONDS = 30.0
# ISO-BMFF brands of audio-only files; every other ftyp brand is taken for a movie.
AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ")
# ffprobe reads any text file as an "ansi" video (format "tty"), and images as one-frame videos.
NOT_MOVIE_FORMATS = frozenset({"tty", "image2", "apng", "gif", "webp"})
TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
AUDIO_SUFFIXES = (".m4a", ".m4b", ".aac", ".mka", ".oga", ".ogg", ".opus", ".weba")
PROBE_ENTRIES = "format=format_name,duration:stream=codec_type,codec_name,avg_frame_rate:stream_disposition=attached_pic"


class Refusal(Exception):
    """A reason to stop before any request; ``str()`` is the sentence to print."""


@dataclass(frozen=True)
class MediaFacts:
    kinds: frozenset[str]  # "video" and/or "audio": what the file holds
    duration: float | None = None  # seconds, when ffprobe could tell
    fps: float | None = None
    source: str = "sniffing"  # "ffprobe" or "sniffing": how it was recognised


def check_input(flag: str, source: str, wanted: str) -> MediaFacts | None:
    """Refuse a local input that is missing, empty or not ``wanted`` media; URLs pass unexamined."""
    if is_url(source):
        return None
    path = Path(source).expanduser()
    if not path.exists():
        raise Refusal(f"{flag} {source}: no such file — check the path.")
    if not path.is_file():
        raise Refusal(f"{flag} {source}: is a folder, not a file — name the {wanted} file itself.")
    if not os.access(path, os.R_OK):
        raise Refusal(f"{flag} {source}: cannot be read (permissions) — check who owns it.")
    if path.stat().st_size == 0:
        raise Refusal(f"{flag} {source}: the file is empty — export it again.")
    facts = probe(path)
    if wanted not in facts.kinds:
        found = " and ".join(sorted(facts.kinds)) or "neither video nor audio"
        raise Refusal(f"{flag} {source}: this is not {article(wanted)} file ({found} found by "
                      f"{facts.source}) — pass {article(wanted)} file to {destination(flag)}.")
    if wanted == "audio" and "video" in facts.kinds:
        raise Refusal(f"{flag} {source}: this is a movie, not an audio file — extract its sound "
                      f"(e.g. ffmpeg -i {path.name} -vn line.wav) and pass that to {destination(flag)}.")
    return facts


def article(kind: str) -> str:
    return "an audio" if kind == "audio" else "a video"


def destination(flag: str) -> str:
    """Where a file is given: an option (``--audio``) or a manifest's column (``audio``)."""
    return flag if flag.startswith("-") else f"the {flag} column"


def check_output(output: str, inputs: list[str], *, force: bool, flag: str = "-o") -> Path:
    """Return the output's absolute path, or refuse one that is a folder, an input or not writable."""
    target = Path(output).expanduser().absolute()
    if output.endswith(("/", os.sep)) or target.is_dir():
        raise Refusal(f"{flag} {output}: is a folder — name the file to write, e.g. "
                      f"{flag} {Path(output) / 'result.mp4'}.")
    for source in inputs:
        if source and not is_url(source) and same_file(target, Path(source).expanduser()):
            raise Refusal(f"{flag} {output}: is also an input — write the result to another file.")
    if target.exists() and not force:
        raise Refusal(f"{flag} {output}: the file already exists — pass --force to overwrite it, or choose "
                      "another name.")
    folder = target.parent
    if not folder.is_dir():
        raise Refusal(f"{flag} {output}: the folder {folder} does not exist — create it first.")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise Refusal(f"{flag} {output}: cannot write there (permissions) — choose another folder.")
    return target


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_size(width: int, height: int, flags: tuple[str, str] = ("--width", "--height")) -> None:
    for flag, value in zip(flags, (width, height), strict=True):
        if not 0 <= value <= MAX_SIZE:
            raise Refusal(f"{flag} {value}: must be 0 (keep the source's) or up to {MAX_SIZE} pixels.")


def check_positive(flag: str, value: float) -> None:
    if not value > 0:
        raise Refusal(f"{flag} {value:g}: must be more than 0.")


# -- recognising media ------------------------------------------------------------------------------


def probe(path: Path) -> MediaFacts:
    """What the file holds: ffprobe's answer when it is installed, else the container's signature."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        return ffprobe_facts(ffprobe, path)
    return MediaFacts(kinds=sniff(path))


def ffprobe_facts(ffprobe: str, path: Path) -> MediaFacts:
    command = [ffprobe, "-v", "error", "-of", "json", "-show_entries",
               PROBE_ENTRIES, str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FFPROBE_SECONDS,
                              stdin=subprocess.DEVNULL, check=False)
        report = json.loads(done.stdout or "{}") if done.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        report = {}
    container = str(report.get("format", {}).get("format_name", ""))
    if container in NOT_MOVIE_FORMATS or container.endswith("_pipe"):
        report = {}  # text shown as "video" (tty), or a still image
    streams = [stream for stream in report.get("streams", []) if isinstance(stream, dict)
               and stream.get("codec_name") not in TEXT_ART_CODECS
               and not (stream.get("disposition") or {}).get("attached_pic")]  # cover art is not a movie
    kinds = {stream.get("codec_type") for stream in streams}
    video = next((stream for stream in streams if stream.get("codec_type") == "video"), {})
    return MediaFacts(kinds=frozenset(kinds & {"video", "audio"}), source="ffprobe",
                      duration=_number(report.get("format", {}).get("duration")),
                      fps=_rate(video.get("avg_frame_rate")))


def sniff(path: Path) -> frozenset[str]:
    """The kinds a container can hold, from its first bytes (no decoding: a best effort without ffprobe)."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    suffix = path.suffix.lower()
    if head[4:8] == b"ftyp":
        return frozenset({"audio"}) if head[8:12] in AUDIO_BRANDS or suffix in AUDIO_SUFFIXES else MOVIE
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return MOVIE
    if head[:4] == b"\x1a\x45\xdf\xa3":  # Matroska / WebM
        return frozenset({"audio"}) if suffix in AUDIO_SUFFIXES else MOVIE
    if head[:4] == b"RIFF":
        return {b"WAVE": AUDIO, b"AVI ": MOVIE}.get(head[8:12], NOTHING)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return AUDIO
    if head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3" or _mpeg_audio_sync(head):
        return AUDIO
    if head[:3] == b"FLV" or head[:4] == b"\x00\x00\x01\xba" or _transport_stream(head):
        return MOVIE
    return NOTHING


MOVIE = frozenset({"video", "audio"})  # a movie container: video, usually with sound
AUDIO = frozenset({"audio"})
NOTHING: frozenset[str] = frozenset()


def _mpeg_audio_sync(head: bytes) -> bool:
    """An MP3 frame or an ADTS (AAC) header at the very start."""
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _transport_stream(head: bytes) -> bool:
    return len(head) > 376 and head[0] == head[188] == head[376] == 0x47


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _rate(text: object) -> float | None:
    if not isinstance(text, str) or "/" not in text:
        return _number(text)
    numerator, _, denominator = text.partition("/")
    top, bottom = _number(numerator), _number(denominator)
    return top / bottom if top and bottom else None
