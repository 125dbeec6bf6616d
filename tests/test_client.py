"""Every public call of ``NewportClient`` against the sandbox, over real sockets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import API_KEY, FAST_RETRY, assert_no_key_anywhere

from newport_api import NewportClient, TalkingFaceRequest, TaskStatus, errors
from newport_api.http import Timeouts
from newport_api.sandbox import Sandbox


def upload_and_submit(client: NewportClient, video: Path, audio: Path, **params) -> str:
    video_url = client.upload_file(video).url
    audio_url = client.upload_file(audio).url
    return client.submit_talking_face(TalkingFaceRequest(video_url, audio_url, **params))


def wait_for_success(client: NewportClient, task_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get_task(task_id)
        if task.status.finished:
            return task
        time.sleep(0.05)
    raise AssertionError("task did not finish")


def test_upload_streams_the_file_to_storage_and_returns_a_working_url(client, sandbox, video_file):
    progress: list[tuple[int, int | None]] = []
    uploaded = client.upload_file(video_file, on_progress=lambda done, total: progress.append((done, total)))
    assert requests.get(uploaded.url, timeout=5).content == video_file.read_bytes()
    assert uploaded.size == video_file.stat().st_size
    assert time.time() + 3600 < uploaded.expire_at <= time.time() + 24 * 3600 + 1
    assert progress[-1] == (video_file.stat().st_size, video_file.stat().st_size)
    assert [sandbox.count(phase) for phase in ("policy", "storage", "finish")] == [1, 1, 1]
    assert_no_key_anywhere(sandbox)


def test_upload_accepts_the_newer_policy_shape(tmp_path, audio_file):
    with Sandbox(policy_shape="new") as sandbox, NewportClient(API_KEY, sandbox.base_url) as client:
        uploaded = client.upload_file(audio_file)
        assert requests.get(uploaded.url, timeout=5).content == audio_file.read_bytes()


def test_submit_sends_the_contract_fields(client, sandbox, video_file, audio_file):
    task_id = upload_and_submit(client, video_file, audio_file, width=640, height=360, enhance=True)
    assert len(task_id) == 32
    [submit] = [r for r in sandbox.requests if r.phase == "submit"]
    assert submit.authorization == f"Bearer {API_KEY}"
    assert submit.body["videoParams"] == {"video_width": 640, "video_height": 360, "video_enhance": 1}
    assert set(submit.body) == {"srcVideoUrl", "audioUrl", "videoParams"}


def test_submit_with_original_fps_and_vocals(client, sandbox, video_file, audio_file):
    video_url = client.upload_file(video_file).url
    audio_url = client.upload_file(audio_file).url
    client.submit_talking_face(TalkingFaceRequest(video_url, audio_url, vocal_audio_url=audio_url,
                                                  fps_original=True))
    [submit] = [r for r in sandbox.requests if r.phase == "submit"]
    assert submit.body["videoParams"]["fps"] == "original"
    assert submit.body["vocalAudioUrl"] == audio_url


def test_task_moves_to_success_and_the_result_downloads_byte_exact(client, sandbox, video_file, audio_file,
                                                                   tmp_path):
    task_id = upload_and_submit(client, video_file, audio_file)
    first = client.get_task(task_id)
    assert first.status in (TaskStatus.SUBMITTED, TaskStatus.PROCESSING)
    task = wait_for_success(client, task_id)
    assert task.status == TaskStatus.SUCCEEDED
    assert task.expire_at and task.expire_at > time.time()
    out = client.download(task.video_urls[0], tmp_path / "out" / "result.mp4")
    assert out.read_bytes() == video_file.read_bytes()
    assert not (tmp_path / "out" / "result.mp4.part").exists()
    assert_no_key_anywhere(sandbox)


def test_a_cut_short_download_resumes_with_range(client, sandbox, video_file, audio_file, tmp_path):
    task = wait_for_success(client, upload_and_submit(client, video_file, audio_file))
    sandbox.inject("download", "cut_short", times=2)
    out = client.download(task.video_urls[0], tmp_path / "result.mp4")
    assert out.read_bytes() == video_file.read_bytes()
    ranged = [r for r in sandbox.requests if r.phase == "download" and "Range" in r.headers]
    assert ranged, "the second attempt should ask only for the missing bytes"


def test_an_expired_result_is_a_clear_error_and_leaves_no_file(client, sandbox, video_file, audio_file,
                                                               tmp_path):
    task = wait_for_success(client, upload_and_submit(client, video_file, audio_file))
    sandbox.inject("download", "expired")
    with pytest.raises(errors.ResultExpiredError, match="Retry"):
        client.download(task.video_urls[0], tmp_path / "result.mp4")
    assert not (tmp_path / "result.mp4").exists()


def test_failed_task_reports_the_service_reason(client, sandbox, video_file, audio_file):
    task_id = upload_and_submit(client, video_file, audio_file)
    sandbox.inject("poll", "task_failed", reason="No face detected")
    task = client.get_task(task_id)
    assert task.status == TaskStatus.FAILED
    assert task.reason == "No face detected"


@pytest.mark.parametrize("fault", ["status0", "empty_body", "nested"])
def test_odd_poll_answers_are_tolerated(client, sandbox, video_file, audio_file, fault):
    task_id = upload_and_submit(client, video_file, audio_file)
    sandbox.inject("poll", fault)
    task = client.get_task(task_id)
    expected = {"status0": TaskStatus.QUEUED, "empty_body": TaskStatus.UNKNOWN}.get(fault)
    if expected is not None:
        assert task.status == expected
    else:
        assert task.status in (TaskStatus.SUBMITTED, TaskStatus.PROCESSING, TaskStatus.SUCCEEDED)
    assert wait_for_success(client, task_id).status == TaskStatus.SUCCEEDED


SAFE_PHASE_FAULTS = [(phase, fault) for phase in ("policy", "storage", "finish", "poll", "credits")
                     for fault in ("http_503", "http_429", "reset", "malformed_json", "html")
                     if (phase, fault) != ("storage", "malformed_json")]


@pytest.mark.parametrize("phase,fault", SAFE_PHASE_FAULTS)
def test_safe_calls_retry_through_faults(client, sandbox, audio_file, phase, fault):
    options = {"retry_after": 0} if fault == "http_429" else {}
    sandbox.inject(phase, fault, times=2, **options)
    if phase == "poll":
        client.get_task(upload_and_submit(client, audio_file, audio_file))
    elif phase == "credits":
        assert client.remaining_credits() == 1000.0
    else:
        client.upload_file(audio_file)
    assert sandbox.count(phase) >= 3


def test_an_unreadable_storage_answer_falls_back_to_the_policy_request_id(client, sandbox, audio_file):
    sandbox.inject("storage", "malformed_json")
    uploaded = client.upload_file(audio_file)
    assert requests.get(uploaded.url, timeout=5).content == audio_file.read_bytes()
    assert sandbox.count("storage") == 1


def test_retry_after_is_honoured(client, sandbox):
    sandbox.inject("credits", "http_429", times=1, retry_after=1)
    started = time.monotonic()
    client.remaining_credits()
    assert time.monotonic() - started >= 0.95


@pytest.mark.parametrize("fault", ["http_500", "reset", "reset_mid_body", "malformed_json"])
def test_submit_is_never_sent_twice(client, sandbox, video_file, audio_file, fault):
    video_url = client.upload_file(video_file).url
    sandbox.inject("submit", fault)
    with pytest.raises(errors.SubmitUncertainError, match="not sent twice|Retry"):
        client.submit_talking_face(TalkingFaceRequest(video_url, video_url))
    assert sandbox.count("submit") == 1


def test_submit_refused_with_429_is_retried_because_it_was_not_accepted(client, sandbox, video_file):
    video_url = client.upload_file(video_file).url
    sandbox.inject("submit", "http_429", retry_after=0)
    assert client.submit_talking_face(TalkingFaceRequest(video_url, video_url))
    assert sandbox.count("submit") == 2


def test_illegal_parameter_is_explained(client, sandbox):
    with pytest.raises(errors.InvalidParameterError, match="rejected a setting"):
        client.submit_talking_face(TalkingFaceRequest("http://example.invalid/v.mp4", "http://x/a.wav"))


def test_remaining_credits_reads_the_balance(client):
    assert client.remaining_credits() == 1000.0


def test_remaining_credits_is_unknown_when_the_endpoint_is_missing(client, sandbox):
    sandbox.inject("credits", "html", status=404)
    assert client.remaining_credits() is None


@pytest.mark.parametrize("key,code", [("sk-wrong", 13006), ("pk-bad-prefix", 13007)])
def test_a_rejected_key_says_so_without_leaking_it(key, code):
    with (Sandbox(api_keys={API_KEY}) as sandbox, NewportClient(key, sandbox.base_url) as client,
          pytest.raises(errors.AuthenticationError) as caught):
        client.remaining_credits()
    assert caught.value.code == code
    assert "API key was rejected" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caught.value.detail, repr(client)):
        assert key not in text


def test_a_blank_key_is_refused_before_any_request(sandbox):
    with NewportClient("  ", sandbox.base_url) as client, pytest.raises(errors.AuthenticationError):
        client.get_upload_policy()
    assert sandbox.requests == []


@pytest.mark.parametrize("url", ["http://example.com", "ftp://127.0.0.1", "http://10.0.0.1:80"])
def test_insecure_base_urls_are_refused(url):
    with pytest.raises(errors.InsecureURLError, match="https"):
        NewportClient(API_KEY, url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9",
                                 "https://api.newportai.com"])
def test_secure_or_loopback_base_urls_are_accepted(url):
    NewportClient(API_KEY, url).close()


def test_the_key_is_only_sent_to_the_api_origin(client, sandbox, video_file, audio_file, tmp_path):
    task = wait_for_success(client, upload_and_submit(client, video_file, audio_file))
    client.download(task.video_urls[0], tmp_path / "r.mp4")
    roles = {r.role for r in sandbox.requests}
    assert roles == {"api", "storage", "cdn"}
    assert all(r.authorization for r in sandbox.requests if r.role == "api")
    assert_no_key_anywhere(sandbox)


def test_an_unreachable_service_is_a_network_error(audio_file):
    with (NewportClient(API_KEY, "http://127.0.0.1:9", retry=FAST_RETRY, timeouts=Timeouts(1, 1)) as client,
          pytest.raises(errors.NetworkError, match="internet connection")):
        client.upload_file(audio_file)


def test_cancel_stops_an_upload_between_chunks(sandbox, tmp_path):
    from conftest import write_bytes

    big = write_bytes(tmp_path / "big.mp4", 64 * 1024 * 1024)
    sandbox.inject("storage", "slow", bytes_per_second=4 * 1024 * 1024)
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY) as client:
        seen = []

        def cancel_after_first_chunk(done: int, total: int | None) -> None:
            seen.append(done)
            client.cancel.cancel()

        started = time.monotonic()
        with pytest.raises(errors.CancelledError):
            client.upload_file(big, on_progress=cancel_after_first_chunk)
        assert time.monotonic() - started < 5
    assert sandbox.count("finish") == 0


# --- timeouts and stalls (issue 5, part 4) -------------------------------------------------------------------

def test_every_request_of_a_job_has_a_connect_and_a_read_timeout(sandbox, video_file, audio_file, tmp_path):
    from newport_api import JobRecord, JobRunner, RunnerSettings

    seen: list[object] = []
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(3, 7)) as client:
        adapter = client.transport.session.get_adapter(sandbox.base_url)
        assert adapter is client.transport.session.get_adapter("https://api.newportai.com")
        send = adapter.send

        def recording_send(request, **kwargs):
            seen.append(kwargs.get("timeout"))
            return send(request, **kwargs)

        adapter.send = recording_send
        record = JobRecord(video=str(video_file), audio=str(audio_file), output_path=str(tmp_path / "r.mp4"))
        JobRunner(client, record, settings=RunnerSettings(poll_interval=0.05)).run()
        client.remaining_credits()
    assert record.phase.value == "downloaded"
    assert len(seen) == len(sandbox.requests) >= 10
    assert set(seen) == {(3, 7)}


@pytest.mark.parametrize("connect,read", [(0, 5), (5, 0), (None, 5), (5, float("inf")), (-1, 5), (True, 5)])
def test_timeouts_must_be_positive_and_finite(connect, read):
    with pytest.raises(ValueError):
        Timeouts(connect, read)


def test_a_download_that_stops_mid_body_is_a_fault_and_resumes(client, sandbox, video_file, audio_file,
                                                              tmp_path):
    task = wait_for_success(client, upload_and_submit(client, video_file, audio_file))
    sandbox.inject("download", "stall_mid_body", seconds=10)
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(5, 0.3)) as impatient:
        started = time.monotonic()
        out = impatient.download(task.video_urls[0], tmp_path / "result.mp4")
        assert time.monotonic() - started < 3, "no progress for the read timeout must end the attempt"
    assert out.read_bytes() == video_file.read_bytes()
    ranged = [r.headers.get("Range") for r in sandbox.requests if r.phase == "download"]
    assert ranged[0] is None and ranged[1].startswith("bytes=") and ranged[1] != "bytes=0-"


def test_a_stalled_api_answer_is_retried_after_the_read_timeout(sandbox):
    sandbox.inject("credits", "stall", seconds=10)
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(5, 0.3)) as impatient:
        started = time.monotonic()
        assert impatient.remaining_credits() == 1000.0
        assert 0.25 < time.monotonic() - started < 3
    assert sandbox.count("credits") == 2


def test_cancel_ends_a_request_blocked_on_a_stalled_server_at_once(sandbox):
    import threading

    sandbox.inject("credits", "stall", seconds=30)
    outcome: list[BaseException] = []
    client = NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(5, 20))

    def call() -> None:
        try:
            client.remaining_credits()
        except errors.NewportError as error:
            outcome.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    while sandbox.count("credits") == 0:
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    client.cancel.cancel()
    caller.join(2)
    assert not caller.is_alive() and time.monotonic() - started < 0.5
    assert isinstance(outcome[0], errors.CancelledError)
    client.close()
    assert sandbox.count("credits") == 1, "a cancelled call is not retried"
