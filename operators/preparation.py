"""Getting a job's inputs ready off the main thread: cutting the clip, hashing the files.

Both grow with the files' size (a 4 GB source takes seconds to hash), so with a window
they run in a preparation thread while the artist keeps editing.

Threading rules:

* ``PreparationTask`` is created, polled and stopped on the main thread.
* Its thread never touches ``bpy``: it works on the plain plan stored in the job's
  ``owner["prepare"]`` (paths and a command line) and reports through ``messages``,
  a queue of plain tuples that the main thread's tick drains.
* A cut runs in a background Blender process; ``stop()`` kills it from the main thread.

In background mode the same plan runs in the caller's thread with ``carry_out``.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..newport_api import content
from .media import (
    MediaError,
    PreparedMedia,
    describe_audio,
    describe_video,
    file_sha256,
    parse_cut_progress,
    video_track_info,
)


@dataclass(frozen=True)
class PreparationPlan:
    """What is left to do before upload: plain JSON-able data, kept in the job record."""

    cut_command: tuple[str, ...] = ()  # a background Blender that writes ``video``
    video: str = ""  # the file that will be uploaded as the video (the source or the cut)
    audio_command: tuple[str, ...] = ()  # a background Blender that writes ``audio`` (a WAV cut)
    audio: str = ""  # set with ``audio_command``: the WAV it writes
    hash_roles: tuple[str, ...] = ()  # roles of ``files`` whose content hash is still unknown
    files: dict[str, str] = field(default_factory=dict)  # role -> path
    key_files: tuple[str, ...] = ()  # the files the video is taken from (``shots.Source.key_inputs``)
    key_selection: dict[str, Any] = field(default_factory=dict)  # and what is taken from them
    cut_cache: str = ""  # with ``cut_command``: the folder of cuts kept by their content key

    def to_owner(self) -> dict[str, Any]:
        return {"cut_command": list(self.cut_command), "video": self.video,
                "audio_command": list(self.audio_command), "audio": self.audio,
                "hash_roles": list(self.hash_roles), "files": dict(self.files),
                "key_files": list(self.key_files), "key_selection": dict(self.key_selection),
                "cut_cache": self.cut_cache}

    @classmethod
    def from_owner(cls, data: dict[str, Any]) -> PreparationPlan:
        return cls(cut_command=tuple(data.get("cut_command", ())), video=data.get("video", ""),
                   audio_command=tuple(data.get("audio_command", ())), audio=data.get("audio", ""),
                   hash_roles=tuple(data.get("hash_roles", ())), files=dict(data.get("files", {})),
                   key_files=tuple(data.get("key_files", ())), key_selection=dict(data.get("key_selection", {})),
                   cut_cache=data.get("cut_cache", ""))


@dataclass(frozen=True)
class PreparedInputs:
    """What the plan produced: the described video (and audio, when cut) and every file's content hash."""

    video: PreparedMedia | None
    sha256: dict[str, str]
    audio: PreparedMedia | None = None
    video_key: str = ""  # what the artist chose, by content (``content.selection_key``)


Report = Callable[[float], None]
# The cut shares the machine with the artist's Blender: it yields the CPU to the interface first.
_LOWER_PRIORITY: tuple[str, ...] = ("nice", "-n", "10") if shutil.which("nice") else ()


def _cut(command: tuple[str, ...], output: str, report: Report,
         started: Callable[[subprocess.Popen], None]) -> None:
    """Run one background Blender cut to its end; raises ``MediaError`` with its sentence when it fails."""
    process = subprocess.Popen([*_LOWER_PRIORITY, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True)
    started(process)
    last_lines: list[str] = []
    for line in process.stdout:
        fraction = parse_cut_progress(line)
        if fraction is not None:
            report(fraction)
        elif line.strip():
            last_lines = [*last_lines[-4:], line.strip()]
    code = process.wait()
    if code != 0 or not os.path.isfile(output):
        reason = next((line.split(" ", 1)[1] for line in reversed(last_lines)
                       if line.startswith("TALKING_FACE_ERROR ")), "")
        raise MediaError(reason or f"Blender could not cut the clip (it exited with {code}) "
                                   "— check the strips, then Generate again.")


def carry_out(plan: PreparationPlan, report: Report = lambda _fraction: None,
              started: Callable[[subprocess.Popen], None] = lambda _process: None) -> PreparedInputs:
    """Do the whole plan in this thread (bpy-free); raises ``MediaError`` with a sentence."""
    video_key = content.selection_key(plan.key_files, plan.key_selection) if plan.key_files else ""
    video_path = plan.video
    if plan.cut_command:
        video_path = _cut_once(plan, video_key, report, started)
    if plan.audio_command:
        _cut(plan.audio_command, plan.audio, report, started)
    video = describe_video(video_path, is_source_file=not plan.cut_command) if video_path else None
    audio = describe_audio(plan.audio, is_source_file=False) if plan.audio_command else None
    hashes = {role: file_sha256(plan.files[role]) for role in plan.hash_roles}
    hashes.update({role: media.sha256 for role, media in (("video", video), ("audio", audio)) if media})
    return PreparedInputs(video=video, sha256=hashes, audio=audio, video_key=video_key)


def _cut_once(plan: PreparationPlan, video_key: str, report: Report,
              started: Callable[[subprocess.Popen], None]) -> str:
    """The cut of this selection: the one kept from an earlier job, else a new one, kept for the next."""
    if not (plan.cut_cache and video_key):
        _cut(plan.cut_command, plan.video, report, started)
        return plan.video
    kept = os.path.join(plan.cut_cache, f"{video_key}.mp4")
    if video_track_info(kept) is None:
        _cut(plan.cut_command, plan.video, report, started)
        os.replace(plan.video, kept)  # complete before it is kept: a partial cut is never reused
    return kept


class PreparationTask:
    """One job's plan carried out in a daemon thread; the tick polls ``poll()``."""

    def __init__(self, job_id: str, plan: PreparationPlan, credentials: Any) -> None:
        self.job_id = job_id
        self.plan = plan
        self.credentials = credentials
        self.messages: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._process: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"talking-face-prepare-{job_id[:8]}")
        self._thread.start()

    def _run(self) -> None:
        try:
            prepared = carry_out(self.plan, report=lambda fraction: self.messages.put(("progress", fraction)),
                                 started=self._remember)
        except MediaError as error:
            self.messages.put(("failed", str(error)))
        except OSError as error:
            sentence = (f"Talking Face could not read its inputs ({error.strerror or error}) "
                        "— check the files, then Generate again.")
            self.messages.put(("failed", sentence))
        else:
            self.messages.put(("done", prepared))

    def _remember(self, process: subprocess.Popen) -> None:
        self._process = process
        if self._stopped.is_set():  # stopped before the process existed
            process.kill()

    def stop(self) -> None:
        """Kill the cut (if any); the thread ends on its own, and its answer is ignored."""
        self._stopped.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or not self.messages.empty()
