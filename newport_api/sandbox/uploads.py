"""The upload path of contract section 3: get_policy, the OSS-like PostObject, policy_upload_finish.

The PostObject body is streamed: the multipart parser hands the ``file`` part
to disk in bounded chunks, so a 1 GiB upload costs the server a few hundred
KiB of memory. The file lands in ``<storage>/incoming`` first and is moved to
``<storage>/objects/<sha256 of key>`` only once the policy checks pass, so a
rejected upload never becomes visible and keys never touch the file system.

Threading: every function here runs on the handler thread of one request;
shared state is reached only through the context's locked store.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from .context import SandboxContext
from .httpcore import CHUNK_BYTES, Reply, RequestBody, Throttle, envelope, oss_error
from .multipart import MultipartError, MultipartParser, header_parameters
from .signing import UploadPolicy, encode_callback
from .store import PolicyGrant, StoredObject, epoch_at

MAX_FIELD_BYTES = 64 * 1024
REQUIRED_FIELDS = ("key", "policy", "OSSAccessKeyId", "signature")
ILLEGAL_PARAMETER = 10192


# --- get_policy and policy_upload_finish (API origin) ---------------------------------------------------

def grant_policy(context: SandboxContext, refused: bool) -> dict[str, Any]:
    """The ``data`` of get_policy: a signed policy for one upload into a fresh directory."""
    config = context.config
    now = time.time()
    req_id = uuid.uuid4().hex
    directory = f"tmp/{datetime.now(UTC):%Y-%m-%d}/{secrets.token_hex(8)}/"
    key = directory + uuid.uuid4().hex if config.policy_shape == "new" else None
    expiration = now + config.policy_ttl_seconds
    policy = UploadPolicy(expiration, 0, config.max_upload_bytes, directory, key).encode()
    context.store.add_grant(PolicyGrant(req_id, policy, directory, key))
    data: dict[str, Any] = {
        "accessId": context.signer.access_id,
        "policy": policy,
        "signature": context.signer.sign_policy(policy),
        "dir": directory,
        "host": context.origins.refused if refused else context.origins.storage,
        "expire": str(int(expiration)),
        "callback": encode_callback(context.origins.api, req_id),
        "reqId": req_id,
    }
    if key is not None:
        data.update(key=key, OSSAccessKeyId=context.signer.access_id)
    return data


def finish_upload(context: SandboxContext, body: Any) -> Reply:
    req_id = body.get("reqId") if isinstance(body, dict) else None
    if not isinstance(req_id, str) or not req_id:
        return envelope(ILLEGAL_PARAMETER, "illegal parameter: reqId is required")
    stored = context.store.object_for_req_id(req_id)
    if stored is None:
        return envelope(ILLEGAL_PARAMETER, "illegal parameter: reqId (no upload arrived for it)")
    expires = epoch_at(stored.stored_at + context.config.upload_ttl_seconds)
    return envelope(0, "success", {
        "url": object_url(context, stored.key, int(expires)),
        "expireAt": datetime.fromtimestamp(expires, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "reqId": req_id,
    })


def object_url(context: SandboxContext, key: str, expires: int) -> str:
    return f"{context.origins.storage}/{quote(key, safe='/')}?{context.signer.signed_query(key, expires)}"


def object_file(context: SandboxContext, key: str) -> Path:
    return context.storage_dir / "objects" / hashlib.sha256(key.encode("utf-8")).hexdigest()


# --- the PostObject (storage origin) -------------------------------------------------------------------

@dataclass
class ReceivedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    temp_path: Path | None = None
    file_size: int = 0
    file_content_type: str | None = None
    fields_after_file: bool = False
    problem: Reply | None = None  # a malformed body, decided while reading

    def discard(self) -> None:
        if self.temp_path is not None:
            self.temp_path.unlink(missing_ok=True)


class _UploadSink:
    """Receives the multipart parts: small fields into memory, the ``file`` part onto disk."""

    def __init__(self, upload: ReceivedUpload, temp_path: Path, write_limit: int) -> None:
        self._upload = upload
        self._temp_path = temp_path
        self._write_limit = write_limit
        self._file: BinaryIO | None = None
        self._in_file = False
        self._file_seen = False
        self._field_name = ""
        self._field_value = bytearray()

    def part_begin(self, headers: dict[str, str]) -> None:
        if self._file_seen:
            self._upload.fields_after_file = True  # OSS ignores, we refuse: the file must be last
        _, params = header_parameters(headers.get("content-disposition", ""), "content-disposition")
        name = params.get("name", "")
        if name == "file" and not self._file_seen:
            self._in_file = self._file_seen = True
            self._upload.file_content_type = headers.get("content-type")
            self._upload.temp_path = self._temp_path
            self._file = open(self._temp_path, "wb")  # noqa: SIM115 (open across callbacks; close() ends it)
        else:
            self._in_file = False
            self._field_name, self._field_value = name, bytearray()

    def part_data(self, data: bytes) -> None:
        if not self._in_file:
            if len(self._field_value) + len(data) > MAX_FIELD_BYTES:
                raise MultipartError(f"form field {self._field_name!r} is too large")
            self._field_value += data
            return
        self._upload.file_size += len(data)
        if self._file is not None and self._upload.file_size > self._write_limit:
            self.close()  # too large: keep counting, stop writing; the policy check refuses it
        if self._file is not None:
            self._file.write(data)

    def part_end(self) -> None:
        if self._in_file:
            self.close()
            self._in_file = False
        elif self._field_name:
            self._upload.fields.setdefault(self._field_name, self._field_value.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def receive_upload(context: SandboxContext, body: RequestBody, content_type: str,
                   throttle: Throttle | None) -> ReceivedUpload:
    """Read the whole PostObject body, streaming the file part to a temporary file."""
    upload = ReceivedUpload()
    kind, params = header_parameters(content_type)
    if kind != "multipart/form-data" or not params.get("boundary"):
        body.drain()
        upload.problem = oss_error(400, "InvalidArgument", "The body must be multipart/form-data.")
        return upload
    incoming = context.storage_dir / "incoming"
    sink = _UploadSink(upload, incoming / f"{uuid.uuid4().hex}.part", context.config.max_upload_bytes)
    try:
        parser = MultipartParser(params["boundary"], sink)
        for data in body.chunks(CHUNK_BYTES, throttle):
            parser.feed(data)
        parser.close()
    except MultipartError as error:
        body.drain()  # read to the end so the client gets to see the error answer
        upload.problem = oss_error(400, "MalformedPOSTRequest", f"The body of your POST request is not "
                                   f"well-formed multipart/form-data: {error}")
    finally:
        sink.close()
    return upload


def accept_upload(context: SandboxContext, upload: ReceivedUpload) -> Reply:
    """Check the upload against its policy; on success store it and answer like the callback does."""
    problem = upload.problem or _form_problem(upload) or _policy_problem(context, upload)
    if problem is not None:
        return problem
    grant = context.store.grant_for_policy(upload.fields["policy"])
    if grant is None:  # signed by us but unknown: the grant was made by an earlier sandbox
        return oss_error(403, "AccessDenied", "Invalid according to Policy: unknown policy.")
    stored = _store(context, upload)
    context.store.put_object(stored, grant.req_id)
    return _success_reply(upload.fields, grant.req_id)


def _form_problem(upload: ReceivedUpload) -> Reply | None:
    if upload.fields_after_file:
        return oss_error(400, "InvalidArgument", "The file field must be the last field of the form.")
    missing = [name for name in REQUIRED_FIELDS if not upload.fields.get(name)]
    if missing:
        return oss_error(400, "InvalidArgument", f"Missing form field(s): {', '.join(missing)}.")
    if upload.temp_path is None:
        return oss_error(400, "InvalidArgument", "The form has no file field.")
    return None


def _policy_problem(context: SandboxContext, upload: ReceivedUpload) -> Reply | None:
    fields = upload.fields
    if fields["OSSAccessKeyId"] != context.signer.access_id:
        return oss_error(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
    if not context.signer.policy_signature_valid(fields["policy"], fields["signature"]):
        return oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
    try:
        policy = UploadPolicy.decode(fields["policy"])
    except ValueError as error:
        return oss_error(400, "InvalidPolicyDocument", str(error))
    if time.time() > policy.expiration:
        return oss_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    key = fields["key"]
    if not key.startswith(policy.key_prefix):
        return oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                         f'["starts-with", "$key", "{policy.key_prefix}"]')
    if policy.exact_key is not None and key != policy.exact_key:
        return oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                         f'["eq", "$key", "{policy.exact_key}"]')
    if upload.file_size > policy.max_bytes:
        return oss_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
    if upload.file_size < policy.min_bytes:
        return oss_error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum size.")
    return None


def _store(context: SandboxContext, upload: ReceivedUpload) -> StoredObject:
    key = upload.fields["key"]
    assert upload.temp_path is not None
    destination = object_file(context, key)
    os.replace(upload.temp_path, destination)
    content_type = (mimetypes.guess_type(key)[0] or upload.file_content_type or "application/octet-stream")
    return StoredObject(key, destination, upload.file_size, content_type, time.monotonic())


def _success_reply(fields: dict[str, str], req_id: str) -> Reply:
    if fields.get("callback"):  # OSS relays the callback's answer: the service's envelope
        return envelope(0, "success", {"reqId": req_id})
    status = fields.get("success_action_status", "204")
    if status == "201":
        return Reply(201, b'<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse/>\n', "application/xml")
    return Reply(200 if status == "200" else 204)
