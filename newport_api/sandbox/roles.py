"""The three listeners' request handlers: the API, the OSS-like storage host and the result cdn.

Three origins on three ports, like the real service's three hosts, so tests
can check that the client sends ``Authorization`` to the API origin only.

Threading: one handler instance per connection, on its own daemon thread (see
httpcore); shared state is reached through the context's locked members.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

from .faults import Fault
from .httpcore import (
    CONTROL_PHASE,
    Received,
    Reply,
    SandboxHandler,
    Throttle,
    envelope,
    file_reply,
    json_reply,
    oss_error,
)
from .multipart import header_parameters
from .signing import UrlSignature
from .tasks import RESULT_PATH, poll_task, result_expired, submit_task
from .uploads import accept_upload, finish_upload, grant_policy, receive_upload

MAX_API_BODY_BYTES = 1024 * 1024
CONTROL_PREFIX = "/_sandbox/"

API_PHASES = {
    "/api/file/v1/get_policy": "policy",
    "/api/file/v1/policy_upload_finish": "finish",
    "/api/async/talking_face": "submit",
    "/api/getAsyncResult": "poll",
    "/api/remaining_credits": "credits",
}


def parse_api_body(content_type: str, raw: bytes) -> Any:
    """JSON (whatever the declared type, as lenient servers do), form fields, or None."""
    kind, _ = header_parameters(content_type) if content_type else ("", {})
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def bearer_key(authorization: str | None) -> str:
    value = (authorization or "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


def key_rejection(authorization: str | None, valid_keys: frozenset[str] | None) -> Reply | None:
    key = bearer_key(authorization)
    if not key:
        return envelope(13005, "key is blank")
    if not key.startswith("sk-"):
        return envelope(13007, "key prefix is wrong")
    if valid_keys is not None and key not in valid_keys:
        return envelope(13006, "key is invalid")
    return None


class ApiHandler(SandboxHandler):
    role = "api"

    def phase_of(self, method: str, path: str) -> str:
        if path.startswith(CONTROL_PREFIX):
            return CONTROL_PHASE
        return API_PHASES.get(path, "other") if method == "POST" else "other"

    def error_reply(self, status: int) -> Reply:
        message = {401: "Unauthorized", 403: "Forbidden", 404: "not found", 405: "method not allowed",
                   413: "request body too large", 429: "Too Many Requests"}.get(status, "server error")
        return envelope(status, message, status=status)

    def receive(self, phase: str, fault: Fault | None) -> Received:
        parsed = self._small_body()
        return Received(recorded=parsed if isinstance(parsed, dict) else None, payload=parsed)

    def _small_body(self) -> Any:
        raw = self.request_body().read_all(MAX_API_BODY_BYTES)
        return parse_api_body(self.headers.get("Content-Type", ""), raw)

    def respond(self, phase: str, fault: Fault | None, received: Received) -> Reply:
        if phase == "other":
            return self.error_reply(405 if self.url.path in API_PHASES else 404)
        rejection = key_rejection(self.headers.get("Authorization"), self.context.config.api_keys)
        if rejection is not None:
            return rejection
        body = received.payload
        if phase == "policy":
            refused = self.context.faults.take_refusal("storage")
            return envelope(0, "success", grant_policy(self.context, refused))
        if phase == "finish":
            return finish_upload(self.context, body)
        if phase == "submit":
            return submit_task(self.context, body)
        if phase == "poll":
            return poll_task(self.context, body, fault)
        return envelope(0, "success", self.context.config.credits)

    def serve_control(self) -> None:
        """The out-of-process switches: inject, reset, clear_faults, requests, health (loopback only)."""
        body = self._small_body()
        if self.client_address[0] not in ("127.0.0.1", "::1"):
            self.send_reply(self.error_reply(403))
            return
        self.send_reply(self._control_reply(self.command, self.url.path[len(CONTROL_PREFIX):], body))

    def _control_reply(self, method: str, action: str, body: Any) -> Reply:
        context = self.context
        if method == "GET" and action == "health":
            origins = context.origins
            return envelope(0, "success", {"status": "ok", "base_url": origins.api,
                                           "storage_origin": origins.storage, "cdn_origin": origins.cdn})
        if method == "GET" and action == "requests":
            return json_reply([entry.to_json() for entry in context.log.snapshot()])
        if method == "POST" and action == "reset":
            context.reset()
            return envelope(0, "success")
        if method == "POST" and action == "clear_faults":
            context.faults.clear()
            return envelope(0, "success")
        if method == "POST" and action == "inject":
            return self._inject(body)
        return self.error_reply(404)

    def _inject(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("options") or {}, dict):
            return envelope(10192, "inject takes a JSON object {phase, fault, times, options: {...}}",
                            status=400)
        try:
            self.context.faults.add(str(body.get("phase")), str(body.get("fault")), body.get("times", 1),
                                    body.get("options") or {})
        except (ValueError, TypeError) as error:
            return envelope(10192, str(error), status=400)
        return envelope(0, "success")


class StorageHandler(SandboxHandler):
    """The OSS-like host: PostObject uploads, and pre-signed GET/HEAD of stored objects."""

    role = "storage"

    def phase_of(self, method: str, path: str) -> str:
        if method == "POST":
            return "storage"
        return "download" if method in ("GET", "HEAD") else "other"

    def receive(self, phase: str, fault: Fault | None) -> Received:
        if phase != "storage":
            return super().receive(phase, fault)
        throttle = None
        if fault is not None and fault.name == "slow":
            throttle = Throttle(float(fault.options["bytes_per_second"]), self.context.stopping)
        content_type = self.headers.get("Content-Type", "")
        upload = receive_upload(self.context, self.request_body(), content_type, throttle)
        return Received(recorded=dict(upload.fields), payload=upload, cleanup=upload.discard)

    def respond(self, phase: str, fault: Fault | None, received: Received) -> Reply:
        if phase == "storage":
            return accept_upload(self.context, received.payload)
        if phase == "download":
            return self._object_reply()
        return oss_error(405, "MethodNotAllowed", "The method is not allowed against this resource.")

    def _object_reply(self) -> Reply:
        key = unquote(self.url.path.lstrip("/"))
        signature = self.context.signer.check_url(key, self.url.query)
        if signature is UrlSignature.MISSING:
            return oss_error(403, "AccessDenied", "You have no right to access this object (no signature).")
        if signature is UrlSignature.INVALID:
            return oss_error(403, "SignatureDoesNotMatch", "The signature we calculated does not match.")
        stored = self.context.store.object_for_key(key)
        if stored is None or stored.expired(time.monotonic(), self.context.config.upload_ttl_seconds):
            return oss_error(404, "NoSuchKey", "The specified key does not exist.")
        return file_reply(stored.path, stored.size, stored.content_type, self.headers.get("Range"))


class CdnHandler(SandboxHandler):
    """Where result videos are served: /results/<taskId>.mp4, with Range support, until they expire."""

    role = "cdn"

    def phase_of(self, method: str, path: str) -> str:
        return "download" if method in ("GET", "HEAD") and path.startswith("/results/") else "other"

    def respond(self, phase: str, fault: Fault | None, received: Received) -> Reply:
        if phase != "download":
            return oss_error(404 if self.command in ("GET", "HEAD") else 405)
        match = RESULT_PATH.match(self.url.path)
        task = self.context.store.task(match.group(1)) if match else None
        now = time.monotonic()
        if (task is None or task.status(now) != 3 or task.video_withheld
                or result_expired(self.context, task, now)):
            return oss_error(404, "NoSuchKey", "The specified key does not exist.")
        return file_reply(task.source, task.source.stat().st_size, "video/mp4", self.headers.get("Range"))
