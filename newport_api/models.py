"""Plain data exchanged with the service, parsed tolerantly.

The polling endpoint is known to answer in several shapes (CONTRACT.md §2:
status 0, empty bodies, fields nested one level deeper); everything that
reads those shapes lives here so the rest of the code sees one ``TaskInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

DEFAULT_BASE_URL = "https://api.newportai.com"
BILLING_FPS = 25.0


class TaskStatus(IntEnum):
    UNKNOWN = -1  # the service answered without a status (seen while busy)
    QUEUED = 0
    SUBMITTED = 1
    PROCESSING = 2
    SUCCEEDED = 3
    FAILED = 4

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


@dataclass(frozen=True)
class TalkingFaceRequest:
    """What a talking-face submit sends.  ``width``/``height`` 0 keep the source size."""

    src_video_url: str
    audio_url: str
    vocal_audio_url: str | None = None
    width: int = 0
    height: int = 0
    enhance: bool = False
    fps_original: bool = False

    def to_body(self) -> dict[str, Any]:
        video_params: dict[str, Any] = {
            "video_width": int(self.width),
            "video_height": int(self.height),
            "video_enhance": 1 if self.enhance else 0,
        }
        if self.fps_original:
            video_params["fps"] = "original"
        body: dict[str, Any] = {
            "srcVideoUrl": self.src_video_url,
            "audioUrl": self.audio_url,
            "videoParams": video_params,
        }
        if self.vocal_audio_url:
            body["vocalAudioUrl"] = self.vocal_audio_url
        return body


def estimate_credits(duration_seconds: float, *, fps_original: bool, source_fps: float) -> float:
    """The service's price: 1 credit a second at 25 fps, × source fps / 25 with "original"."""
    rate = (source_fps / BILLING_FPS) if fps_original and source_fps > 0 else 1.0
    return max(0.0, duration_seconds) * rate


@dataclass(frozen=True)
class UploadPolicy:
    access_id: str
    policy: str
    signature: str
    dir: str
    host: str
    expire: float
    callback: str
    req_id: str
    key: str | None = None

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> UploadPolicy:
        return cls(
            access_id=str(data.get("OSSAccessKeyId") or data.get("accessId") or ""),
            policy=str(data.get("policy") or ""),
            signature=str(data.get("signature") or ""),
            dir=str(data.get("dir") or ""),
            host=str(data.get("host") or ""),
            expire=_as_float(data.get("expire")) or 0.0,
            callback=str(data.get("callback") or ""),
            req_id=str(data.get("reqId") or ""),
            key=(str(data["key"]) if data.get("key") else None),
        )


@dataclass(frozen=True)
class UploadedFile:
    url: str
    expire_at: float  # epoch seconds; conservative (may be earlier than the service's own)
    size: int


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    status: TaskStatus
    reason: str = ""
    video_urls: tuple[str, ...] = ()
    expire_at: float | None = None  # epoch seconds when the result is deleted
    error_code: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, task_id: str, data: Any) -> TaskInfo:
        payload = _unnest(data)
        task = payload.get("task") if isinstance(payload.get("task"), dict) else payload
        return cls(
            task_id=str(task.get("taskId") or task.get("taskID") or task_id),
            status=_parse_status(task.get("status")),
            reason=str(task.get("reason") or ""),
            video_urls=tuple(_video_urls(payload) or _video_urls(task)),
            expire_at=_epoch_seconds(task.get("expire")),
            error_code=str(task.get("errorCode") or ""),
            raw=payload,
        )


def _unnest(data: Any) -> dict[str, Any]:
    """Descend through ``{"data": {...}}`` wrappers until the task shows."""
    for _ in range(4):
        if not isinstance(data, dict):
            return {}
        if "task" in data or "status" in data or "videos" in data:
            return data
        data = data.get("data")
    return data if isinstance(data, dict) else {}


def _parse_status(value: Any) -> TaskStatus:
    try:
        return TaskStatus(int(value))
    except (TypeError, ValueError):
        return TaskStatus.UNKNOWN


def _video_urls(container: dict[str, Any]) -> list[str]:
    videos = container.get("videos")
    if not isinstance(videos, list):
        return []
    urls = []
    for item in videos:
        url = item.get("videoUrl") or item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            urls.append(url)
    return urls


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _epoch_seconds(value: Any) -> float | None:
    """The service gives milliseconds; tolerate seconds too."""
    number = _as_float(value)
    if number is None or number <= 0:
        return None
    return number / 1000.0 if number > 1e11 else number
