"""From a ``Shot`` to a job: whether it can be sent, what it costs, what to send.

Everything here runs on the main thread. ``blocking_reason`` is cheap enough for ``poll()``
and ``draw()``; ``plan_job`` does the real preparation work (cutting the shot's visible
range) and is only called when a shot is started — by Generate, the batch or Redo alike
(``jobs_ops.start_shot``). What a shot is comes from ``timeline.read_shot``, never from here.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import bpy

from ..newport_api import JobRecord, estimate_credits
from . import compat, media, shots, timeline
from .addon import credentials, network_blocking_reason, preferences, user_folder
from .job_inputs import add_video, check_sendable, check_upload_size
from .preparation import PreparationPlan

RESULT_SUFFIX = ".mp4"
CUT_CACHE_DAYS = 7


def blocking_reason(context: bpy.types.Context, *, include_network: bool = True) -> str | None:
    """One sentence on why Generate cannot run, or None when it can."""
    reason = timeline.panel_reason(context)
    if reason is None:
        reason = timeline.shot_blocking_reason(timeline.video_strip(context), timeline.audio_choice(context),
                                               timeline.settings(context))
    if reason is None and include_network:
        reason = network_blocking_reason()
    return reason


def estimate(context: bpy.types.Context) -> shots.Estimate | None:
    """The panel's estimate: ``shots.estimate`` of the shot Generate would send (None when it cannot run)."""
    shot = timeline.panel_shot(context, measure=False)
    return shots.estimate(shot) if shot is not None else None


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


def plan_job(context: bpy.types.Context, shot: shots.Shot, *, cut_program: str = "",
             defer: bool = False) -> tuple[JobRecord, PreparationPlan | None]:
    """Describe the shot's job and prepare what is cheap; raises ``media.MediaError`` with a sentence.

    With ``defer`` (a window is open), work that grows with the files' size is not done here:
    it is returned as a ``PreparationPlan`` (also kept in ``owner["prepare"]``) for the
    controller to carry out off the main thread — a picture that needs cutting is cut by
    ``cut_program`` in a background process, and the video is described and hashed there.
    Without ``defer`` everything is done now and the plan is None. The shot is kept in
    ``owner["shot"]``: placement takes its slot from there, whatever is edited meanwhile.
    """
    if shot.reason is not None:
        raise media.MediaError(shot.reason)
    source, options = shot.source, shot.options
    fit = shots.length_plan(shot)
    extension = {"extend": fit.applied, "frames": fit.video_frames} if fit.extends_picture else {}
    record = JobRecord(video="", audio="", output_path="", label=f"{source.strip} (Talking Face)")
    work_dir = user_folder("work", record.job_id)
    audio, audio_command = _prepare_audio(shot, str(work_dir), defer=defer, cut_program=cut_program,
                                          length=fit.audio_length)
    check_sendable(audio, "audio")
    record.audio = audio.path
    record.vocals = options.vocals
    if record.vocals:
        check_upload_size(record.vocals, "vocals file")
    record.width, record.height = options.width, options.height
    record.enhance = options.enhance
    record.fps_original = options.fps_original
    output = output_folder()
    output.mkdir(parents=True, exist_ok=True)
    record.output_path = str(output / f"{safe_name(source.strip)}_talking_face_{record.job_id[:8]}{RESULT_SUFFIX}")
    record.owner = {
        "blend_file": bpy.data.filepath,
        "base_url": credentials().base_url,  # uploads are only reused on the service that stored them
        "scene": shot.slot.scene,
        "source_strip": source.strip,
        "timeline": [shot.slot.start, shot.slot.channel],  # the queue starts waiting jobs in this order
        "source_strips": list(shot.slot.sources),
        "result_name": f"{source.strip} TF",
        "audio_path": audio.path,
        "mute_sources": options.mute_sources,
        "regenerate": options.new_take,
        "options": dict(options.kept),
        "work_dir": str(work_dir),
        "audio_seconds": audio.duration,
        "input_sha256": {"audio": audio.sha256, "vocals": ""},
        "length_choice": fit.applied,  # part of the job's identity: another choice sends other inputs
        "shot": shot.to_dict(),
    }
    if not defer:
        if record.vocals:
            record.owner["input_sha256"]["vocals"] = media.file_sha256(record.vocals)
        # What is paid for comes from the inputs, before any cut: a cut's bytes differ each time.
        video_key = media.source_key(source, **extension)
        video = media.prepare_source_video(source, str(work_dir), cut_output=cached_cut_path(video_key), **extension)
        add_video(record, video, video_key)
        return record, None
    plan = _preparation_plan(source, str(work_dir), record, cut_program, audio_command, extension)
    record.owner["prepare"] = plan.to_owner()
    record.message = "Preparing the clip"
    # Until the video is described, the estimate comes from the shot; it is refined from the file.
    billed = audio.duration or source.seconds
    record.estimated_credits = estimate_credits(billed, fps_original=record.fps_original, source_fps=source.fps)
    return record, plan


