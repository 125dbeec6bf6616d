"""Talking Face tasks (contract sections 1 and 2): submit validation, media lookup, polling.

The sandbox does not lip-sync. A task's result is the uploaded source video,
byte for byte unchanged, served from the cdn origin once the task reaches
status 3. The sandbox can only read media from its own storage (or from
loopback http URLs, which it fetches), because a test must never reach out
to the internet.

Threading: every function runs on the handler thread of one request; tasks
are read and replaced through the context's locked store.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from .context import SandboxContext
from .faults import Fault
from .httpcore import Reply, envelope
from .signing import UrlSignature
from .store import Task, TaskFailure, epoch_at

ILLEGAL_PARAMETER = 10192
RESULT_PATH = re.compile(r"^/results/([0-9a-f]{32})\.mp4$")
DEFAULT_FAILURE_REASON = "No face was detected in the source video"
DEFAULT_FAILURE_CODE = 10500
FETCH_TIMEOUT_SECONDS = 10.0


class MediaUnreadable(Exception):
    """The sandbox cannot read a media URL; the message names the field."""


# --- submit ---------------------------------------------------------------------------------------------

def submit_task(context: SandboxContext, body: Any) -> Reply:
    problem = submit_problem(body)
    if problem is not None:
        return envelope(ILLEGAL_PARAMETER, problem)
    try:
        source = resolve_media(context, "srcVideoUrl", body["srcVideoUrl"])
        resolve_media(context, "audioUrl", body["audioUrl"])
        if body.get("vocalAudioUrl"):
            resolve_media(context, "vocalAudioUrl", body["vocalAudioUrl"])
    except MediaUnreadable as error:
        return envelope(ILLEGAL_PARAMETER, str(error))
    config = context.config
    task = context.store.add_task(source, config.queued_seconds, config.processing_seconds)
    return envelope(0, "success", {"taskId": task.task_id})


def submit_problem(body: Any) -> str | None:
    """The 10192 message for a submit body that breaks section 1, naming the bad field; None if fine."""
    if not isinstance(body, dict):
        return "illegal parameter: the body must be a JSON object"
    for name in ("srcVideoUrl", "audioUrl"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"illegal parameter: {name} is required and must be a non-empty string"
    vocal = body.get("vocalAudioUrl")
    if vocal is not None and not isinstance(vocal, str):
        return "illegal parameter: vocalAudioUrl must be a string"
    return video_params_problem(body.get("videoParams"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def video_params_problem(params: Any) -> str | None:
    if not isinstance(params, dict):
        return "illegal parameter: videoParams is required and must be an object"
    for name in ("video_width", "video_height"):
        if not _is_int(params.get(name)) or params[name] < 0:
            return f"illegal parameter: videoParams.{name} is required and must be an integer >= 0"
    if not _is_int(params.get("video_enhance")) or params["video_enhance"] not in (0, 1):
        return "illegal parameter: videoParams.video_enhance is required and must be 0 or 1"
    if "fps" in params and params["fps"] != "original":
        return 'illegal parameter: videoParams.fps must be absent or "original"'
    return None


def resolve_media(context: SandboxContext, field: str, url: str) -> Path:
    """The file behind a media URL: an object in our storage, one of our results, or a loopback fetch."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaUnreadable(f"illegal parameter: {field} must be an http(s) URL")
    stored = context.store.object_for_key(unquote(parts.path.lstrip("/")))
    if stored is not None:
        _check_stored_url(context, field, parts, stored.key, stored.expired(time.monotonic(),
                                                                            context.config.upload_ttl_seconds))
        return stored.path
    result = _own_result(context, parts)
    if result is not None:
        return result
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return _fetch(context, field, url)
    raise MediaUnreadable(
        f"illegal parameter: {field}: sandbox can only read files uploaded to its own storage")


