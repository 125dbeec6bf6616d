"""Tests of the local Newport sandbox over real loopback sockets, with `requests` as the client.

The project's own client is deliberately not used: these tests pin down what
the sandbox promises (contract section 6), so the client's tests can lean on it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from newport_api.sandbox import Sandbox
from newport_api.sandbox.multipart import MultipartError, MultipartParser

KEY = "sk-sandbox-test"
REPO_ROOT = Path(__file__).resolve().parents[1]
VIDEO_PARAMS = {"video_width": 0, "video_height": 0, "video_enhance": 1}
CONTENT = random.Random(5).randbytes(50_000)


# --- helpers ---------------------------------------------------------------------------------------------

class Api:
    """A thin `requests` driver of the sandbox's API and storage origins."""

    def __init__(self, sandbox: Sandbox, session: requests.Session, key: str = KEY) -> None:
        self.sandbox = sandbox
        self.session = session
        self.key = key

    def post(self, path: str, body: Any = None, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        kwargs.setdefault("timeout", 10)
        return self.session.post(self.sandbox.base_url + path, json=body, headers=headers, **kwargs)

    def call(self, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        answer = self.post(path, body, **kwargs)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def policy(self) -> dict[str, Any]:
        envelope = self.call("/api/file/v1/get_policy", {"scene": "Dream-CN"})
        assert envelope["code"] == 0, envelope
        return envelope["data"]

    def post_object(self, policy: dict[str, Any], content: bytes = CONTENT, **form: Any) -> requests.Response:
        return self.session.post(policy["host"], files=post_object_form(policy, content, **form), timeout=10)

    def finish(self, req_id: str) -> dict[str, Any]:
        return self.call("/api/file/v1/policy_upload_finish", {"reqId": req_id})

    def uploaded_url(self, content: bytes = CONTENT, name: str = "clip.mp4") -> str:
        policy = self.policy()
        stored = self.post_object(policy, content, key=policy["dir"] + name)
        assert stored.status_code == 200, stored.text
        envelope = self.finish(stored.json()["data"]["reqId"])
        assert envelope["code"] == 0, envelope
        return envelope["data"]["url"]

    def submit(self, video_url: str, audio_url: str | None = None) -> str:
        body = {"srcVideoUrl": video_url, "audioUrl": audio_url or video_url, "videoParams": VIDEO_PARAMS}
        envelope = self.call("/api/async/talking_face", body)
        assert envelope["code"] == 0, envelope
        return envelope["data"]["taskId"]

    def poll(self, task_id: str) -> dict[str, Any]:
        envelope = self.call("/api/getAsyncResult", {"taskId": task_id})
        assert envelope["code"] == 0, envelope
        return envelope["data"]

    def finished_task(self, content: bytes = CONTENT) -> tuple[str, str]:
        """(taskId, videoUrl) of a task that succeeded (the sandbox must have processing_seconds=0)."""
        task_id = self.submit(self.uploaded_url(content))
        data = self.poll(task_id)
        assert data["task"]["status"] == 3, data
        return task_id, data["videos"][0]["videoUrl"]


def post_object_form(policy: dict[str, Any], content: bytes, key: str | None = None,
                     file_first: bool = False, **overrides: str) -> list[tuple[str, Any]]:
    fields = {
        "key": key or policy.get("key") or policy["dir"] + "clip.mp4",
        "policy": policy["policy"],
        "OSSAccessKeyId": policy.get("OSSAccessKeyId", policy["accessId"]),
        "signature": policy["signature"],
        "callback": policy["callback"],
        "success_action_status": "200",
        **overrides,
    }
    parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields.items()]
    file_part = ("file", ("clip.mp4", content, "video/mp4"))
    return [file_part, *parts] if file_first else [*parts, file_part]


def oss_code(answer: requests.Response) -> str:
    found = re.search(r"<Code>(\w+)</Code>", answer.text)
    assert found, answer.text
    return found.group(1)


def raw_get(url: str) -> tuple[str, bytes]:
    """(status line and headers, every body byte until the server closes) of a one-shot GET."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as connection:
        connection.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Connection: close\r\n\r\n".encode())
        received = bytearray()
        while piece := connection.recv(65536):
            received += piece
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


class _Session(requests.Session):
    """No call may hang the suite: a sandbox bug must fail a test, not stall it."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", 10)
        return super().request(*args, **kwargs)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with _Session() as web:
        web.trust_env = False  # a proxy from the environment must not get between us and 127.0.0.1
        yield web


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(processing_seconds=0.0) as sandbox:
        yield sandbox


@pytest.fixture
def api(sb: Sandbox, session: requests.Session) -> Api:
    return Api(sb, session)


# --- origins, envelope and keys --------------------------------------------------------------------------

def test_three_distinct_loopback_origins(sb: Sandbox) -> None:
    origins = [sb.base_url, sb.storage_origin, sb.cdn_origin]
    assert all(origin.startswith("http://127.0.0.1:") for origin in origins)
    assert len({port_of(origin) for origin in origins}) == 3


