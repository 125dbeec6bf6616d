"""From the artist's settings to a job: what to send, whether it can be sent, what it costs.

Everything here reads Blender state on the main thread.  ``blocking_reason``
is cheap enough for ``poll()`` and ``draw()``; ``plan_job`` does the real
preparation work (cutting the strip's visible range) and is only called when
the artist presses Generate.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import bpy

from ..newport_api import JobRecord, estimate_credits
from . import compat, lengths, media, placement
from .addon import credentials, network_blocking_reason, preferences, user_folder
from .controller import get_controller
from .job_inputs import add_video, check_sendable, check_upload_size
from .preparation import PreparationPlan

RESULT_SUFFIX = ".mp4"
CUT_CACHE_DAYS = 7
# Which strips to use, not how to make the result: a take keeps its audio apart, and New Take is a one-off.
SETTINGS_NOT_KEPT = frozenset({"rna_type", "name", "video_strip", "audio_source", "audio_strip", "audio_file",
                               "regenerate"})


# -- what the settings point at ----------------------------------------------------

@dataclass(frozen=True)
class AudioChoice:
    kind: str  # "STRIP", "FILE" or "MOVIE"
    strip: bpy.types.Sequence | None = None
    path: str = ""


@dataclass(frozen=True)
class LengthChoice:
    """What the artist wants when the audio and the shot last differently (see ``lengths``)."""

    longer_audio: str = lengths.AS_IS
    shorter_audio: str = lengths.SHORTER


def settings(context: bpy.types.Context):
    return context.scene.talking_face


def length_choice(context: bpy.types.Context, options=None) -> LengthChoice:
    """The panel's length choice, or that of ``options`` read like the panel's settings (a take's)."""
    options = options if options is not None else settings(context)
    return LengthChoice(options.longer_audio, options.shorter_audio)


def video_strip(context: bpy.types.Context):
    """The chosen movie strip, or the active strip when none is chosen."""
    scene = context.scene
    if scene.sequence_editor is None:
        return None
    name = settings(context).video_strip
    if name:
        return compat.all_strips(scene).get(name)
    active = scene.sequence_editor.active_strip
    source = _source_of_result(scene, active)
    if source is not None:  # a placed result is active: its source again, which an identical job reuses
        return source
    return active if media.is_video_strip(active) else None


def _source_of_result(scene: bpy.types.Scene, strip) -> bpy.types.Sequence | None:
    if strip is None:
        return None
    source = strip.get(placement.SOURCE_PROPERTY)  # a take names its source, even once its job is dismissed
    if not source:
        record = get_controller().views.get(strip.get(placement.JOB_PROPERTY, ""))
        source = record.owner.get("source_strip", "") if record else ""
    return compat.all_strips(scene).get(source) if source else None


def audio_choice(context: bpy.types.Context) -> AudioChoice:
    options = settings(context)
    if options.audio_source == "MOVIE":
        return AudioChoice("MOVIE", strip=video_strip(context))
    if options.audio_source == "STRIP" and options.audio_strip and context.scene.sequence_editor:
        return AudioChoice("STRIP", strip=compat.all_strips(context.scene).get(options.audio_strip))
    return AudioChoice("FILE", path=bpy.path.abspath(options.audio_file) if options.audio_file else "")


def blocking_reason(context: bpy.types.Context, *, include_network: bool = True) -> str | None:
    """One sentence on why Generate cannot run, or None when it can."""
    reason = _inputs_blocking_reason(context)
    if reason is None and include_network:
        reason = network_blocking_reason()
    return reason


def _inputs_blocking_reason(context: bpy.types.Context) -> str | None:
    if context.scene is None or not hasattr(context.scene, "talking_face"):
        return "Open a scene with a Video Sequencer to use Talking Face."
    strip = video_strip(context)
    name = settings(context).video_strip
    if strip is None:
        return (f"There is no strip called '{name}' — pick the movie strip again." if name
                else "Select a movie strip (or pick one in the panel) to lip-sync.")
    return shot_blocking_reason(context, strip, audio_choice(context))


def shot_blocking_reason(context: bpy.types.Context, strip, choice: AudioChoice) -> str | None:
    """One sentence on why this strip cannot be lip-synced to ``choice``, or None (no network check)."""
    if not media.is_video_strip(strip):
        return f"'{strip.name}' is not a movie strip — pick a movie or image-sequence strip to lip-sync."
    if not os.path.isfile(media.video_file(strip)):
        return f"The movie file of '{strip.name}' is missing — relink it, then try again."
    return _audio_blocking_reason(context, choice)


def _audio_blocking_reason(context: bpy.types.Context, choice: AudioChoice) -> str | None:
    options = settings(context)
    if choice.kind == "STRIP":
        if choice.strip is None:
            return f"There is no strip called '{options.audio_strip}' — pick the sound strip again."
        if not compat.is_sound(choice.strip):
            return f"'{choice.strip.name}' is not a sound strip — pick a sound strip for the audio."
    elif choice.kind == "FILE":
        if not choice.path:
            return "Pick the audio to speak: a sound strip or an audio file."
        if not os.path.isfile(choice.path):
            return f"The audio file '{choice.path}' does not exist — pick it again."
    elif choice.strip is not None and not media.movie_has_audio(choice.strip):
        return f"The movie in '{choice.strip.name}' has no sound — pick a sound strip or an audio file."
    if options.vocals_file and not os.path.isfile(bpy.path.abspath(options.vocals_file)):
        return f"The vocals file '{options.vocals_file}' does not exist — pick it again or clear it."
    return None


# -- cost ---------------------------------------------------------------------------

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


def estimate(context: bpy.types.Context, strip=None, audio: AudioChoice | None = None,
             choice: LengthChoice | None = None) -> Estimate | None:
    """Credits for the job as it stands (or for ``strip`` with ``audio``): the result follows the sent audio's length.

    ``choice``: what to do when the lengths differ; by default the panel's.
    """
    if strip is None:
        if _inputs_blocking_reason(context) is not None:
            return None
        strip, audio = video_strip(context), audio_choice(context)
    elif shot_blocking_reason(context, strip, audio) is not None:
        return None
    fit = length_plan(context, strip, audio, choice)
    audio_seconds = _audio_seconds(context, audio)
    source_fps = media.strip_source_fps(strip)
    fps_original = settings(context).fps_mode == "ORIGINAL"
    return Estimate(media.visible_seconds(strip, context.scene), audio_seconds, source_fps,
                    estimate_credits(fit.billed_seconds, fps_original=fps_original, source_fps=source_fps),
                    billed_seconds=fit.billed_seconds, length_choice=fit.applied)


def length_plan(context: bpy.types.Context, strip, audio: AudioChoice,
                choice: LengthChoice | None = None) -> lengths.LengthPlan:
    """What is sent for the shot once the artist's length choice (by default the panel's) is applied."""
    choice = choice or length_choice(context)
    return lengths.plan_lengths(media.visible_frames(strip), media.strip_source_fps(strip),
                                _audio_seconds(context, audio), longer_audio=choice.longer_audio,
                                shorter_audio=choice.shorter_audio)


def _audio_seconds(context: bpy.types.Context, choice: AudioChoice) -> float | None:
    if choice.strip is not None:  # a sound strip, or the movie's own sound: its visible part
        return media.visible_seconds(choice.strip, context.scene)
    return media.audio_file_seconds(choice.path) if choice.path else None


# -- the job --------------------------------------------------------------------------

def output_folder() -> Path:
    """The artist's output folder; an unsaved file's '//' falls back to the user folder."""
    prefs = preferences()
    folder = prefs.output_dir if prefs else "//talking_face/"
    if folder.startswith("//") and not bpy.data.filepath:
        return user_folder("results")
    return Path(bpy.path.abspath(folder or "//talking_face/"))


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "clip"


def background_cut_program() -> str:
    """The Blender program that cuts clips without freezing this one ('' inside the bpy module).

    ``TALKING_FACE_BLENDER`` names another program (pipelines, tests); else this Blender itself.
    """
    program = os.environ.get("TALKING_FACE_BLENDER", "") or bpy.app.binary_path
    return program if program and os.path.isfile(program) else ""


def plan_job(context: bpy.types.Context, *, cut_program: str = "", defer: bool = False,
             strip=None, audio: AudioChoice | None = None, lengths_choice: LengthChoice | None = None,
             options=None, new_take: bool = False) -> tuple[JobRecord, PreparationPlan | None]:
    """Describe the job and prepare what is cheap; raises ``media.MediaError`` with a sentence.

    With ``defer`` (a window is open), work that grows with the files' size is not done here:
    it is returned as a ``PreparationPlan`` (also kept in ``owner["prepare"]``) for the
    controller to carry out off the main thread — a strip that needs cutting is cut by
    ``cut_program`` in a background process, and the video is described and hashed there.
    Without ``defer`` everything is done now and the plan is None.

    ``strip`` and ``audio`` name the shot (a batch), ``lengths_choice`` what to do when they
    last differently; by default the panel's choices. ``options`` read like the panel's settings
    (a take's stored ones, to redo it); by default the panel's. ``new_take``: a new result even
    when an identical job was already paid for.
    """
    scene = context.scene
    strip = strip if strip is not None else video_strip(context)
    choice = audio if audio is not None else audio_choice(context)
    options = options if options is not None else settings(context)
    lengths_choice = lengths_choice or length_choice(context, options)
    fit = length_plan(context, strip, choice, lengths_choice)
    extension = {"extend": fit.applied, "frames": fit.video_frames} if fit.extends_picture else {}
    record = JobRecord(video="", audio="", output_path="", label=f"{strip.name} (Talking Face)")
    work_dir = user_folder("work", record.job_id)
    audio, audio_command = _prepare_audio(context, choice, str(work_dir), defer=defer, cut_program=cut_program,
                                          length=fit.audio_length)
    check_sendable(audio, "audio")
    record.audio = audio.path
    record.vocals = bpy.path.abspath(options.vocals_file) if options.vocals_file else ""
    if record.vocals:
        check_upload_size(record.vocals, "vocals file")
    record.width, record.height = options.video_width, options.video_height
    record.enhance = options.enhance
    record.fps_original = options.fps_mode == "ORIGINAL"
    output = output_folder()
    output.mkdir(parents=True, exist_ok=True)
    record.output_path = str(output / f"{safe_name(strip.name)}_talking_face_{record.job_id[:8]}{RESULT_SUFFIX}")
    prefs = preferences()
    record.owner = {
        "blend_file": bpy.data.filepath,
        "base_url": credentials().base_url,  # uploads are only reused on the service that stored them
        "scene": scene.name,
        "source_strip": strip.name,
        "timeline": [strip.frame_final_start, strip.channel],  # the queue starts waiting jobs in this order
        "source_strips": [strip.name] + ([choice.strip.name] if choice.kind == "STRIP" else []),
        "result_name": f"{strip.name} TF",
        "audio_path": audio.path,
        "mute_sources": bool(prefs.mute_sources) if prefs else True,
        "regenerate": bool(options.regenerate) or new_take,
        "options": take_options(context, options, choice, lengths_choice),
        "work_dir": str(work_dir),
        "audio_seconds": audio.duration,
        "input_sha256": {"audio": audio.sha256, "vocals": ""},
        "length_choice": fit.applied,  # part of the job's identity: another choice sends other inputs
    }
    if not defer:
        if record.vocals:
            record.owner["input_sha256"]["vocals"] = media.file_sha256(record.vocals)
        # What is paid for comes from the inputs, before any cut: a cut's bytes differ each time.
        video_key = media.video_key(strip, scene, **extension)
        video = media.prepare_video(strip, scene, str(work_dir), cut_output=cached_cut_path(video_key), **extension)
        add_video(record, video, video_key)
        return record, None
    plan = _preparation_plan(strip, scene, str(work_dir), record, cut_program, audio_command, extension)
    record.owner["prepare"] = plan.to_owner()
    record.message = "Preparing the clip"
    # Until the video is described, the estimate comes from the strip; it is refined from the file.
    billed = audio.duration or media.visible_seconds(strip, scene)
    record.estimated_credits = estimate_credits(
        billed, fps_original=record.fps_original, source_fps=media.strip_source_fps(strip))
    return record, plan


def take_options(context: bpy.types.Context, options, choice: AudioChoice, length: LengthChoice) -> dict:
    """What a job is made with, as JSON-able data: every job setting of the panel, the length choice
    applied (a batch may have its own) and the audio.

    Kept on the take's strips, so Redo makes it again the same way. Settings are read by name
    from the panel's property group, so a setting added there is kept without a change here.
    """
    names = [prop.identifier for prop in settings(context).bl_rna.properties
             if prop.identifier not in SETTINGS_NOT_KEPT and not prop.is_readonly
             and prop.type not in {"POINTER", "COLLECTION"}]  # data-blocks and lists are no option values
    kept = {name: _plain(getattr(options, name)) for name in names}
    audio = {"kind": choice.kind}
    if choice.kind == "STRIP" and choice.strip is not None:
        audio["strip"] = choice.strip.name
    elif choice.kind == "FILE":
        audio["path"] = choice.path
    return {**kept, **asdict(length), "audio": audio}


def _plain(value):
    """A setting's value as JSON holds it (vector settings are arrays)."""
    return value if isinstance(value, (bool, int, float, str)) else list(value)


def _preparation_plan(strip, scene: bpy.types.Scene, work_dir: str, record: JobRecord,
                      cut_program: str, audio_command: tuple[str, ...], extension: dict) -> PreparationPlan:
    """What the preparation thread does: key the video by its content, cut (unless cached), hash.

    ``extension``: ``extend`` and ``frames`` for ``media`` when the picture is extended, else empty.
    """
    files = {"vocals": record.vocals} if record.vocals else {}
    if not audio_command and not record.owner["input_sha256"]["audio"]:
        files["audio"] = record.audio  # uploaded as it is: only its hash is left to do
    key_files, selection = media.video_selection(strip, scene, **extension)
    command: tuple[str, ...] = ()
    if not media.needs_cut(strip, scene, extend=extension.get("extend", "")):
        video = key_files[0]
    elif cut_program:
        command_line, video = media.cut_video_command(strip, scene, work_dir, blender=cut_program, **extension)
        command = tuple(command_line)
    else:  # no Blender program to cut in the background (the bpy module): cut here
        video = media.prepare_video(strip, scene, work_dir, **extension).path
    return PreparationPlan(cut_command=command, video=video, hash_roles=tuple(files), files=files,
                           audio_command=audio_command, audio=record.audio if audio_command else "",
                           key_files=tuple(key_files), key_selection=selection,
                           cut_cache=str(cut_cache_folder()) if command else "")


def cut_cache_folder() -> Path:
    """Where cuts are kept by their content key, so an identical job never cuts (nor uploads) again.

    Cuts made more than ``CUT_CACHE_DAYS`` ago are deleted. A cut is never touched: its
    modification time is part of how an earlier upload of it is recognised.
    """
    folder = user_folder("cuts")
    limit = time.time() - CUT_CACHE_DAYS * 86400
    for old in folder.glob("*.mp4"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < limit:
                old.unlink()
    return folder


def cached_cut_path(video_key: str) -> str:
    return str(cut_cache_folder() / f"{video_key}.mp4")


def _prepare_audio(context: bpy.types.Context, choice: AudioChoice, work_dir: str, *, defer: bool = False,
                   cut_program: str = "", length: float = 0.0) -> tuple[media.PreparedMedia, tuple[str, ...]]:
    """The audio as far as it is prepared now, and the background command that still has to cut it.

    With ``defer`` nothing that grows with the sound's size happens here: a sound to cut is cut
    by ``cut_program`` in a background process, and a file sent as it is is hashed later.
    ``length``, when not 0: the audio is cut to exactly that long, or filled with silence.
    """
    hashed = not defer
    if choice.kind == "FILE" and not length:
        return media.prepare_audio_file(choice.path, hashed=hashed), ()
    background = defer and cut_program
    if choice.kind == "FILE":
        request = media.audio_file_cut_request(choice.path, work_dir, length=length)
        if not background:
            return media.cut_audio_in_process(request), ()
        command, output = media.audio_request_command(request, blender=cut_program)
    elif background and media.audio_needs_cut(choice.strip, length=length):
        command, output = media.cut_audio_command(choice.strip, context.scene, work_dir, blender=cut_program,
                                                  length=length)
    elif choice.kind == "STRIP":
        return media.prepare_audio_strip(choice.strip, context.scene, work_dir, hashed=hashed, length=length), ()
    else:
        return media.prepare_movie_audio(choice.strip, context.scene, work_dir, length=length), ()
    until_cut = media.PreparedMedia(path=output, duration=length or media.visible_seconds(choice.strip, context.scene),
                                    fps=0.0, frames=0, is_source_file=False, sha256="")
    return until_cut, tuple(command)
