"""A shot as plain data: what one job sends, where its result lands, what it costs — no ``bpy``.

``timeline.read_shot`` reads a ``Shot`` from Blender once; from then on planning, the
estimate, the content key, the cut and placement work from it, so a job is what the
timeline showed when it was started, whatever is edited afterwards. A ``Shot`` goes into a
job record's owner data as ``to_dict()`` and comes back with ``from_dict()``.

Frames are 0-based source frames, ``[first, end)``; the slot is in scene frames.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..newport_api.models import estimate_credits
from . import lengths

MOVIE = "MOVIE"
IMAGES = "IMAGES"
AUDIO_STRIP, AUDIO_FILE, AUDIO_MOVIE = "STRIP", "FILE", "MOVIE"


@dataclass(frozen=True)
class Span:
    """Where the strip's content and visible part lie on the timeline (``cut_video.StripSpan``'s fields)."""

    content_start: int
    content_length: int
    visible_start: int
    visible_end: int
    hold_start: int
    hold_end: int


@dataclass(frozen=True)
class Source:
    """The picture: the file(s) it comes from and the source frames the strip shows."""

    strip: str  # the strip's name: placement copies its look while it exists
    kind: str  # MOVIE or IMAGES
    path: str  # the movie file, or an image sequence's first image
    first: int  # the visible source frames: [first, end)
    end: int
    fps: float  # the source's rate (an image sequence plays at the scene's)
    width: int  # the source's picture size (0 when Blender cannot read it)
    height: int
    colorspace: str
    frame_count: int  # frames in the whole source (the movie's track, or the images)
    span: Span
    whole_file: bool = False  # shows all of an mp4/mov: uploaded as it is unless the picture is extended
    images: tuple[str, ...] = ()  # an image sequence: every image's file name, in ``path``'s folder

    @property
    def frames(self) -> int:
        return self.end - self.first

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0

    def needs_cut(self, extend: str = "") -> bool:
        """False when the whole file goes as it is; an extended picture (``lengths``) is always cut."""
        return self.kind == IMAGES or bool(extend) or not self.whole_file

    def image_paths(self, first: int, end: int) -> list[str]:
        folder = os.path.dirname(self.path)
        return [os.path.normpath(os.path.join(folder, name)) for name in self.images[first:end]]

    def key_inputs(self, extend: str = "", frames: int = 0) -> tuple[list[str], dict[str, Any]]:
        """The files the picture comes from and what is taken from them: the inputs of its content key.

        ``extend``/``frames``: the picture extended to ``frames`` (another picture, so another key).
        """
        if not self.needs_cut(extend):
            return [self.path], {"whole_file": True}
        selection: dict[str, Any] = {"frames": [self.first, self.end], "fps": round(self.fps, 6),
                                     "size": [self.width, self.height], "colorspace": self.colorspace}
        if extend:
            selection["extend"] = [extend, frames]
        if self.kind == IMAGES:
            return self.image_paths(self.first, self.end), selection
        return [self.path], selection


@dataclass(frozen=True)
class Audio:
    """The speech: a sound strip's visible part, an audio file, or the movie's own sound over the shot."""

    kind: str  # STRIP, FILE or MOVIE
    path: str  # the file the sound is taken from ('' for a packed sound or nothing chosen)
    strip: str = ""  # the sound strip's (MOVIE: the movie strip's) name
    offset: float = 0.0  # seconds into ``path`` where the part spoken starts
    seconds: float | None = None  # how long that part lasts; None when it cannot be told cheaply
    whole_file: bool = False  # a sound strip playing all of its unpacked file, in a format sent as it is
    packed: bool = False  # a sound packed into the .blend: written out when the job is planned

    def needs_cut(self, length: float = 0.0) -> bool:
        """False when ``path`` is sent as it is: an audio file, or a strip's whole file, at its own length."""
        if length > 0:
            return True
        return self.kind == AUDIO_MOVIE or (self.kind == AUDIO_STRIP and not self.whole_file)

    @property
    def name(self) -> str:
        if self.kind == AUDIO_FILE:
            return os.path.basename(self.path)
        return "own sound" if self.kind == AUDIO_MOVIE else self.strip