def _preparation_plan(source: shots.Source, work_dir: str, record: JobRecord,
                      cut_program: str, audio_command: tuple[str, ...], extension: dict) -> PreparationPlan:
    """What the preparation thread does: key the video by its content, cut (unless cached), hash.

    ``extension``: ``extend`` and ``frames`` for ``media`` when the picture is extended, else empty.
    """
    files = {"vocals": record.vocals} if record.vocals else {}
    if not audio_command and not record.owner["input_sha256"]["audio"]:
        files["audio"] = record.audio  # uploaded as it is: only its hash is left to do
    if not os.path.isfile(source.path):
        raise media.MediaError(f"The movie file of “{source.strip}” is missing: {source.path}")
    key_files, selection = source.key_inputs(**extension)
    command: tuple[str, ...] = ()
    if not source.needs_cut(extension.get("extend", "")):
        video = key_files[0]
    elif cut_program:
        command_line, video = media.source_cut_command(source, work_dir, blender=cut_program, **extension)
        command = tuple(command_line)
    else:  # no Blender program to cut in the background (the bpy module): cut here
        video = media.prepare_source_video(source, work_dir, **extension).path
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


def _prepare_audio(shot: shots.Shot, work_dir: str, *, defer: bool = False, cut_program: str = "",
                   length: float = 0.0) -> tuple[media.PreparedMedia, tuple[str, ...]]:
    """The audio as far as it is prepared now, and the background command that still has to cut it.

    With ``defer`` nothing that grows with the sound's size happens here: a sound to cut is cut
    by ``cut_program`` in a background process, and a file sent as it is is hashed later.
    ``length``, when not 0: the audio is cut to exactly that long, or filled with silence.
    """
    audio, hashed = shot.audio, not defer
    if audio.packed:  # its bytes live in the .blend: written out from the strip, which planning runs beside
        return _prepare_packed_sound(shot, work_dir, hashed=hashed, length=length,
                                     cut_program=cut_program if defer else "")
    if not audio.needs_cut(length):
        return media.prepare_audio_file(audio.path, hashed=hashed), ()
    request = media.shot_audio_cut_request(audio, work_dir, length=length)
    if not (defer and cut_program):
        return media.cut_audio_in_process(request), ()
    command, output = media.audio_request_command(request, blender=cut_program)
    until_cut = media.PreparedMedia(path=output, duration=length or audio.seconds or 0.0, fps=0.0, frames=0,
                                    is_source_file=False, sha256="")
    return until_cut, tuple(command)


def _prepare_packed_sound(shot: shots.Shot, work_dir: str, *, hashed: bool, length: float,
                          cut_program: str) -> tuple[media.PreparedMedia, tuple[str, ...]]:
    scene = bpy.data.scenes.get(shot.slot.scene)
    strip = compat.all_strips(scene).get(shot.audio.strip) if scene is not None else None
    if strip is None:
        raise media.MediaError(f"The sound strip “{shot.audio.strip}” is no longer in the scene — pick it again.")
    if not cut_program:
        return media.prepare_audio_strip(strip, scene, work_dir, hashed=hashed, length=length), ()
    command, output = media.cut_audio_command(strip, scene, work_dir, blender=cut_program, length=length)
    until_cut = media.PreparedMedia(path=output, duration=length or shot.audio.seconds or 0.0, fps=0.0, frames=0,
                                    is_source_file=False, sha256="")
    return until_cut, tuple(command)
