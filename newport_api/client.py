"""The Newport AI client: upload, submit, poll, download and credits.

One ``NewportClient`` belongs to one thread at a time.  Files are streamed in
both directions in 1 MiB chunks, so memory does not grow with file size, and
every loop checks the client's cancel token between chunks.
"""

from __future__ import annotations

import calendar
import mimetypes
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import requests

from . import errors
from .cancel import CancelToken
from .http import (
    MAX_JSON_BYTES,
    MSG_RATE_LIMITED,
    RetryPolicy,
    Timeouts,
    Transport,
    parse_retry_after,
    read_capped,
)
from .models import DEFAULT_BASE_URL, TalkingFaceRequest, TaskInfo, UploadedFile, UploadPolicy

CHUNK_SIZE = 1024 * 1024
# Writes of 256 KiB stay within a core's L2 cache; 1 MiB writes made downloads 2-3x slower (bench/).
DOWNLOAD_CHUNK_SIZE = 256 * 1024
UPLOAD_SCENE = "Dream-CN"
# Storage URLs are promised for a day; the service's expiry stamps carry no
# time zone, so they are read as the earliest plausible one (UTC+8).
STORAGE_URL_LIFETIME = 24 * 3600.0
EXPIRE_AT_ZONE_OFFSET = 8 * 3600.0

ProgressCallback = Callable[[int, int | None], None]

MSG_RESULT_EXPIRED = ("The result is no longer on Newport AI's servers (results are kept about a day) "
                      "— use Retry to generate it again.")
MSG_DOWNLOAD_BROKEN = ("The download of the result kept breaking off — check your internet connection, "
                       "then use Retry to resume it.")
MSG_DOWNLOAD_NOT_VIDEO = ("Newport AI's result server sent something that is not the video — "
                          "use Retry in a few minutes to download it again.")
MSG_STORAGE_UNAVAILABLE = ("Newport AI's storage is not answering properly right now — "
                           "try again in a few minutes.")
MSG_STORAGE_LOST = ("Newport AI's storage did not keep the upload — try again in a few minutes, "
                    "and report it if it keeps happening.")
MSG_STORAGE_REFUSED = ("Newport AI's storage refused the upload — try again in a few minutes, "
                       "and report it if it keeps happening.")


