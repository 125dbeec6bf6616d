"""The job state machine: upload → submit → poll → download, resumable in any phase.

A ``JobRecord`` is the whole truth about a job and is plain JSON; it is saved
at every phase change, so a process that dies can be replaced by one that
reads the record and carries on.  ``JobRunner`` moves one record forward.  It
runs in whatever thread calls ``run()`` (a worker thread in Blender's UI, the
caller's thread in background mode and on the command line) and talks to the
outside only through its ``emit`` callback, with plain ``JobEvent`` data: a
snapshot of the whole record whenever it is saved (a phase change, an upload
done, the submit guard, the stop), and lightweight progress events (fraction,
message, time; no snapshot) up to ``RunnerSettings.progress_interval`` apart.

The rule that keeps the artist from paying twice: ``submit_started_at`` is
saved *before* the submit request is sent.  A record that has it but no task
id may have been billed, so nothing resubmits it unless the artist asks.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from . import errors
from .cancel import CancelToken, StopReason
from .client import NewportClient
from .models import TalkingFaceRequest, TaskInfo, TaskStatus


class Phase(str, Enum):
    PENDING = "pending"
    UPLOADING = "uploading"
    SUBMITTING = "submitting"
    QUEUED = "queued"
    PROCESSING = "processing"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"  # the result is complete on disk; the host places it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return PHASE_LABELS[self]

    @property
    def running(self) -> bool:
        """True while the runner still has work to do in this phase."""
        return self in RUNNER_PHASES

    @property
    def finished(self) -> bool:
        return self in (Phase.DONE, Phase.FAILED, Phase.CANCELLED)


RUNNER_PHASES = frozenset({Phase.PENDING, Phase.UPLOADING, Phase.SUBMITTING, Phase.QUEUED,
                           Phase.PROCESSING, Phase.DOWNLOADING})
PHASE_LABELS = {
    Phase.PENDING: "Starting",
    Phase.UPLOADING: "Uploading",
    Phase.SUBMITTING: "Submitting",
    Phase.QUEUED: "Waiting in queue",
    Phase.PROCESSING: "Processing",
    Phase.DOWNLOADING: "Downloading",
    Phase.DOWNLOADED: "Importing",
    Phase.DONE: "Done",
    Phase.FAILED: "Failed",
    Phase.CANCELLED: "Cancelled",
}
INPUT_ROLES = ("video", "audio", "vocals")


@dataclass(frozen=True)
class RunnerSettings:
    poll_interval: float = 2.0
    max_poll_interval: float = 15.0
    processing_limit: float = 60 * 60.0  # seconds waiting for one task; then report it, Retry keeps waiting
    poll_error_budget: float = 10 * 60.0  # consecutive seconds of failed polls tolerated
    upload_reuse_margin: float = 2 * 3600.0  # an uploaded URL must outlive the task by this much
    progress_interval: float = 0.1  # at most this often a progress event per job


@dataclass
class JobRecord:
    video: str  # a local path or an http(s) URL
    audio: str
    output_path: str
    vocals: str = ""
    width: int = 0
    height: int = 0
    enhance: bool = False
    fps_original: bool = False
    estimated_credits: float = 0.0  # checked against the balance before anything is uploaded
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    label: str = ""
    phase: Phase = Phase.PENDING
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_id: str = ""
    submit_started_at: float = 0.0
    result_url: str = ""
    result_expire_at: float = 0.0
    progress: float | None = None
    message: str = ""
    error: str = ""
    error_kind: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    phase_started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    owner: dict[str, Any] = field(default_factory=dict)  # the host's own data (scene, strips, …)
    error_detail: str = ""  # technical detail of the error, for logs and bug reports (never the key)
    wait_started_at: float = 0.0  # when waiting for the task began; Retry restarts the clock

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["phase"] = Phase(values.get("phase", Phase.PENDING.value))
        return cls(**values)

    def inputs(self) -> dict[str, str]:
        return {role: source for role, source in
                (("video", self.video), ("audio", self.audio), ("vocals", self.vocals)) if source}

    def set_phase(self, phase: Phase, message: str = "") -> None:
        if phase != self.phase:
            self.phase_started_at = time.time()
        self.phase = phase
        self.message = message or phase.label
        self.progress = None
        self.updated_at = time.time()
        if phase.finished or phase == Phase.DOWNLOADED:
            self.finished_at = time.time()

    def fail(self, error: errors.NewportError) -> None:
        self.error = str(error)
        self.error_kind = error.kind
        self.error_detail = error.detail
        self.set_phase(Phase.FAILED, str(error))

    @property
    def part_path(self) -> Path:
        return Path(self.output_path + ".part")

    def prepare_retry(self) -> None:
        """Restart a failed or cancelled job from the furthest point still valid.

        This is the artist's explicit choice, so unlike automatic recovery it
        may submit again when the earlier submit's fate is unknown or failed.
        """
        resubmit = self.error_kind in ("task_failed", "no_result", "result_expired", "submit_uncertain",
                                       "invalid_parameter")
        if resubmit or not self.task_id:
            self.task_id = ""
            self.submit_started_at = 0.0
            self.wait_started_at = 0.0
            self.result_url = ""
            self.result_expire_at = 0.0
            self.part_path.unlink(missing_ok=True)  # a partial download of another result
            self.set_phase(Phase.UPLOADING)
        elif self.result_url and self.result_expire_at > time.time():
            self.set_phase(Phase.DOWNLOADING)
        else:
            self.wait_started_at = time.time()  # keep waiting for the same task: the clock starts again
            self.set_phase(Phase.PROCESSING)
        self.error = ""
        self.error_kind = ""
        self.error_detail = ""
        self.finished_at = 0.0


@dataclass(frozen=True)
class JobEvent:
    """What a runner tells its host: plain data, safe to pass between threads.

    ``record`` is a snapshot of the whole record after a save (every phase change,
    and the last event, ``stopped``); it is None on a progress event, which says
    only where the record's ``progress``, ``message`` and ``updated_at`` are now.
    Progress events are the frequent ones: up to one per job every
    ``RunnerSettings.progress_interval``, so they carry no copy of the record.
    """

    job_id: str
    phase: str
    message: str
    progress: float | None
    record: dict[str, Any] | None  # a snapshot of the whole record; None on a progress event
    stopped: bool = False  # the runner has returned
    updated_at: float = 0.0  # when the runner made the change


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class JobRunner:
    def __init__(self, client: NewportClient, record: JobRecord, *,
                 save: Callable[[JobRecord], None] | None = None,
                 emit: Callable[[JobEvent], None] | None = None,
                 settings: RunnerSettings | None = None) -> None:
        self.client = client
        self.record = record
        self._save = save or (lambda record: None)
        self._emit = emit or (lambda event: None)
        self.settings = settings or RunnerSettings()
        self._last_progress_event = 0.0

    @property
    def cancel(self) -> CancelToken:
        return self.client.cancel

    def run(self) -> JobRecord:
        """Move the record forward until it is downloaded, failed or cancelled."""
        steps = {
            Phase.PENDING: self._start,
            Phase.UPLOADING: self._upload_inputs,
            Phase.SUBMITTING: self._submit,
            Phase.QUEUED: self._wait_for_result,
            Phase.PROCESSING: self._wait_for_result,
            Phase.DOWNLOADING: self._download_result,
        }
        try:
            while self.record.phase.running:
                self.cancel.raise_if_cancelled()
                steps[self.record.phase]()
        except errors.CancelledError:
            self._stop_for_cancel()
        except errors.NewportError as error:
            if self.cancel.cancelled:  # whatever broke, it broke because the job was stopped
                self._stop_for_cancel()
            else:
                self._fail(error)
        except Exception as error:  # noqa: BLE001 — a bug must still end the job with a sentence, not a dead thread
            if self.cancel.cancelled:
                self._stop_for_cancel()
            else:
                self._fail(errors.NewportError(
                    "Talking Face hit an unexpected error — use Retry, and report it if it happens again.",
                    detail=f"{type(error).__name__}: {error}"))
        finally:
            self._emit(self._event(stopped=True))
        return self.record

    # -- phases -----------------------------------------------------------------

    def _start(self) -> None:
        self._check_balance()
        self._advance(Phase.UPLOADING)

    def _check_balance(self) -> None:
        """Refuse before uploading anything when the account visibly cannot pay for the job."""
        if self.record.estimated_credits <= 0:
            return
        try:
            balance = self.client.remaining_credits()
        except errors.NewportError as error:
            if isinstance(error, errors.AuthenticationError):
                raise
            return  # an unknown balance never blocks work
        if balance is not None and balance < self.record.estimated_credits:
            raise errors.QuotaError(
                f"This clip needs about {self.record.estimated_credits:.0f} credits but the account has "
                f"{balance:g} — top up your Newport AI account, then Retry.")

    def _upload_inputs(self) -> None:
        pending = {role: source for role, source in self.record.inputs().items()
                   if not is_url(source) and not self._upload_still_valid(role, source)}
        total = sum(os.path.getsize(source) for source in pending.values() if os.path.isfile(source)) or 1
        done_before = 0
        for role, source in pending.items():
            self.record.message = f"Uploading the {role}"

            def report(sent: int, _size: int | None, base: int = done_before) -> None:
                self._progress((base + sent) / total)

            uploaded = self.client.upload_file(source, on_progress=report)
            stat = os.stat(source)
            self.record.uploads[role] = {"url": uploaded.url, "expire_at": uploaded.expire_at,
                                         "size": stat.st_size, "mtime": stat.st_mtime, "source": source}
            done_before += uploaded.size
            self._commit()
        self._advance(Phase.SUBMITTING)

    def _upload_still_valid(self, role: str, source: str) -> bool:
        upload = self.record.uploads.get(role)
        if not upload or upload.get("source") != source or not os.path.isfile(source):
            return False
        stat = os.stat(source)
        unchanged = upload.get("size") == stat.st_size and upload.get("mtime") == stat.st_mtime
        fresh = float(upload.get("expire_at", 0)) > time.time() + self.settings.upload_reuse_margin
        return unchanged and fresh

    def _url_for(self, role: str) -> str:
        source = self.record.inputs().get(role, "")
        if not source or is_url(source):
            return source
        return self.record.uploads[role]["url"]

    def _submit(self) -> None:
        if self.record.submit_started_at and not self.record.task_id:
            raise errors.SubmitUncertainError(
                "Talking Face stopped while starting this job, so it may already be running on Newport AI; "
                "it was not sent again — check your account, then use Retry to submit again.")
        request = TalkingFaceRequest(
            src_video_url=self._url_for("video"), audio_url=self._url_for("audio"),
            vocal_audio_url=self._url_for("vocals") or None, width=self.record.width,
            height=self.record.height, enhance=self.record.enhance, fps_original=self.record.fps_original)
        self.record.submit_started_at = time.time()
        self._commit()  # saved before sending: the one guard against paying twice after a crash
        self.record.task_id = self.client.submit_talking_face(request)
        self.record.wait_started_at = time.time()
        self._advance(Phase.QUEUED)

    def _wait_for_result(self) -> None:
        interval = self.settings.poll_interval
        failing_since: float | None = None
        while True:
            try:
                task = self.client.get_task(self.record.task_id)
                failing_since = None
            except errors.NewportError as error:
                if not error.retryable:
                    raise
                failing_since = failing_since or time.time()
                if time.time() - failing_since > self.settings.poll_error_budget:
                    raise
                task = None
            if task is not None and self._handle_task(task):
                return
            if task is not None:  # while polls fail the task's state is unknown: the error budget decides
                self._check_processing_limit()
            self.cancel.sleep(interval)
            interval = min(interval * 1.5, self.settings.max_poll_interval)

    def _handle_task(self, task: TaskInfo) -> bool:
        """Apply one poll answer; True when waiting is over."""
        if task.status == TaskStatus.SUCCEEDED:
            if not task.video_urls:
                raise errors.NoResultError(
                    "Newport AI finished the job but returned no video — use Retry to generate it again.")
            if not self.record.result_url:
                self.record.part_path.unlink(missing_ok=True)  # a leftover of some other result
            self._take_result(task)
            self._advance(Phase.DOWNLOADING)
            return True
        if task.status == TaskStatus.FAILED:
            reason = " ".join((task.reason or "no reason given").split())[:300].rstrip(". ")
            raise errors.TaskFailedError(
                f"Newport AI could not make this clip ({reason}) — adjust the inputs, then use Retry.",
                reason=task.reason)
        # Queued, submitted or no status at all: keep waiting, never step back from processing.
        if task.status == TaskStatus.PROCESSING and self.record.phase != Phase.PROCESSING:
            self._advance(Phase.PROCESSING)
        return False

    def _check_processing_limit(self) -> None:
        started = (self.record.wait_started_at or self.record.submit_started_at
                   or self.record.phase_started_at)
        if time.time() - started > self.settings.processing_limit:
            raise errors.StillProcessingError(
                f"Newport AI has been working on this clip for over {_duration(self.settings.processing_limit)} "
                "— use Retry to keep waiting for the same job (it will not be paid again).")

    def _take_result(self, task: TaskInfo) -> None:
        self.record.result_url = task.video_urls[0]
        self.record.result_expire_at = task.expire_at or time.time() + 23 * 3600

    def _download_result(self) -> None:
        if self.record.result_expire_at and self.record.result_expire_at < time.time():
            raise errors.ResultExpiredError(
                "The result expired on Newport AI's servers before it was downloaded — "
                "use Retry to generate it again.")
        try:
            self._download()
        except errors.NewportError as error:
            # A result URL that stopped working (a signature past its time, a host gone) may be
            # replaced by a fresh one: ask the service once, then try again with what it says.
            refreshable = error.retryable or isinstance(error, errors.ResultExpiredError)
            if isinstance(error, errors.CancelledError) or not refreshable or not self._refresh_result_url():
                raise
            self._download()
        self._advance(Phase.DOWNLOADED, "Result downloaded")

    def _download(self) -> None:
        self.client.download(self.record.result_url, self.record.output_path,
                             on_progress=lambda done, total: self._progress(done / total if total else None))

    def _refresh_result_url(self) -> bool:
        if not self.record.task_id:
            return False
        try:
            task = self.client.get_task(self.record.task_id)
        except errors.CancelledError:
            raise
        except errors.NewportError:
            return False
        if task.status != TaskStatus.SUCCEEDED or not task.video_urls:
            return False
        self._take_result(task)
        self._commit()
        return True

    # -- bookkeeping ------------------------------------------------------------

    def _stop_for_cancel(self) -> None:
        if self.cancel.reason == StopReason.SHUTDOWN:
            self._commit()  # keep the phase: the next session resumes from here
            return
        self.record.part_path.unlink(missing_ok=True)
        message = "Cancelled"
        if self.record.phase == Phase.SUBMITTING and self.record.submit_started_at and not self.record.task_id:
            message = ("Cancelled while starting the job, so it may already be running on Newport AI "
                       "— check your account before generating it again.")
        self.record.set_phase(Phase.CANCELLED, message)
        self._commit()

    def _fail(self, error: errors.NewportError) -> None:
        redact = self.client.transport.redact  # the last guard: nothing stored may carry the key
        error.detail = redact(error.detail or "")
        error.message = redact(error.message)
        error.args = (error.message,)
        self.record.fail(error)
        self._commit()

    def _advance(self, phase: Phase, message: str = "") -> None:
        self.record.set_phase(phase, message)
        self._commit()

    def _commit(self) -> None:
        self.record.updated_at = time.time()
        self._save(self.record)
        self._emit(self._event())

    def _progress(self, fraction: float | None) -> None:
        self.record.progress = fraction
        now = time.monotonic()
        if now - self._last_progress_event >= self.settings.progress_interval:
            self._last_progress_event = now
            self.record.updated_at = time.time()
            self._emit(self._event(snapshot=False))

    def _event(self, stopped: bool = False, *, snapshot: bool = True) -> JobEvent:
        record = self.record
        return JobEvent(job_id=record.job_id, phase=record.phase.value, message=record.message,
                        progress=record.progress, record=record.to_dict() if snapshot else None,
                        stopped=stopped, updated_at=record.updated_at)


def _duration(seconds: float) -> str:
    """'90 seconds', '5 minutes', '2 hours': how long a limit is, for a message."""
    if seconds < 1.5:
        return "a second"
    if seconds < 120:
        return f"{round(seconds)} seconds"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:g} hours"
