"""When the audio and the shot last differently: what is sent, worked out before anything is uploaded.

The artist chooses, per job (or batch), what happens when the audio is longer than the
shot's visible range — send both as they are, extend the picture (hold its last frame,
loop it, or play it forward then backward) or cut the audio at the shot's end — and
when it is shorter — a shorter result, or silence to fill the shot. Everything is done
locally, so the estimate is the bill.

Pure arithmetic, no ``bpy``: also loaded by path from ``cut_video``/``cut_audio`` run as
scripts in a background Blender. Frames are 0-based source frames; ``[first, end)``.
"""

import dataclasses
import math

AS_IS = "AS_IS"
HOLD = "HOLD"
LOOP = "LOOP"
PINGPONG = "PINGPONG"
CUT_AUDIO = "CUT_AUDIO"
SHORTER = "SHORTER"
SILENCE = "SILENCE"
PICTURE_EXTENSIONS = (HOLD, LOOP, PINGPONG)
LONGER_AUDIO_CHOICES = (AS_IS, *PICTURE_EXTENSIONS, CUT_AUDIO)
SHORTER_AUDIO_CHOICES = (SHORTER, SILENCE)
# (identifier, name, description): the settings' items in the panel and on the batch operator.
LONGER_AUDIO_ITEMS = (
    (AS_IS, "Send As They Are", "Send the shot and the audio as they are; the service decides"),
    (HOLD, "Hold Last Frame", "Extend the picture by holding the shot's last frame until the audio ends"),
    (LOOP, "Loop", "Extend the picture by playing the shot again from its start until the audio ends"),
    (PINGPONG, "Ping-Pong", "Extend the picture by playing the shot backward, then forward, until the audio ends"),
    (CUT_AUDIO, "Cut the Audio", "Cut the audio at the shot's end"),
)
SHORTER_AUDIO_ITEMS = (
    (SHORTER, "Shorter Result", "The result lasts as long as the audio"),
    (SILENCE, "Fill with Silence", "Add silence after the audio so the result lasts as long as the shot"),
)
# Below this the lengths count as equal: a sound strip and a movie rarely end on the same sample.
TOLERANCE_SECONDS = 0.05
# A frame rate times seconds lands a hair above a whole number (0.6 s × 25 = 15.000000000000002).
_ROUNDING = 1e-6


def durations_differ(video_seconds: float, audio_seconds: float | None) -> bool:
    return audio_seconds is not None and abs(audio_seconds - video_seconds) > TOLERANCE_SECONDS


def frames_to_cover(seconds: float, fps: float) -> int:
    """The fewest whole frames at ``fps`` lasting at least ``seconds``: the picture never ends before the speech."""
    return max(0, math.ceil(seconds * fps - _ROUNDING))


def source_frame(mode: str, first: int, end: int, index: int) -> int:
    """The source frame shown at output frame ``index`` when ``[first, end)`` is extended by ``mode``.

    The visible range plays once as it is; then HOLD keeps its last frame, LOOP starts it
    again, PINGPONG plays it backward and forward again without showing the turning
    frames twice (3 4 5 4 3 4 5 …).
    """
    count = end - first
    if count < 1:
        raise ValueError(f"an empty range [{first}, {end}) cannot be extended")
    if index < count:
        return first + index
    if mode == HOLD or count == 1:
        return end - 1
    if mode == LOOP:
        return first + index % count
    if mode == PINGPONG:
        position = index % (2 * count - 2)
        return first + (position if position < count else 2 * count - 2 - position)
    raise ValueError(f"unknown picture extension {mode!r}")


def source_order(mode: str, first: int, end: int, total: int) -> list[int]:
    """The source frames of all ``total`` output frames, in the order they are shown."""
    return [source_frame(mode, first, end, index) for index in range(total)]


@dataclasses.dataclass(frozen=True)
class Run:
    """``count`` output frames showing source frames ``first``, ``first + step``, … (step -1, 0 or +1)."""

    first: int
    count: int
    step: int

    @property
    def frames(self) -> list[int]:
        return [self.first + self.step * index for index in range(self.count)]

    @property
    def lowest(self) -> int:
        """The lowest source frame the run shows."""
        return min(self.first, self.first + self.step * (self.count - 1))


def group_runs(order: list[int]) -> list[Run]:
    """The fewest runs, greedily from the start, that show ``order``: one strip each in a cut."""
    runs: list[Run] = []
    index = 0
    while index < len(order):
        step = order[index + 1] - order[index] if index + 1 < len(order) else 0
        if abs(step) > 1:
            step = 0
        count = 1
        while index + count < len(order) and order[index + count] - order[index + count - 1] == step:
            count += 1
        runs.append(Run(order[index], count, step))
        index += count
    return runs


def extension_runs(mode: str, first: int, end: int, total: int) -> list[Run]:
    """The runs of ``[first, end)`` extended by ``mode`` to ``total`` frames."""
    return group_runs(source_order(mode, first, end, total))


# --- Audio: cut short or filled with silence ----------------------------------------------------------


def fitted_samples(available: int, length: float, rate: int) -> tuple[int, int]:
    """(samples taken from the sound, samples of silence after them) for a sound lasting exactly ``length`` s.

    ``available``: how many samples the sound offers from where the cut starts.
    """
    wanted = max(0, round(length * rate))
    taken = min(max(0, available), wanted)
    return taken, wanted - taken


# --- The artist's choice, applied to one shot --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LengthPlan:
    """What is sent for one shot, and what it costs in seconds.

    ``applied``: the choice that changed what is sent ('' when both go as they are).
    ``video_frames``: with a picture extension, the frames the sent video has in all.
    ``audio_length``: when not 0, the sent audio lasts exactly this long (cut, or filled with silence).
    ``billed_seconds``: the length of the result the service bills: the sent audio's.
    """

    applied: str
    video_frames: int
    audio_length: float
    billed_seconds: float

    @property
    def extends_picture(self) -> bool:
        return self.applied in PICTURE_EXTENSIONS


def plan_lengths(visible_frames: int, fps: float, audio_seconds: float | None, *,
                 longer_audio: str = AS_IS, shorter_audio: str = SHORTER) -> LengthPlan:
    """Apply the artist's choice to a shot of ``visible_frames`` at ``fps`` and audio of ``audio_seconds``.

    An audio of unknown length (None) is sent as it is and billed by the shot's length.
    """
    if longer_audio not in LONGER_AUDIO_CHOICES or shorter_audio not in SHORTER_AUDIO_CHOICES:
        raise ValueError(f"unknown length choice {longer_audio!r}/{shorter_audio!r}")
    video_seconds = visible_frames / fps if fps > 0 else 0.0
    as_is = LengthPlan("", 0, 0.0, audio_seconds if audio_seconds is not None else video_seconds)
    if not durations_differ(video_seconds, audio_seconds) or visible_frames < 1:
        return as_is
    if audio_seconds > video_seconds:
        if longer_audio in PICTURE_EXTENSIONS:
            return LengthPlan(longer_audio, frames_to_cover(audio_seconds, fps), 0.0, audio_seconds)
        if longer_audio == CUT_AUDIO:
            return LengthPlan(CUT_AUDIO, 0, video_seconds, video_seconds)
        return as_is
    if shorter_audio == SILENCE:
        return LengthPlan(SILENCE, 0, video_seconds, video_seconds)
    return as_is