class NewportClient:
    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, *, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, ca_bundle: str | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.transport = Transport(base_url, api_key, timeouts=timeouts, retry=retry, ca_bundle=ca_bundle,
                                   cancel=cancel)

    def __repr__(self) -> str:
        return f"NewportClient(base_url={self.transport.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    @property
    def cancel(self) -> CancelToken:
        return self.transport.cancel

    # -- upload ---------------------------------------------------------------

    def get_upload_policy(self) -> UploadPolicy:
        data = self.transport.call_api("/api/file/v1/get_policy", json_body={"scene": UPLOAD_SCENE})
        if not isinstance(data, dict):
            raise errors.ProtocolError("Newport AI's storage answered oddly — try again later.",
                                       detail="policy data is not an object")
        policy = UploadPolicy.from_data(data)
        if not (policy.host and policy.policy and policy.signature):
            raise errors.ProtocolError("Newport AI's storage answered oddly — try again later.",
                                       detail="policy lacks host, policy or signature")
        return policy

    def upload_file(self, path: str | os.PathLike[str], *,
                    on_progress: ProgressCallback | None = None) -> UploadedFile:
        """Upload a local file through the service's storage and return its URL."""
        source = Path(path)
        if not source.is_file():
            raise errors.ConfigurationError(f"The file '{source}' does not exist — check the path, then retry.")
        size = source.stat().st_size

        def post_once() -> str:
            try:
                policy = self.get_upload_policy()  # retried on its own: its failure is final here
            except errors.NewportError as error:
                raise _Final(error) from None
            return self._post_to_storage(policy, source, size, on_progress)

        for round_number in (1, 2):
            try:
                req_id = self.transport.with_retries(post_once)
            except _Final as final:
                raise final.error from None
            try:
                data = self.transport.call_api("/api/file/v1/policy_upload_finish", json_body={"reqId": req_id})
                break
            except errors.InvalidParameterError as error:
                # The service does not know the upload: storage said yes but kept nothing.  Once more.
                if round_number == 2:
                    raise errors.ServiceUnavailableError(MSG_STORAGE_LOST, detail=error.detail) from None
        url = data.get("url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.ProtocolError("Newport AI did not confirm the upload — try again.",
                                       detail="finish returned no url")
        return UploadedFile(url=url, expire_at=_url_expiry(url, data.get("expireAt")), size=size)

    def _post_to_storage(self, policy: UploadPolicy, source: Path, size: int,
                         on_progress: ProgressCallback | None) -> str:
        key = policy.key or policy.dir + _storage_name(source.name)
        fields = {
            "key": key,
            "policy": policy.policy,
            "OSSAccessKeyId": policy.access_id,
            "signature": policy.signature,
            "callback": policy.callback,
            "success_action_status": "200",
        }
        body = MultipartFileBody(fields, source, size, self.cancel, on_progress)
        response = self.transport.send_plain(
            "POST", policy.host, data=body, stream=True, allow_redirects=False,
            headers={"Content-Type": body.content_type, "Content-Length": str(len(body))})
        with response:
            raw = read_capped(response, MAX_JSON_BYTES, cancel=self.cancel)
            if response.status_code >= 300:
                raise _storage_error(response, raw)
            return _req_id_from_storage_answer(raw, self.transport) or policy.req_id

    # -- tasks ----------------------------------------------------------------

    def submit_talking_face(self, request: TalkingFaceRequest) -> str:
        """Start a talking-face task and return its id.  Never sent twice (see ``Transport``)."""
        data = self.transport.call_api("/api/async/talking_face", json_body=request.to_body(), idempotent=False)
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise errors.SubmitUncertainError(
                "Newport AI accepted the job but sent no task id — check your account before retrying.",
                detail=f"submit data: {str(data)[:200]}")
        return task_id

    def get_task(self, task_id: str) -> TaskInfo:
        data = self.transport.call_api("/api/getAsyncResult", json_body={"taskId": task_id}, allow_empty=True)
        return TaskInfo.parse(task_id, data)

    def remaining_credits(self) -> float | None:
        """The account's balance, or None when the service does not say."""
        return self.balance().credits

    def balance(self) -> Balance:
        """What the credits endpoint confirms: the key (an answer at all) and maybe the balance.

        The endpoint is undocumented: its absence (404) is "unknown", not an
        error, and confirms nothing about the key.  A rejected key raises.
        """
        try:
            data = self.transport.call_api("/api/remaining_credits", form={})
        except errors.ProtocolError as error:
            if error.http_status == 404:
                return Balance(confirmed=False, credits=None)
            raise
        if isinstance(data, dict):
            data = data.get("available_credits", data.get("credits"))
        try:
            return Balance(confirmed=True, credits=float(data))
        except (TypeError, ValueError):
            return Balance(confirmed=True, credits=None)

    # -- download -------------------------------------------------------------

    def download(self, url: str, dest: str | os.PathLike[str], *,
                 on_progress: ProgressCallback | None = None) -> Path:
        """Stream ``url`` into ``dest``.part, resuming with Range, and rename it when complete.

        The file is named by the caller only: nothing in the URL or the
        answer's headers chooses where it goes.  Retries count only attempts
        that made no progress, so a long transfer over a flaky line keeps
        going as long as bytes keep arriving; a read that waits longer than
        the read timeout for a byte counts as a failed attempt.  Redirects
        are followed (result hosts use them) and never carry the API key.
        """
        target = Path(dest)
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while True:
            before = _size_or_zero(part)
            try:
                self._download_once(url, part, on_progress)
                break
            except errors.NewportError as error:
                if not error.retryable:
                    raise
                failures = 0 if _size_or_zero(part) > before else failures + 1
                if failures >= self.transport.retry.attempts:
                    raise
                self.cancel.sleep(self.transport.retry.delay(failures, getattr(error, "retry_after", None)))
        os.replace(part, target)
        return target

    def _download_once(self, url: str, part: Path, on_progress: ProgressCallback | None) -> None:
        have = _size_or_zero(part)
        headers = {"Range": f"bytes={have}-"} if have else {}
        response = self.transport.send_plain("GET", url, stream=True, headers=headers)
        with response:
            if response.status_code == 416 and have:
                part.unlink()
                raise errors.NetworkError(MSG_DOWNLOAD_BROKEN, detail="range not satisfiable: restarting")
            if response.status_code in (403, 404, 410):
                raise errors.ResultExpiredError(MSG_RESULT_EXPIRED, http_status=response.status_code)
            self.transport.raise_for_http_status(response, host="download")
            _check_looks_like_media(response)
            offset = 0
            if response.status_code == 206:
                if _content_range_start(response) != have:
                    part.unlink(missing_ok=True)
                    raise errors.NetworkError(MSG_DOWNLOAD_BROKEN, detail="unexpected range: restarting")
                offset = have
            total = _total_size(response, offset)
            self._write_stream(response, part, offset, total, on_progress)

    def _write_stream(self, response: requests.Response, part: Path, offset: int, total: int | None,
                      on_progress: ProgressCallback | None) -> None:
        written = offset
        with open(part, "ab" if offset else "wb") as out:
            try:
                for chunk in response.iter_content(DOWNLOAD_CHUNK_SIZE):
                    self.cancel.raise_if_cancelled()
                    out.write(chunk)
                    written += len(chunk)
                    if on_progress:
                        on_progress(written, total)
            except requests.RequestException as exc:
                raise self.transport.broken_transfer(exc, MSG_DOWNLOAD_BROKEN) from None
            out.flush()
            os.fsync(out.fileno())
        if total is not None and written != total:
            self.cancel.raise_if_cancelled()
            raise errors.NetworkError(MSG_DOWNLOAD_BROKEN, detail=f"cut short: {written} of {total} bytes")
        if written == 0:
            part.unlink(missing_ok=True)
            raise errors.ServiceUnavailableError(MSG_DOWNLOAD_NOT_VIDEO, detail="the result is empty",
                                                 http_status=response.status_code)