@dataclass(frozen=True)
class Slot:
    """Where the result lands: above the shot's strips, from its first visible frame."""

    scene: str
    channel: int  # the source strip's channel
    start: int  # the source's first visible frame on the timeline
    length: int  # its visible length, in scene frames
    floor_channel: int  # the highest channel of the strips the result goes above (the source, its sound strip)
    sources: tuple[str, ...]  # those strips' names (muted once the result is placed, when asked)
    meta: str = ""  # the meta strip the source is in (the result goes in beside it); '' at the top level


@dataclass(frozen=True)
class Options:
    """How the result is made, and the settings kept on its take so that Redo makes it the same way."""

    width: int = 0
    height: int = 0
    enhance: bool = False
    fps_mode: str = "25"
    vocals: str = ""  # an absolute path, or ''
    longer_audio: str = lengths.AS_IS
    shorter_audio: str = lengths.SHORTER
    new_take: bool = False  # pay again even when an identical job was paid for
    mute_sources: bool = True
    kept: dict[str, Any] = field(default_factory=dict)  # the take's options (JSON-able), see ``job_setup``

    @property
    def fps_original(self) -> bool:
        return self.fps_mode == "ORIGINAL"


@dataclass(frozen=True)
class Shot:
    source: Source | None  # None: the strip shows no picture that can be sent (``reason`` says so)
    audio: Audio | None
    slot: Slot
    options: Options = Options()
    reason: str | None = None  # one sentence on why the shot cannot run; None when it can

    @property
    def name(self) -> str:
        return self.source.strip if self.source is not None else self.slot.sources[0]

    @property
    def audio_name(self) -> str:
        return self.audio.name if self.audio is not None else "—"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shot:
        source = data.get("source")
        if source is not None:
            source = Source(**{**_known(Source, source), "span": Span(**source["span"]),
                               "images": tuple(source.get("images", ()))})
        audio = data.get("audio")
        slot = data["slot"]
        return cls(source=source, audio=Audio(**_known(Audio, audio)) if audio is not None else None,
                   slot=Slot(**{**_known(Slot, slot), "sources": tuple(slot["sources"])}),
                   options=Options(**_known(Options, data.get("options", {}))), reason=data.get("reason"))


def _known(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields ``kind`` has: a record written by a newer version may carry more."""
    names = {item.name for item in fields(kind)}
    return {name: value for name, value in data.items() if name in names}


# -- what it costs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    video_seconds: float
    audio_seconds: float | None  # None when it cannot be told cheaply
    source_fps: float
    credits: float
    billed_seconds: float = 0.0  # the result's length: the audio as sent, after the length choice
    length_choice: str = ""  # the choice that changes what is sent ('' when both go as they are)

    @property
    def durations_differ(self) -> bool:
        return lengths.durations_differ(self.video_seconds, self.audio_seconds)


def length_plan(shot: Shot) -> lengths.LengthPlan:
    """What is sent for the shot once its length choice is applied (a shot that can run)."""
    audio_seconds = shot.audio.seconds if shot.audio is not None else None
    return lengths.plan_lengths(shot.source.frames, shot.source.fps, audio_seconds,
                                longer_audio=shot.options.longer_audio, shorter_audio=shot.options.shorter_audio)


def estimate(shot: Shot) -> Estimate | None:
    """Credits for the shot: the result lasts as long as the audio sent. None when it cannot run."""
    if shot.reason is not None or shot.source is None:
        return None
    fit = length_plan(shot)
    credits = estimate_credits(fit.billed_seconds, fps_original=shot.options.fps_original,
                               source_fps=shot.source.fps)
    return Estimate(shot.source.seconds, shot.audio.seconds if shot.audio else None, shot.source.fps, credits,
                    billed_seconds=fit.billed_seconds, length_choice=fit.applied)
