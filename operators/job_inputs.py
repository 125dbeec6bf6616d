"""A job's inputs once they are prepared: whether they can be sent, what they are keyed by, what they cost.

Shared by planning (``job_setup``) and by the controller, which completes a record when its
preparation ends off the main thread. Builds on ``media`` and ``preparation`` only.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..newport_api import JobRecord, estimate_credits
from .media import MediaError, PreparedMedia
from .preparation import PreparedInputs

MAX_UPLOAD_BYTES = 5 * 1024**3  # the storage policy's size range (contract, section 3)


def fingerprint(record: JobRecord) -> str:
    """What the service is paid for: the inputs' contents and the parameters, nothing else.

    The inputs are keyed by what the artist chose (``input_key``: the source's content and the
    range taken from it), never by the bytes of a cut; records from before keys existed used
    the uploaded files' hashes.
    """
    inputs = record.owner.get("input_key") or record.owner["input_sha256"]
    identity = {"inputs": inputs, "width": record.width, "height": record.height,
                "enhance": record.enhance, "fps_original": record.fps_original}
    if record.owner.get("length_choice"):  # only when it changed what is sent: older fingerprints stay valid
        identity["length_choice"] = record.owner["length_choice"]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def check_upload_size(path: str, what: str) -> None:
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise MediaError(f"The {what} is {size / 1024**3:.1f} GiB and the service takes at most "
                         f"{MAX_UPLOAD_BYTES / 1024**3:.0f} GiB per file; shorten it, then Generate again.")


def check_sendable(prepared: PreparedMedia, what: str) -> None:
    """Refuse, in one sentence and before any upload, an input the service would fail on."""
    if prepared.duration <= 0 or (prepared.fps > 0 and prepared.frames < 1):
        raise MediaError(f"The {what} is empty (it lasts 0 seconds); choose one that plays, "
                         "then Generate again.")
    if os.path.exists(prepared.path):  # else a cut still to be made (a visible range: far below the limit)
        check_upload_size(prepared.path, what)


def add_video(record: JobRecord, video: PreparedMedia, video_key: str) -> None:
    """Complete a record with its prepared video: path, content hashes, fingerprint and price.

    ``video_key`` identifies what the artist chose (the source's content and its range); the
    fingerprint of what is paid for comes from it, never from the bytes of a cut.
    """
    check_sendable(video, "video")
    record.video = video.path
    record.owner.update(video_seconds=video.duration, source_fps=video.fps)
    record.owner["input_sha256"]["video"] = video.sha256
    record.owner["input_key"] = {**record.owner["input_sha256"], "video": video_key}
    record.owner["fingerprint"] = fingerprint(record)
    billed = record.owner.get("audio_seconds") or video.duration
    record.estimated_credits = estimate_credits(billed, fps_original=record.fps_original, source_fps=video.fps)


def apply_prepared(record: JobRecord, prepared: PreparedInputs) -> None:
    """Complete a record with what its preparation produced (main thread, cheap)."""
    record.owner.pop("prepare", None)
    record.owner["input_sha256"].update({role: digest for role, digest in prepared.sha256.items()
                                         if role != "video"})
    if prepared.audio is not None:  # cut in the background: now its exact length is known
        record.owner["audio_seconds"] = prepared.audio.duration
    add_video(record, prepared.video, prepared.video_key)