@dataclass(frozen=True)
class Balance:
    confirmed: bool  # the service answered for this key (a missing endpoint confirms nothing)
    credits: float | None  # None: not reported


class _Final(Exception):
    """Carries an error through ``with_retries`` without another round of retries."""

    def __init__(self, error: errors.NewportError) -> None:
        super().__init__(str(error))
        self.error = error


class MultipartFileBody:
    """A multipart/form-data body streamed from disk, with the file as the last field.

    It has a length, so the request carries a Content-Length (storage hosts
    refuse chunked PostObject uploads), and it yields 1 MiB chunks.
    """

    def __init__(self, fields: dict[str, str], source: Path, size: int, cancel: CancelToken,
                 on_progress: ProgressCallback | None) -> None:
        self.boundary = "----talkingface" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._source = source
        self._size = size
        self._cancel = cancel
        self._on_progress = on_progress
        self._head = self._encode_head(fields, source.name)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    def _encode_head(self, fields: dict[str, str], filename: str) -> bytes:
        parts = [f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                 for name, value in fields.items() if value]
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe_name = _storage_name(filename)
        parts.append(f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{safe_name}"\r\nContent-Type: {mime}\r\n\r\n')
        return "".join(parts).encode()

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with open(self._source, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                self._cancel.raise_if_cancelled()
                sent += len(chunk)
                yield chunk
                if self._on_progress:
                    self._on_progress(sent, self._size)
        if sent != self._size:
            raise errors.ConfigurationError(f"The file '{self._source}' changed while it was being uploaded.")
        yield self._tail


def _storage_name(name: str) -> str:
    """A name safe for an object key and a header: our own, never the server's."""
    stem, suffix = os.path.splitext(name)
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60] or "media"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", suffix)[:10]
    return f"{secrets.token_hex(4)}_{clean}{suffix}"


def _storage_error(response: requests.Response, raw: bytes) -> errors.NewportError:
    """The error for a storage answer of 300 or more; its message must also do as the final word."""
    code, message = _oss_error(raw)
    detail = f"storage HTTP {response.status_code}: {code} {message}".strip()
    if response.status_code == 429:
        return errors.RateLimitedError(MSG_RATE_LIMITED, retry_after=parse_retry_after(response),
                                       http_status=429, detail=detail)
    if response.status_code >= 500:
        return errors.ServiceUnavailableError(MSG_STORAGE_UNAVAILABLE, http_status=response.status_code,
                                              detail=detail)
    if code == "EntityTooLarge":
        return errors.StorageError("The file is too large for Newport AI's storage — use a shorter clip.",
                                   http_status=response.status_code, detail=detail)
    # A refused signature or an expired policy heals with a fresh policy, so retry.
    return errors.ServiceUnavailableError(MSG_STORAGE_REFUSED, http_status=response.status_code, detail=detail)


def _oss_error(raw: bytes) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError:
        return "", raw[:200].decode("utf-8", "replace")
    return (root.findtext("Code") or "", root.findtext("Message") or "")


def _req_id_from_storage_answer(raw: bytes, transport: Transport) -> str | None:
    """The callback makes storage answer with the API's envelope; tolerate anything else."""
    import json

    try:
        envelope = json.loads(raw) if raw.strip() else None
    except ValueError:
        return None
    if not isinstance(envelope, dict):
        return None
    if "code" in envelope:
        transport.raise_for_envelope_code(envelope)
    data = envelope.get("data")
    req_id = data.get("reqId") if isinstance(data, dict) else None
    return str(req_id) if req_id else None


def _url_expiry(url: str, expire_at_text: Any) -> float:
    now = time.time()
    candidates = [now + STORAGE_URL_LIFETIME]
    expires = parse_qs(urlsplit(url).query).get("Expires")
    if expires and expires[0].isdigit():
        candidates.append(float(expires[0]))
    if isinstance(expire_at_text, str):
        try:
            stamp = time.strptime(expire_at_text.strip(), "%Y-%m-%d %H:%M:%S")
            candidates.append(calendar.timegm(stamp) - EXPIRE_AT_ZONE_OFFSET)
        except ValueError:
            pass
    return min(candidates)


def _check_looks_like_media(response: requests.Response) -> None:
    """An error page served with a success status must not become the result video."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml"):
        raise errors.ServiceUnavailableError(MSG_DOWNLOAD_NOT_VIDEO, http_status=response.status_code,
                                             detail=f"the result was served as {content_type}")


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _content_range_start(response: requests.Response) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _total_size(response: requests.Response, offset: int) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if response.status_code == 206 and match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and "Content-Encoding" not in response.headers:
        return offset + int(length) if response.status_code == 206 else int(length)
    return None