def _check_stored_url(context: SandboxContext, field: str, parts: SplitResult, key: str,
                      expired: bool) -> None:
    signature = context.signer.check_url(key, parts.query)
    if signature is not UrlSignature.VALID:  # what OSS would answer the service's fetch: 403
        raise MediaUnreadable(f"illegal parameter: {field}: the storage refused the URL ({signature.value} "
                              "Expires/OSSAccessKeyId/Signature query string; keep the URL exactly as given)")
    if expired:
        raise MediaUnreadable(f"illegal parameter: {field}: the uploaded file has expired")


def _own_result(context: SandboxContext, parts: SplitResult) -> Path | None:
    match = RESULT_PATH.match(parts.path)
    if match is None or f"{parts.scheme}://{parts.netloc}" != context.origins.cdn:
        return None
    task = context.store.task(match.group(1))
    return task.source if task is not None and task.status(time.monotonic()) == 3 else None


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _fetch(context: SandboxContext, field: str, url: str) -> Path:
    destination = context.storage_dir / "fetched" / uuid.uuid4().hex
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy
    try:
        with opener.open(url, timeout=FETCH_TIMEOUT_SECONDS) as answer, open(destination, "wb") as target:
            shutil.copyfileobj(answer, target, 256 * 1024)
    except (urllib.error.URLError, OSError, ValueError) as error:
        destination.unlink(missing_ok=True)
        raise MediaUnreadable(f"illegal parameter: {field} could not be read: {error}") from error
    return destination


# --- poll -----------------------------------------------------------------------------------------------

def poll_task(context: SandboxContext, body: Any, fault: Fault | None) -> Reply:
    task_id = (body.get("taskId") or body.get("taskID")) if isinstance(body, dict) else None
    if not isinstance(task_id, str) or not task_id:
        return envelope(ILLEGAL_PARAMETER, "illegal parameter: taskId is required")
    task = _apply_lasting_fault(context, task_id, fault)
    if task is None:
        return envelope(ILLEGAL_PARAMETER, "illegal parameter: taskId (no such task)")
    data = poll_data(context, task, report_queued=fault is not None and fault.name == "status0")
    if fault is not None and fault.name == "nested":
        data = {"data": data}
    return envelope(0, "success", data)


def _apply_lasting_fault(context: SandboxContext, task_id: str, fault: Fault | None) -> Task | None:
    """task_failed and no_video change the task for good, not just this one answer."""
    if fault is not None and fault.name == "task_failed":
        failure = TaskFailure(str(fault.option("reason", DEFAULT_FAILURE_REASON)),
                              int(fault.option("error_code", DEFAULT_FAILURE_CODE)))
        return context.store.fail_task(task_id, failure)
    if fault is not None and fault.name == "no_video":
        return context.store.withhold_video(task_id)
    return context.store.task(task_id)


def poll_data(context: SandboxContext, task: Task, report_queued: bool) -> dict[str, Any]:
    now = time.monotonic()
    status = 0 if report_queued else task.status(now)
    succeeded = status == 3
    videos = []
    if succeeded and not task.video_withheld:
        videos = [{"videoUrl": result_url(context, task), "videoType": "mp4"}]
    executed = min(max(now - task.started_at, 0.0), task.processing_seconds)
    expire = epoch_at(task.succeeds_at + context.config.result_ttl_seconds) if succeeded else 0
    return {
        "task": {
            "taskId": task.task_id,
            "status": status,
            "reason": task.failure.reason if task.failure else "",
            "taskType": "talking_face",
            "executionTime": int(executed * 1000),  # milliseconds
            "expire": int(expire * 1000),  # epoch milliseconds, when the result is deleted
            "errorCode": task.failure.error_code if task.failure else 0,
        },
        "videos": videos,
        "images": [],
        "audios": [],
    }


def result_url(context: SandboxContext, task: Task) -> str:
    origin = context.origins.refused if context.faults.take_refusal("download") else context.origins.cdn
    resource = f"results/{task.task_id}.mp4"
    expires = int(epoch_at(task.succeeds_at + context.config.result_ttl_seconds))
    return f"{origin}/{resource}?{context.signer.signed_query(resource, expires)}"


def result_expired(context: SandboxContext, task: Task, now: float) -> bool:
    return now > task.succeeds_at + context.config.result_ttl_seconds