@pytest.mark.parametrize(("authorization", "code"), [
    (None, 13005), ("Bearer ", 13005), ("Bearer pk-123", 13007), ("Bearer sk-anything", 0),
])
def test_key_checks_with_any_sk_key(sb: Sandbox, session: requests.Session, authorization: str | None,
                                    code: int) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = session.post(sb.base_url + "/api/remaining_credits", data={"a": "1"}, headers=headers)
    assert answer.status_code == 200
    envelope = answer.json()
    assert set(envelope) == {"code", "message", "data"}
    assert envelope["code"] == code
    assert isinstance(envelope["message"], str) and envelope["message"]


def test_key_checks_with_a_key_list(session: requests.Session) -> None:
    with Sandbox(api_keys={"sk-good"}, credits=42.5) as sandbox:
        api = Api(sandbox, session, key="sk-good")
        wrong = api.call("/api/remaining_credits", key="sk-wrong")
        assert (wrong["code"], wrong["message"]) == (13006, "key is invalid")
        assert api.call("/api/remaining_credits") == {"code": 0, "message": "success", "data": 42.5}


def test_credits_is_form_encoded_and_recorded(sb: Sandbox, session: requests.Session) -> None:
    answer = session.post(sb.base_url + "/api/remaining_credits", data={"lang": "en"},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert answer.json() == {"code": 0, "message": "success", "data": 1000.0}
    (recorded,) = sb.requests
    assert (recorded.role, recorded.phase, recorded.body) == ("api", "credits", {"lang": "en"})
    assert recorded.authorization == f"Bearer {KEY}"


def test_unknown_api_path_is_404(sb: Sandbox, session: requests.Session) -> None:
    answer = session.post(sb.base_url + "/api/nope", json={}, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 404
    assert sb.count("other") == 1


# --- the upload flow -------------------------------------------------------------------------------------

def test_policy_shape(api: Api, sb: Sandbox) -> None:
    policy = api.policy()
    assert {"accessId", "policy", "signature", "dir", "host", "expire", "callback", "reqId"} <= set(policy)
    assert "key" not in policy
    assert policy["host"] == sb.storage_origin
    assert re.fullmatch(r"tmp/\d{4}-\d\d-\d\d/[0-9a-f]+/", policy["dir"])
    assert re.fullmatch(r"[0-9a-f]{32}", policy["reqId"])
    assert int(policy["expire"]) > time.time()
    assert len(base64.b64decode(policy["signature"])) == 20  # HMAC-SHA1
    document = json.loads(base64.b64decode(policy["policy"]))
    assert "expiration" in document
    assert ["content-length-range", 0, 5 * 1024**3] in document["conditions"]
    assert ["starts-with", "$key", policy["dir"]] in document["conditions"]
    assert "callbackUrl" in json.loads(base64.b64decode(policy["callback"]))


def test_upload_finish_and_read_back(api: Api, sb: Sandbox, session: requests.Session) -> None:
    policy = api.policy()
    stored = api.post_object(policy, key=policy["dir"] + "take one.mp4")
    assert stored.status_code == 200
    assert stored.json() == {"code": 0, "message": "success", "data": {"reqId": policy["reqId"]}}
    finished = api.finish(policy["reqId"])
    assert finished["code"] == 0
    data = finished["data"]
    assert data["reqId"] == policy["reqId"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", data["expireAt"])
    url = data["url"]
    assert url.startswith(sb.storage_origin + "/" + policy["dir"])
    assert {"Expires", "OSSAccessKeyId", "Signature"} <= set(re.findall(r"(\w+)=", urlsplit(url).query))
    whole = session.get(url)
    assert (whole.status_code, whole.content) == (200, CONTENT)
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes"
    head = session.head(url)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, str(len(CONTENT)), b"")


@pytest.mark.parametrize(("range_header", "first", "last"), [
    ("bytes=10-19", 10, 19), ("bytes=49990-", 49990, 49999), ("bytes=-5", 49995, 49999),
    ("bytes=49995-90000", 49995, 49999),
])
def test_ranges(api: Api, session: requests.Session, range_header: str, first: int, last: int) -> None:
    answer = session.get(api.uploaded_url(), headers={"Range": range_header})
    assert answer.status_code == 206
    assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{len(CONTENT)}"
    assert answer.content == CONTENT[first:last + 1]


def test_unsatisfiable_range_is_416(api: Api, session: requests.Session) -> None:
    answer = session.get(api.uploaded_url(), headers={"Range": "bytes=50000-"})
    assert answer.status_code == 416
    assert answer.headers["Content-Range"] == f"bytes */{len(CONTENT)}"


def test_object_url_needs_its_query_string(api: Api, session: requests.Session) -> None:
    url = api.uploaded_url()
    bare = session.get(url.split("?")[0])
    assert (bare.status_code, oss_code(bare)) == (403, "AccessDenied")
    tampered_url = re.sub(r"Signature=[^&]*", "Signature=0000", url)  # the whole value, %-escapes too
    assert tampered_url != url
    tampered = session.get(tampered_url)
    assert (tampered.status_code, oss_code(tampered)) == (403, "SignatureDoesNotMatch")
    assert session.get(url).status_code == 200


def test_file_must_be_the_last_field(api: Api) -> None:
    policy = api.policy()
    answer = api.post_object(policy, file_first=True)
    assert (answer.status_code, oss_code(answer)) == (400, "InvalidArgument")
    assert api.finish(policy["reqId"])["code"] == 10192  # nothing was stored


def test_key_outside_dir_is_refused(api: Api) -> None:
    policy = api.policy()
    answer = api.post_object(policy, key="tmp/elsewhere/clip.mp4")
    assert (answer.status_code, oss_code(answer)) == (403, "AccessDenied")
    assert "starts-with" in answer.text


def test_wrong_signature_is_refused(api: Api) -> None:
    policy = api.policy()
    answer = api.post_object(policy, signature=base64.b64encode(b"x" * 20).decode())
    assert (answer.status_code, oss_code(answer)) == (403, "SignatureDoesNotMatch")


def test_size_limit(session: requests.Session) -> None:
    with Sandbox(max_upload_bytes=1000) as sandbox:
        api = Api(sandbox, session)
        too_big = api.post_object(api.policy(), b"x" * 1001)
        assert (too_big.status_code, oss_code(too_big)) == (400, "EntityTooLarge")
        assert api.post_object(api.policy(), b"x" * 1000).status_code == 200


def test_expired_policy_is_refused(session: requests.Session) -> None:
    with Sandbox(policy_ttl_seconds=0.0) as sandbox:
        api = Api(sandbox, session)
        policy = api.policy()
        time.sleep(0.01)
        answer = api.post_object(policy)
        assert (answer.status_code, oss_code(answer)) == (403, "AccessDenied")
        assert "expired" in answer.text


def test_new_policy_shape_names_the_key(session: requests.Session) -> None:
    with Sandbox(policy_shape="new") as sandbox:
        api = Api(sandbox, session)
        policy = api.policy()
        assert policy["key"].startswith(policy["dir"]) and policy["OSSAccessKeyId"] == policy["accessId"]
        assert api.post_object(policy, key=policy["dir"] + "mine.mp4").status_code == 403
        assert api.post_object(policy).status_code == 200
        url = api.finish(policy["reqId"])["data"]["url"]
        assert session.get(url).content == CONTENT


def test_chunked_upload_is_accepted(api: Api, session: requests.Session) -> None:
    policy = api.policy()
    prepared = requests.Request("POST", policy["host"], files=post_object_form(policy, CONTENT)).prepare()
    body, content_type = prepared.body, prepared.headers["Content-Type"]
    assert isinstance(body, bytes)
    pieces = (body[start:start + 999] for start in range(0, len(body), 999))  # a generator: sent chunked
    answer = session.post(policy["host"], data=pieces, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    url = api.finish(policy["reqId"])["data"]["url"]
    assert session.get(url).content == CONTENT
    assert sb_recorded_storage(api.sandbox)[-1].headers.get("Transfer-Encoding") == "chunked"


def sb_recorded_storage(sandbox: Sandbox) -> list[Any]:
    return [entry for entry in sandbox.requests if entry.phase == "storage"]


def test_finish_with_unknown_req_id(api: Api) -> None:
    envelope = api.finish("0" * 32)
    assert envelope["code"] == 10192 and "illegal parameter" in envelope["message"]


def test_uploads_expire(session: requests.Session) -> None:
    with Sandbox(upload_ttl_seconds=0.3) as sandbox:
        url = Api(sandbox, session).uploaded_url()
        assert session.get(url).status_code == 200
        time.sleep(0.4)
        gone = session.get(url)
        assert (gone.status_code, oss_code(gone)) == (404, "NoSuchKey")


# --- submit and poll -------------------------------------------------------------------------------------

def _submit_bodies(url: str) -> list[tuple[str, dict[str, Any]]]:
    good = {"srcVideoUrl": url, "audioUrl": url, "videoParams": dict(VIDEO_PARAMS)}

    def changed(path: str, value: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(good))
        target = body["videoParams"] if "." in path else body
        name = path.split(".")[-1]
        if value is _DROP:
            target.pop(name)
        else:
            target[name] = value
        return body

    return [
        ("srcVideoUrl", changed("srcVideoUrl", _DROP)), ("srcVideoUrl", changed("srcVideoUrl", "")),
        ("audioUrl", changed("audioUrl", _DROP)), ("audioUrl", changed("audioUrl", 7)),
        ("vocalAudioUrl", changed("vocalAudioUrl", 3)),
        ("videoParams", changed("videoParams", _DROP)), ("videoParams", changed("videoParams", "0x0")),
        ("video_width", changed("videoParams.video_width", _DROP)),
        ("video_width", changed("videoParams.video_width", -1)),
        ("video_height", changed("videoParams.video_height", "720")),
        ("video_enhance", changed("videoParams.video_enhance", 2)),
        ("video_enhance", changed("videoParams.video_enhance", True)),
        ("fps", changed("videoParams.fps", "30")), ("fps", changed("videoParams.fps", None)),
        ("srcVideoUrl", changed("srcVideoUrl", "https://example.com/video.mp4")),
        ("audioUrl", changed("audioUrl", url.split("?")[0])),
    ]


_DROP = object()


def test_submit_validation_names_the_bad_field(api: Api, sb: Sandbox) -> None:
    url = api.uploaded_url()
    for field, body in _submit_bodies(url):
        envelope = api.call("/api/async/talking_face", body)
        assert envelope["code"] == 10192, (field, body)
        assert field in envelope["message"], (field, envelope)
    outside = api.call("/api/async/talking_face", _submit_bodies(url)[-2][1])
    assert "sandbox can only read files uploaded to its own storage" in outside["message"]
    good = {"srcVideoUrl": url, "audioUrl": url, "vocalAudioUrl": url,
            "videoParams": {**VIDEO_PARAMS, "fps": "original"}}
    envelope = api.call("/api/async/talking_face", good)
    assert envelope["code"] == 0 and re.fullmatch(r"[0-9a-f]{32}", envelope["data"]["taskId"])


def test_status_moves_1_2_3_and_the_result_is_the_source(session: requests.Session) -> None:
    with Sandbox(queued_seconds=0.3, processing_seconds=0.6) as sandbox:
        api = Api(sandbox, session)
        task_id = api.submit(api.uploaded_url())
        submitted = time.monotonic()
        seen: list[int] = []
        while not seen or seen[-1] != 3:
            data = api.poll(task_id)
            status = data["task"]["status"]
            if status == 3:
                elapsed = time.monotonic() - submitted
            if not seen or seen[-1] != status:
                seen.append(status)
            if status != 3:
                assert data["videos"] == []
            assert time.monotonic() - submitted < 5
            time.sleep(0.05)
        assert seen == [1, 2, 3]
        assert elapsed >= 0.85
        task = data["task"]
        assert (task["taskId"], task["taskType"], task["reason"], task["errorCode"]) == (
            task_id, "talking_face", "", 0)
        assert task["expire"] > (time.time() + 86000) * 1000
        assert data["images"] == [] and data["audios"] == []
        (video,) = data["videos"]
        assert video["videoType"] == "mp4"
        assert video["videoUrl"].startswith(f"{sandbox.cdn_origin}/results/{task_id}.mp4?Expires=")
        result = session.get(video["videoUrl"])
        assert (result.status_code, result.headers["Content-Type"]) == (200, "video/mp4")
        assert result.content == CONTENT
        part = session.get(video["videoUrl"], headers={"Range": "bytes=100-199"})
        assert (part.status_code, part.content) == (206, CONTENT[100:200])


def test_poll_accepts_task_id_spelled_taskID_and_refuses_unknown(api: Api) -> None:
    task_id = api.submit(api.uploaded_url())
    assert api.call("/api/getAsyncResult", {"taskID": task_id})["data"]["task"]["taskId"] == task_id
    assert api.call("/api/getAsyncResult", {"taskId": "f" * 32})["code"] == 10192


def test_results_expire(session: requests.Session) -> None:
    with Sandbox(processing_seconds=0.0, result_ttl_seconds=0.3) as sandbox:
        _, video_url = Api(sandbox, session).finished_task()
        assert session.get(video_url).status_code == 200
        time.sleep(0.4)
        assert session.get(video_url).status_code == 404


def test_loopback_media_is_fetched(api: Api, session: requests.Session, tmp_path: Path) -> None:
    (tmp_path / "local.mp4").write_bytes(CONTENT[:999])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/local.mp4"
        task_id = api.submit(url)
        video_url = api.poll(task_id)["videos"][0]["videoUrl"]
        assert session.get(video_url).content == CONTENT[:999]
    finally:
        server.shutdown()
        server.server_close()


# --- the request log -------------------------------------------------------------------------------------

def test_request_log_keeps_roles_apart(api: Api, sb: Sandbox, session: requests.Session) -> None:
    _, video_url = api.finished_task()
    session.get(video_url)
    log = sb.requests
    assert [(entry.role, entry.phase) for entry in log] == [
        ("api", "policy"), ("storage", "storage"), ("api", "finish"), ("api", "submit"), ("api", "poll"),
        ("cdn", "download")]
    for entry in log:
        assert (entry.authorization is not None) == (entry.role == "api")
    storage = log[1]
    assert (storage.method, storage.path) == ("POST", "/")
    assert storage.body is not None and storage.body["success_action_status"] == "200"
    assert "file" not in storage.body  # form fields only, never the bytes
    assert log[3].body is not None and log[3].body["videoParams"] == VIDEO_PARAMS
    download = log[-1]
    assert download.path.startswith("/results/") and "Expires=" in download.query
    assert [entry.time for entry in log] == sorted(entry.time for entry in log)
    assert (sb.count("poll"), sb.count("download"), sb.count("credits")) == (1, 1, 0)
    with pytest.raises(ValueError):
        sb.count("polling")


def test_reset_forgets_tasks_faults_and_log_but_keeps_files(api: Api, sb: Sandbox,
                                                            session: requests.Session) -> None:
    url = api.uploaded_url()
    task_id = api.submit(url)
    sb.inject("credits", "http_500", times=None)
    sb.reset()
    assert sb.requests == []
    assert api.call("/api/getAsyncResult", {"taskId": task_id})["code"] == 10192
    assert api.call("/api/remaining_credits")["code"] == 0
    assert session.get(url).content == CONTENT


# --- faults ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status"), [
    ("http_500", 500), ("http_502", 502), ("http_503", 503), ("http_401", 401), ("http_403", 403)])
def test_http_status_faults(api: Api, sb: Sandbox, fault: str, status: int) -> None:
    sb.inject("credits", fault)
    assert api.post("/api/remaining_credits").status_code == status
    assert api.post("/api/remaining_credits").status_code == 200


def test_http_429_with_retry_after(api: Api, sb: Sandbox) -> None:
    sb.inject("poll", "http_429", times=2, retry_after=7)
    answers = [api.post("/api/getAsyncResult", {"taskId": "x"}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "7"


def test_code_fault(api: Api, sb: Sandbox) -> None:
    sb.inject("submit", "code", code=13015, message="rate limit")
    assert api.call("/api/async/talking_face", {}) == {"code": 13015, "message": "rate limit", "data": None}


def test_answering_faults_leave_the_request_unprocessed(api: Api, sb: Sandbox) -> None:
    url = api.uploaded_url()
    sb.inject("submit", "http_503")
    assert api.post("/api/async/talking_face", {"srcVideoUrl": url, "audioUrl": url,
                                                "videoParams": VIDEO_PARAMS}).status_code == 503
    sb.inject("storage", "http_500")
    policy = api.policy()
    assert api.post_object(policy).status_code == 500
    assert api.finish(policy["reqId"])["code"] == 10192  # the upload was not kept


def test_reset_fault(api: Api, sb: Sandbox) -> None:
    sb.inject("finish", "reset")
    with pytest.raises(requests.ConnectionError):
        api.post("/api/file/v1/policy_upload_finish", {"reqId": "x"})
    assert api.call("/api/file/v1/policy_upload_finish", {"reqId": "x"})["code"] == 10192
    assert sb.count("finish") == 2


def test_reset_mid_body_fault(api: Api, sb: Sandbox, session: requests.Session) -> None:
    url = api.uploaded_url()
    sb.inject("download", "reset_mid_body")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url)
    sb.inject("submit", "reset_mid_body")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.post("/api/async/talking_face",
                 {"srcVideoUrl": url, "audioUrl": url, "videoParams": VIDEO_PARAMS})


def test_stall_fault(api: Api, sb: Sandbox) -> None:
    sb.inject("policy", "stall", seconds=2)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.post("/api/file/v1/get_policy", {"scene": "Dream-CN"}, timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert api.policy()["host"] == sb.storage_origin


def test_stop_interrupts_a_stall_promptly(session: requests.Session) -> None:
    sandbox = Sandbox().start()
    sandbox.inject("credits", "stall", seconds=30)
    failures: list[BaseException] = []

    def stalled_call() -> None:
        try:
            Api(sandbox, session).post("/api/remaining_credits", timeout=60)
        except requests.RequestException as error:
            failures.append(error)

    caller = threading.Thread(target=stalled_call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 5
    while sandbox.count("credits") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.count("credits") == 1
    started = time.monotonic()
    sandbox.stop()
    sandbox.stop()  # idempotent
    caller.join(5)
    assert time.monotonic() - started < 2.5
    assert not caller.is_alive() and len(failures) == 1


def _wake_ups(thread: threading.Thread) -> int:
    """How often the kernel has switched ``thread`` in since it started (its context switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's per-thread counters")
def test_an_idle_sandbox_sleeps_until_called_and_still_stops_at_once(session: requests.Session) -> None:
    """Tests run the sandbox inside Blender, where any thread waking to run Python while ``bpy.ops``
    runs under a context override can crash Python 3.11 builds: idle listeners must not wake."""
    with Sandbox() as sandbox:
        Api(sandbox, session).call("/api/remaining_credits")  # every listener is up and has served
        listeners = [thread for thread in threading.enumerate() if thread.name.startswith("newport-sandbox-")]
        assert len(listeners) == 3
        before = [_wake_ups(thread) for thread in listeners]
        time.sleep(1.0)
        after = [_wake_ups(thread) for thread in listeners]
        assert after == before, "an idle listener woke up (serve_forever's poll wakes 20 times a second)"
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert not any(thread.is_alive() for thread in listeners)
    with pytest.raises(requests.ConnectionError):
        session.post(sandbox.base_url + "/api/remaining_credits", timeout=2)


@pytest.mark.parametrize("phase", ["credits", "poll"])
def test_malformed_json_fault(api: Api, sb: Sandbox, phase: str) -> None:
    sb.inject(phase, "malformed_json")
    path = "/api/remaining_credits" if phase == "credits" else "/api/getAsyncResult"
    answer = api.post(path, {"taskId": "x"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        answer.json()


def test_html_and_empty_body_faults(api: Api, sb: Sandbox) -> None:
    sb.inject("credits", "html")
    sb.inject("poll", "html", status=504)
    sb.inject("finish", "empty_body")
    html = api.post("/api/remaining_credits")
    assert (html.status_code, html.headers["Content-Type"]) == (502, "text/html")
    assert "<html>" in html.text
    assert api.post("/api/getAsyncResult", {"taskId": "x"}).status_code == 504
    empty = api.post("/api/file/v1/policy_upload_finish", {"reqId": "x"})
    assert (empty.status_code, empty.content, empty.headers["Content-Length"]) == (200, b"", "0")


def test_poll_status0_and_nested(api: Api, sb: Sandbox) -> None:
    task_id = api.submit(api.uploaded_url())
    sb.inject("poll", "status0")
    queued = api.poll(task_id)
    assert (queued["task"]["status"], queued["videos"]) == (0, [])
    sb.inject("poll", "nested")
    nested = api.poll(task_id)
    assert set(nested) == {"data"} and nested["data"]["task"]["status"] == 3
    assert api.poll(task_id)["task"]["status"] == 3


def test_task_failed_is_permanent(api: Api, sb: Sandbox) -> None:
    task_id = api.submit(api.uploaded_url())
    sb.inject("poll", "task_failed")
    for _ in range(2):
        task = api.poll(task_id)["task"]
        assert (task["status"], task["reason"]) == (4, "No face was detected in the source video")
        assert task["errorCode"] != 0
    other = api.submit(api.uploaded_url())
    sb.inject("poll", "task_failed", reason="bad audio", error_code=77)
    task = api.poll(other)["task"]
    assert (task["status"], task["reason"], task["errorCode"]) == (4, "bad audio", 77)


def test_no_video_is_permanent(session: requests.Session) -> None:
    with Sandbox(processing_seconds=30) as sandbox:  # even a task still in progress
        api = Api(sandbox, session)
        task_id = api.submit(api.uploaded_url())
        sandbox.inject("poll", "no_video")
        for _ in range(2):
            data = api.poll(task_id)
            assert (data["task"]["status"], data["videos"]) == (3, [])


def test_download_expired_fault(api: Api, sb: Sandbox, session: requests.Session) -> None:
    _, video_url = api.finished_task()
    sb.inject("download", "expired")
    assert session.get(video_url).status_code == 404
    assert session.get(video_url).content == CONTENT


def test_cut_short_fault(api: Api, sb: Sandbox, session: requests.Session) -> None:
    _, video_url = api.finished_task()
    sb.inject("download", "cut_short")
    head, body = raw_get(video_url)  # to the byte, which `requests` does not report
    assert f"Content-Length: {len(CONTENT)}" in head
    assert body == CONTENT[: len(CONTENT) // 2]
    sb.inject("download", "cut_short")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(video_url)
    assert session.get(video_url).content == CONTENT


def test_slow_download_and_upload(api: Api, sb: Sandbox, session: requests.Session) -> None:
    _, video_url = api.finished_task()
    sb.inject("download", "slow", bytes_per_second=100_000)
    started = time.monotonic()
    assert session.get(video_url).content == CONTENT
    assert time.monotonic() - started >= 0.4  # 50 kB at 100 kB/s
    sb.inject("storage", "slow", bytes_per_second=100_000)
    policy = api.policy()
    started = time.monotonic()
    assert api.post_object(policy).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_refused_storage_host(api: Api, sb: Sandbox, session: requests.Session) -> None:
    sb.inject("storage", "refused")
    policy = api.policy()
    assert policy["host"] != sb.storage_origin
    with pytest.raises(requests.ConnectionError):
        session.post(policy["host"], files=post_object_form(policy, CONTENT), timeout=5)
    assert api.policy()["host"] == sb.storage_origin


def test_refused_video_url(api: Api, sb: Sandbox, session: requests.Session) -> None:
    task_id = api.submit(api.uploaded_url())
    sb.inject("download", "refused")
    refused_url = api.poll(task_id)["videos"][0]["videoUrl"]
    assert not refused_url.startswith(sb.cdn_origin)
    with pytest.raises(requests.ConnectionError):
        session.get(refused_url, timeout=5)
    assert api.poll(task_id)["videos"][0]["videoUrl"].startswith(sb.cdn_origin)


def test_stall_mid_body_fault(api: Api, sb: Sandbox, session: requests.Session) -> None:
    _, video_url = api.finished_task()
    sb.inject("download", "stall_mid_body", seconds=0.6)
    started = time.monotonic()
    assert session.get(video_url).content == CONTENT  # patient client: the rest arrives after the stall
    assert time.monotonic() - started >= 0.5
    sb.inject("download", "stall_mid_body", seconds=5)
    with session.get(video_url, stream=True, timeout=(5, 0.3)) as answer:
        assert answer.status_code == 200
        received = bytearray()
        with pytest.raises(requests.exceptions.ConnectionError):  # urllib3's read timeout, mid-body
            for piece in answer.iter_content(4096):
                received += piece
    half = len(CONTENT) // 2  # all of the first half arrived, none of the second (a partial read is lost)
    assert CONTENT.startswith(bytes(received)) and half - 4096 < len(received) <= half
    sb.inject("poll", "stall_mid_body", seconds=0.3)
    assert api.call("/api/getAsyncResult", {"taskId": "x" * 32})["code"] == 10192


def test_huge_json_fault(api: Api, sb: Sandbox) -> None:
    sb.inject("credits", "huge_json", bytes=5 * 1024 * 1024)
    answer = api.post("/api/remaining_credits")
    assert int(answer.headers["Content-Length"]) == len(answer.content) == 5 * 1024 * 1024
    assert answer.json()["code"] == 0
    sb.inject("submit", "huge_json", bytes=100)  # a shaping fault: the task IS created
    url = api.uploaded_url()
    assert len(api.post("/api/async/talking_face", {"srcVideoUrl": url, "audioUrl": url,
                                                    "videoParams": VIDEO_PARAMS}).content) == 100


class _Recorder(http.server.ThreadingHTTPServer):
    """A loopback server that records what reaches it and answers 204."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_any(self) -> None:
                recorder.seen.append((self.command, self.path, dict(self.headers)))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_any

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_redirect_fault(api: Api, sb: Sandbox, session: requests.Session) -> None:
    recorder = _Recorder()
    try:
        sb.inject("credits", "redirect", status=307, location=recorder.origin)
        answer = api.post("/api/remaining_credits?x=1", allow_redirects=False)
        assert answer.status_code == 307
        assert answer.headers["Location"] == recorder.origin + "/api/remaining_credits?x=1"
        _, video_url = api.finished_task()
        sb.inject("download", "redirect", location=recorder.origin + "/")
        followed = session.get(video_url)
        assert followed.status_code == 204 and followed.history[0].status_code == 302
        assert recorder.seen[0][1] == video_url[len(sb.cdn_origin):]
        assert recorder.seen[0][0] == "GET"
    finally:
        recorder.shutdown()
        recorder.server_close()


def test_forever_and_clear_faults(api: Api, sb: Sandbox) -> None:
    sb.inject("credits", "http_503", times=None)
    assert [api.post("/api/remaining_credits").status_code for _ in range(3)] == [503] * 3
    sb.clear_faults()
    assert api.post("/api/remaining_credits").status_code == 200


@pytest.mark.parametrize(("phase", "fault", "options"), [
    ("polling", "http_500", {}), ("poll", "explode", {}), ("submit", "refused", {}),
    ("submit", "status0", {}),
    ("download", "code", {"code": 1}), ("poll", "code", {}), ("storage", "slow", {}),
    ("download", "slow", {"bytes_per_second": 0}), ("credits", "http_500", {"retry_after": 1}),
    ("download", "huge_json", {}), ("poll", "redirect", {}), ("poll", "redirect", {"location": "ftp://x"}),
    ("poll", "redirect", {"location": "http://127.0.0.1:9", "status": 200}),
    ("credits", "huge_json", {"bytes": 1}), ("poll", "stall_mid_body", {"seconds": -1}),
])
def test_inject_refuses_what_it_cannot_do(sb: Sandbox, phase: str, fault: str,
                                          options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sb.inject(phase, fault, **options)


# --- out-of-process control and the CLI ------------------------------------------------------------------

def test_control_endpoints(api: Api, sb: Sandbox, session: requests.Session) -> None:
    health = session.get(sb.base_url + "/_sandbox/health").json()["data"]
    assert health == {"status": "ok", "base_url": sb.base_url, "storage_origin": sb.storage_origin,
                      "cdn_origin": sb.cdn_origin}
    injected = session.post(sb.base_url + "/_sandbox/inject",
                            json={"phase": "credits", "fault": "http_429", "times": 1,
                                  "options": {"retry_after": 3}})
    assert injected.json()["code"] == 0
    refused = session.post(sb.base_url + "/_sandbox/inject", json={"phase": "credits", "fault": "nope"})
    assert refused.status_code == 400
    assert api.post("/api/remaining_credits").headers["Retry-After"] == "3"
    logged = session.get(sb.base_url + "/_sandbox/requests").json()
    assert [(entry["role"], entry["phase"]) for entry in logged] == [("api", "credits")]
    assert logged[0]["authorization"] == f"Bearer {KEY}"
    assert session.post(sb.base_url + "/_sandbox/reset").json()["code"] == 0
    assert sb.requests == []


def test_cli_prints_its_origin_and_stops_on_sigterm(session: requests.Session) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "newport_api.sandbox", "--port", "0", "--processing-seconds", "0",
               "--key", KEY, "--fault", "credits:http_503:1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=environment, cwd=REPO_ROOT) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            found = re.fullmatch(r"Newport sandbox: (http://127\.0\.0\.1:\d+)\n", line)
            assert found, line
            base_url = found.group(1)
            headers = {"Authorization": f"Bearer {KEY}"}
            assert session.post(base_url + "/api/remaining_credits", headers=headers).status_code == 503
            assert session.post(base_url + "/api/remaining_credits", headers=headers).json()["code"] == 0
            wrong = session.post(base_url + "/api/remaining_credits",
                                 headers={"Authorization": "Bearer sk-x"})
            assert wrong.json()["code"] == 13006
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
            assert process.stdout.read() == ""  # exactly one line on stdout
        finally:
            process.kill()


def test_cli_help_documents_faults_and_the_result() -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    shown = subprocess.run([sys.executable, "-m", "newport_api.sandbox", "--help"], capture_output=True,
                           text=True, env=environment, cwd=REPO_ROOT, timeout=20, check=True).stdout
    assert "byte for byte" in shown
    for fault in ("http_429", "reset_mid_body", "task_failed", "cut_short", "refused", "slow", "redirect",
                  "huge_json", "stall_mid_body"):
        assert fault in shown


# --- the multipart parser and big streams ----------------------------------------------------------------

class _Parts:
    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytearray]] = []

    def part_begin(self, headers: dict[str, str]) -> None:
        self.parts.append((headers, bytearray()))

    def part_data(self, data: bytes) -> None:
        self.parts[-1][1].extend(data)

    def part_end(self) -> None:
        pass


def test_multipart_parser_survives_any_chunking() -> None:
    boundary = "XyZ-boundary-123"
    tricky = b"\r\n--XyZ-boundary-12" + b"--XyZ-boundary-123" + b"\r\n--XyZ" + bytes(range(256))
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + tricky
    body += f"\r\n--{boundary}--\r\n".encode()
    chooser = random.Random(3)
    for chunking in [1, 2, 3, 7, 19, 64, len(body), "random"]:
        parser, sink = None, _Parts()
        parser = MultipartParser(boundary, sink)
        position = 0
        while position < len(body):
            size = chooser.randint(1, 40) if chunking == "random" else int(chunking)
            parser.feed(body[position:position + size])
            position += size
        parser.close()
        assert [(headers["content-disposition"].split("name=")[1].split(";")[0], bytes(data))
                for headers, data in sink.parts] == [('"key"', b"k"), ('"file"', tricky)], chunking
    truncated = MultipartParser(boundary, _Parts())
    truncated.feed(body[:-10])
    with pytest.raises(MultipartError):
        truncated.close()


class _PatternBody:
    """A file-like multipart body of ``size`` file bytes produced on the fly (and hashed as it goes)."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self._block = random.Random(11).randbytes(1024 * 1024 + 7)  # odd length: offsets matter
        self._head, self._tail, self._size = head, tail, size
        self._position = 0
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def read(self, amount: int = -1) -> bytes:
        total = len(self)
        amount = total - self._position if amount is None or amount < 0 else amount
        out = bytearray()
        while amount > 0 and self._position < total:
            piece = self._piece(amount)
            out += piece
            amount -= len(piece)
            self._position += len(piece)
        return bytes(out)

    def _piece(self, amount: int) -> bytes:
        head_end, file_end = len(self._head), len(self._head) + self._size
        if self._position < head_end:
            return self._head[self._position:self._position + amount]
        if self._position >= file_end:
            start = self._position - file_end
            return self._tail[start:start + amount]
        offset = (self._position - head_end) % len(self._block)
        piece = self._block[offset:offset + min(amount, file_end - self._position)]
        self.digest.update(piece)
        return piece


def test_256_mib_streams_with_small_memory(api: Api, session: requests.Session) -> None:
    size = 256 * 1024 * 1024
    policy = api.policy()
    boundary = "sandbox-big-upload-boundary"
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in [("key", policy["dir"] + "big.mp4"), ("policy", policy["policy"]),
                                       ("OSSAccessKeyId", policy["accessId"]),
                                       ("signature", policy["signature"]), ("callback", policy["callback"]),
                                       ("success_action_status", "200")])
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
    body = _PatternBody(head.encode(), size, f"\r\n--{boundary}--\r\n".encode())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        stored = session.post(policy["host"], data=body, timeout=120,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert stored.status_code == 200, stored.text
        url = api.finish(policy["reqId"])["data"]["url"]
        downloaded = hashlib.sha256()
        received = 0
        with session.get(url, stream=True, timeout=120) as answer:
            for piece in answer.iter_content(1024 * 1024):
                downloaded.update(piece)
                received += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == size
    assert downloaded.hexdigest() == body.digest.hexdigest()
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"
