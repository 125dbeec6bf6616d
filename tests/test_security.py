"""Where the key may go, what may carry it, and what the server may not choose (issue 5, part 5).

Every check scans bytes: job store files, error texts, reprs and details,
the CLI's output, and every request that reached a host other than the API.
Helper servers run on 127.0.0.1 only: a recorder (to catch redirects), a
forwarding proxy, a TLS server with a self-signed certificate and a hostile
result host.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cli_media import FFMPEG, NO_FFMPEG, write_movie, write_tone
from conftest import API_KEY, FAST_RETRY, assert_no_key_anywhere, env_with_key

from newport_api import JobRecord, JobRunner, JobStore, NewportClient, Phase, RunnerSettings, errors
from newport_api.http import MSG_TLS, MSG_TOO_LARGE, Timeouts, check_base_url, check_ca_bundle
from newport_api.sandbox import Sandbox

FAST = RunnerSettings(poll_interval=0.05, max_poll_interval=0.2, progress_interval=0.0)
KEY_BYTES = API_KEY.encode()
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- helper servers ------------------------------------------------------------------------------------------

Answer = Callable[[http.server.BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class Recorder(http.server.ThreadingHTTPServer):
    """Records every request (method, path, headers, body); ``answer`` decides the reply."""

    daemon_threads = True

    def __init__(self, answer: Answer | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answer = answer or (lambda handler: (204, {}, b""))
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.seen.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                status, headers, payload = recorder.answer(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = do_PUT = serve

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def raw(self) -> bytes:
        return repr(self.seen).encode()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


class ForwardingProxy(Recorder):
    """A plain http forward proxy (absolute-form request lines) that records what passes through it."""

    def __init__(self) -> None:
        super().__init__(self._forward)

    @staticmethod
    def _forward(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(handler.path)
        body = handler.server.seen[-1]["body"]  # type: ignore[attr-defined]
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(handler.command, path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
            return answer.status, {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}, payload
        finally:
            upstream.close()


def job(sandbox: Sandbox, tmp_path: Path, video: Path, audio: Path, store: JobStore | None = None,
        **client_options: Any) -> JobRecord:
    record = JobRecord(video=str(video), audio=str(audio), output_path=str(tmp_path / "out" / "result.mp4"))
    client_options.setdefault("retry", FAST_RETRY)
    client_options.setdefault("timeouts", Timeouts(5, 5))
    with NewportClient(API_KEY, sandbox.base_url, **client_options) as client:
        return JobRunner(client, record, save=store.save if store else None, settings=FAST).run()


def assert_no_key_outside_the_api(sandbox: Sandbox) -> None:
    assert_no_key_anywhere(sandbox)
    for request in sandbox.requests:
        if request.role != "api":
            assert KEY_BYTES not in json.dumps(request.to_json()).encode()


# --- the key stays out of stores, errors, the CLI and other hosts ------------------------------------------

def test_a_server_echoing_the_key_cannot_get_it_stored_or_shown(sandbox, video_file, audio_file, tmp_path):
    store = JobStore(tmp_path / "jobs")
    sandbox.inject("poll", "task_failed", reason=f"bad request from {API_KEY} (Bearer {API_KEY})")
    record = job(sandbox, tmp_path, video_file, audio_file, store)
    assert record.phase == Phase.FAILED and record.error_kind == "task_failed"
    assert "<api key>" in record.error
    for path in (tmp_path / "jobs").iterdir():
        assert KEY_BYTES not in path.read_bytes()
    assert API_KEY not in repr(record.to_dict())


@pytest.mark.parametrize("phase", ["policy", "finish", "submit", "poll", "credits"])
def test_an_error_message_echoing_the_key_is_redacted_everywhere(sandbox, audio_file, phase):
    sandbox.inject(phase, "code", times=None, code=10192, message=f"key {API_KEY} is not allowed here")
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY) as client, \
            pytest.raises(errors.NewportError) as caught:
        if phase in ("policy", "finish"):
            client.upload_file(audio_file)
        elif phase == "submit":
            from newport_api import TalkingFaceRequest

            client.submit_talking_face(TalkingFaceRequest("http://127.0.0.1:9/v", "http://127.0.0.1:9/a"))
        elif phase == "poll":
            client.get_task("0" * 32)
        else:
            client.remaining_credits()
    chain: BaseException | None = caught.value
    while chain is not None:
        for text in (str(chain), repr(chain), getattr(chain, "detail", "")):
            assert API_KEY not in text
        chain = chain.__cause__ or chain.__context__
    assert API_KEY not in repr(client) and API_KEY not in repr(client.transport)


@pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
def test_the_cli_never_prints_the_key(sandbox, tmp_path):
    video, audio = write_movie(tmp_path / "take.mp4"), write_tone(tmp_path / "line.wav", 1.0)  # pass the preflight
    runs = [
        (lambda: sandbox.inject("poll", "task_failed", reason=f"echo {API_KEY}"),
         ["--base-url", sandbox.base_url, "talking-face", "--video", str(video), "--audio",
          str(audio), "-o", str(tmp_path / "a.mp4")], 3, b"<api key>"),
        (lambda: sandbox.inject("credits", "code", code=13006, message=f"{API_KEY} is invalid"),
         ["--base-url", sandbox.base_url, "credits"], 3, b"rejected the API key in NEWPORT_API_KEY"),
        (None, ["--base-url", sandbox.base_url, "--ca-bundle", str(tmp_path / "missing.pem"), "credits"], 2,
         b"--ca-bundle"),
    ]
    env = env_with_key(TALKING_FACE_STATE_DIR=str(tmp_path / "state"))
    for prepare, arguments, exit_status, said in runs:
        if prepare:
            prepare()
        result = subprocess.run([sys.executable, "-m", "newport_api", *arguments], env=env,
                                capture_output=True, timeout=60, check=False, cwd=tmp_path)
        assert KEY_BYTES not in result.stdout + result.stderr, arguments
        assert b"Traceback" not in result.stderr, result.stderr.decode()
        assert result.returncode == exit_status and said in result.stderr, result.stderr.decode()
    assert KEY_BYTES not in b"".join(path.read_bytes() for path in (tmp_path / "state").rglob("*") if path.is_file())


def test_storage_and_cdn_never_see_the_key_in_a_job_with_faults(sandbox, video_file, audio_file, tmp_path):
    for phase in ("storage", "download"):
        sandbox.inject(phase, "reset")
        sandbox.inject(phase, "http_503")
    store = JobStore(tmp_path / "jobs")
    record = job(sandbox, tmp_path, video_file, audio_file, store)
    assert record.phase == Phase.DOWNLOADED
    assert {r.role for r in sandbox.requests} == {"api", "storage", "cdn"}
    assert_no_key_outside_the_api(sandbox)
    assert all(r.authorization == f"Bearer {API_KEY}" for r in sandbox.requests if r.role == "api")


# --- Authorization goes to the API origin only, never along a redirect ----------------------------------------

@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("phase", ["policy", "finish", "submit", "poll"])
def test_an_api_redirect_is_not_followed(sandbox, recorder, video_file, audio_file, tmp_path, phase, status):
    sandbox.inject(phase, "redirect", times=None, status=status, location=recorder.origin)
    record = job(sandbox, tmp_path, video_file, audio_file)
    assert record.phase == Phase.FAILED and record.error_kind == "protocol"
    assert "redirects elsewhere" in record.error
    assert recorder.seen == []
    assert sandbox.count("submit") == (1 if phase in ("submit", "poll") else 0)


def test_a_storage_redirect_is_not_followed(sandbox, recorder, video_file, audio_file, tmp_path):
    sandbox.inject("storage", "redirect", status=307, location=recorder.origin)
    record = job(sandbox, tmp_path, video_file, audio_file)
    assert record.phase == Phase.DOWNLOADED  # a fresh policy and a second upload
    assert recorder.seen == []


def test_a_download_redirect_is_followed_without_the_key(sandbox, video_file, audio_file, tmp_path):
    def bounce_back(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        return 307, {"Location": sandbox.cdn_origin + handler.path}, b""

    elsewhere = Recorder(bounce_back)
    try:
        sandbox.inject("download", "redirect", status=302, location=elsewhere.origin)
        record = job(sandbox, tmp_path, video_file, audio_file)
        assert record.phase == Phase.DOWNLOADED
        assert Path(record.output_path).read_bytes() == video_file.read_bytes()
        assert [seen["method"] for seen in elsewhere.seen] == ["GET"]
        assert "Authorization" not in elsewhere.seen[0]["headers"]
        assert KEY_BYTES not in elsewhere.raw()
    finally:
        elsewhere.close()
    assert_no_key_outside_the_api(sandbox)


def test_the_key_is_refused_for_any_url_but_the_api_origin(sandbox):
    with NewportClient(API_KEY, sandbox.base_url) as client:
        transport = client.transport
        for url in (sandbox.storage_origin + "/x", sandbox.base_url.replace("127.0.0.1", "localhost") + "/x",
                    "https://api.newportai.com/x"):
            with pytest.raises(errors.ConfigurationError, match="Refusing to send the API key"):
                transport._send("GET", url, headers={"Authorization": "Bearer x"})
        assert "Authorization" not in transport.session.headers and transport.session.auth is None
    assert sandbox.requests == []


# --- base URLs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://example.com", "http://example.com:80/", "http://127.0.0.1@example.com",
                                 "http://localhost.example.com", "http://127.0.0.1.nip.io:8080",
                                 "http://[::ffff:7f00:1]", "http://0x7f.1"])
def test_plain_http_to_anything_but_this_computer_is_refused(url):
    with pytest.raises(errors.InsecureURLError) as caught:
        NewportClient(API_KEY, url)
    message = str(caught.value)
    assert "https://" in message and "Preferences" in message
    assert message.endswith(".") and "\n" not in message


def test_example_com_is_refused_with_a_clear_message():
    with pytest.raises(errors.InsecureURLError) as caught:
        check_base_url("http://example.com")
    assert str(caught.value) == ("The API base URL must start with https:// (plain http is only allowed for "
                                 "this computer) — fix it in Preferences ▸ Add-ons ▸ Talking Face.")


def test_plain_http_on_loopback_is_accepted_and_works(sandbox, video_file, audio_file, tmp_path):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sandbox.base_url)
    assert check_base_url(sandbox.base_url + "/") == sandbox.base_url
    assert job(sandbox, tmp_path, video_file, audio_file).phase == Phase.DOWNLOADED


# --- TLS -------------------------------------------------------------------------------------------------------

def test_no_code_path_turns_tls_verification_or_the_environment_off():
    offending = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|trust_env\s*=\s*False|"
                           r"_create_unverified_context|disable_warnings")
    for path in (REPO_ROOT / "newport_api").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not offending.search(line), f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"


def test_verification_is_on_and_a_ca_bundle_is_passed_through(tmp_path):
    bundle = tmp_path / "corporate.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with NewportClient(API_KEY) as default, NewportClient(API_KEY, ca_bundle=str(bundle)) as custom:
        assert default.transport.session.verify is True
        assert custom.transport.session.verify == str(bundle)
        assert default.transport.session.trust_env is True


def test_a_missing_ca_bundle_is_a_clear_configuration_error(sandbox, video_file, audio_file, tmp_path):
    missing = str(tmp_path / "no" / "ca.pem")
    with pytest.raises(errors.ConfigurationError, match="The CA bundle .* does not exist"):
        check_ca_bundle(missing)
    with NewportClient(API_KEY, sandbox.base_url, ca_bundle=missing) as client, \
            pytest.raises(errors.ConfigurationError) as caught:
        client.remaining_credits()
    assert str(caught.value) == (f"The CA bundle '{missing}' does not exist — fix or clear its path in "
                                 "Preferences ▸ Add-ons ▸ Talking Face.")
    record = job(sandbox, tmp_path, video_file, audio_file, ca_bundle=missing)
    assert record.phase == Phase.FAILED and record.error_kind == "configuration"
    assert record.error == str(caught.value)
    assert sandbox.requests == []


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Recorder]]:
    """An https server on 127.0.0.1 with a self-signed certificate, answering every call with an envelope."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    import ssl

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    server = Recorder(lambda handler: (200, {"Content-Type": "application/json"},
                                       b'{"code": 0, "message": "success", "data": 42}'))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield f"https://127.0.0.1:{server.server_address[1]}", cert, server
    server.close()


def test_tls_is_verified_against_the_system_or_the_given_ca_bundle(tls_server):
    base_url, cert, server = tls_server
    server.seen.clear()
    with NewportClient(API_KEY, base_url, retry=FAST_RETRY) as untrusting, \
            pytest.raises(errors.TLSError) as caught:
        untrusting.remaining_credits()
    assert str(caught.value) == MSG_TLS and not caught.value.retryable
    assert server.seen == [], "nothing may be sent over an unverified connection"
    with NewportClient(API_KEY, base_url, retry=FAST_RETRY, ca_bundle=str(cert)) as trusting:
        assert trusting.remaining_credits() == 42.0
    assert server.seen[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"


# --- proxies from the environment ------------------------------------------------------------------------------

def test_a_proxy_from_the_environment_carries_the_whole_job(sandbox, video_file, audio_file, tmp_path,
                                                              monkeypatch):
    proxy = ForwardingProxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        monkeypatch.setenv("http_proxy", proxy.origin)
        record = job(sandbox, tmp_path, video_file, audio_file)
        assert record.phase == Phase.DOWNLOADED
        assert Path(record.output_path).read_bytes() == video_file.read_bytes()
        through = {urlsplit(seen["path"])._replace(path="", query="").geturl() for seen in proxy.seen}
        assert through == {sandbox.base_url, sandbox.storage_origin, sandbox.cdn_origin}
        assert len(proxy.seen) == len(sandbox.requests)
        # A cancel still breaks a call that waits on the proxy.
        sandbox.inject("credits", "stall", seconds=30)
        client = NewportClient(API_KEY, sandbox.base_url, timeouts=Timeouts(5, 20))
        threading.Timer(0.5, client.cancel.cancel).start()
        started = time.monotonic()
        with pytest.raises(errors.CancelledError):
            client.remaining_credits()
        assert time.monotonic() - started < 1.5
        client.close()
    finally:
        proxy.close()


# --- size caps ---------------------------------------------------------------------------------------------------

def test_a_huge_json_answer_is_an_error_not_a_memory_blowup(sandbox):
    sandbox.inject("credits", "huge_json", times=None, bytes=64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY) as client, \
                pytest.raises(errors.ServiceUnavailableError) as caught:
            client.remaining_credits()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == MSG_TOO_LARGE
    assert peak < 16 * 1024 * 1024


def test_an_endless_json_answer_without_a_length_is_cut_at_the_cap():
    class Endless(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                head = b'{"code": 0, "message": "'
                self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
                for _ in range(10_000):  # 640 MiB if nobody stops reading
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        retry = type(FAST_RETRY)(attempts=1)
        with NewportClient(API_KEY, f"http://127.0.0.1:{server.server_address[1]}", retry=retry) as client:
            started = time.monotonic()
            with pytest.raises(errors.ServiceUnavailableError, match="unexpectedly large"):
                client.remaining_credits()
            assert time.monotonic() - started < 10
    finally:
        server.shutdown()
        server.server_close()


# --- result files are named by us ---------------------------------------------------------------------------

HOSTILE_PATHS = ["/results/..%2F..%2Fevil.mp4?name=../../evil.mp4", "/../../../evil.mp4",
                 "/results/%2e%2e/%2e%2e/evil.mp4", "/a/b/c.mp4;filename=../../evil.sh"]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_hostile_result_url_cannot_choose_where_the_file_goes(tmp_path, path):
    payload = os.urandom(50_000)

    def hostile(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if handler.path.startswith("/bounce"):
            return 302, {"Location": "/../../../../tmp/evil.mp4"}, b""
        return 200, {"Content-Type": "video/mp4",
                     "Content-Disposition": 'attachment; filename="../../evil.mp4"; filename*=UTF-8\'\'..%2Fx'},\
            payload

    server = Recorder(hostile)
    folder = tmp_path / "shots" / "out"
    folder.mkdir(parents=True)
    try:
        with NewportClient(API_KEY, "http://127.0.0.1:9", retry=FAST_RETRY) as client:
            written = client.download(server.origin + path, folder / "take 1.mp4")
            assert written == folder / "take 1.mp4"
            again = client.download(server.origin + "/bounce" + path, folder / "take 2.mp4")
            assert again == folder / "take 2.mp4"
        # A job's result goes to its output path, whatever the URL says.
        record = JobRecord(video="http://x/v.mp4", audio="http://x/a.wav", output_path=str(folder / "job.mp4"),
                           phase=Phase.DOWNLOADING, result_url=server.origin + path,
                           result_expire_at=time.time() + 3600)
        with NewportClient(API_KEY, "http://127.0.0.1:9", retry=FAST_RETRY) as client:
            JobRunner(client, record, settings=FAST).run()
        assert record.phase == Phase.DOWNLOADED
    finally:
        server.close()
    assert sorted(p.name for p in folder.iterdir()) == ["job.mp4", "take 1.mp4", "take 2.mp4"]
    assert all((folder / name).read_bytes() == payload for name in ("job.mp4", "take 1.mp4", "take 2.mp4"))
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert everything == ["shots", "shots/out", "shots/out/job.mp4", "shots/out/take 1.mp4",
                          "shots/out/take 2.mp4"]
    assert not Path("/tmp/evil.mp4").exists()


def test_the_sandbox_listens_on_loopback_only():
    with Sandbox() as sandbox:
        for origin in (sandbox.base_url, sandbox.storage_origin, sandbox.cdn_origin, sandbox.refused_origin):
            assert urlsplit(origin).hostname == "127.0.0.1"
