"""The command line as a user runs it: a real ``python -m newport_api`` subprocess against the sandbox.

The oracle for "nothing was sent" and "submitted once" is the sandbox's request
log; media are made by ffmpeg (real containers, structured test patterns), and
the result must equal the uploaded source byte for byte (the sandbox's "result").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_media import FFMPEG, NO_FFMPEG, write_movie, write_tone
from conftest import API_KEY, env_with_key

from newport_api.sandbox import Sandbox

needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
WAIT_SECONDS = 60.0


def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newport_api", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not FFMPEG:
        pytest.skip(NO_FFMPEG)
    folder = tmp_path_factory.mktemp("cli_media")
    (folder / "notes.txt").write_text("not a video, just words\n" * 40)
    (folder / "empty.wav").write_bytes(b"")
    return {"video": write_movie(folder / "take one.mp4"), "audio": write_tone(folder / "line.wav", 1.5),
            "text": folder / "notes.txt", "empty": folder / "empty.wav"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The key, the source tree on PYTHONPATH and a state folder of the test's own."""
    return env_with_key(TALKING_FACE_STATE_DIR=str(tmp_path / "state"))


def job_args(media: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["talking-face", "--video", str(media["video"]), "--audio", str(media["audio"]), "-o", str(out),
            *extra]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def submits(sandbox: Sandbox) -> int:
    return sandbox.count("submit")


# -- a whole job ---------------------------------------------------------------------------------------------


@needs_ffmpeg
def test_talking_face_writes_a_complete_output(sandbox, media, tmp_path, env):
    out = tmp_path / "out.mp4"
    result = run_cli("--base-url", sandbox.base_url, *job_args(media, out, "--enhance", "--fps", "original"),
                     env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == media["video"].read_bytes()
    assert result.stdout.strip() == str(out)
    assert "Downloading" in result.stderr and "Task id: " in result.stderr
    [submit] = [r for r in sandbox.requests if r.phase == "submit"]
    assert submit.body["videoParams"] == {"video_width": 0, "video_height": 0, "video_enhance": 1,
                                          "fps": "original"}
    assert not list((tmp_path / "state").rglob("*.json")), "a finished job leaves no record behind"


@needs_ffmpeg
def test_global_options_work_after_the_subcommand(sandbox, media, tmp_path, env):
    out = tmp_path / "after.mp4"
    result = run_cli(*job_args(media, out), "--base-url", sandbox.base_url, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == media["video"].read_bytes()
    credits = run_cli("credits", "--base-url", sandbox.base_url, env=env)
    assert (credits.returncode, credits.stdout.strip()) == (0, "1000")


@needs_ffmpeg
def test_json_prints_events_and_a_result_naming_the_task(sandbox, media, tmp_path, env):
    out = tmp_path / "events.mp4"
    result = run_cli("--json", "--base-url", sandbox.base_url, *job_args(media, out), env=env)
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    polled = {r.body["taskId"] for r in sandbox.requests if r.phase == "poll"}
    assert len(polled) == 1
    [task_id] = polled
    assert {e["phase"] for e in events if e["event"] == "progress"} >= {"uploading", "submitting", "downloading"}
    assert [e["task_id"] for e in events if e["event"] == "task"] == [task_id]
    final = events[-1]
    assert final["event"] == "result" and final["exit_code"] == 0
    assert final["task_id"] == task_id and final["output"] == str(out)
    assert final["credits_estimated"] == pytest.approx(1.5, abs=0.05)  # the audio's 1.5 s at 25 fps
    assert final["credits_remaining"] == 1000


# -- refused before anything is sent ---------------------------------------------------------------------------


def refusal_cases(media: dict[str, Path], tmp_path: Path) -> dict[str, list[str]]:
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"an earlier result")
    (tmp_path / "adir").mkdir(exist_ok=True)
    video, audio = str(media["video"]), str(media["audio"])
    return {
        "output is a folder": job_args(media, tmp_path / "adir"),
        "text as --video": ["talking-face", "--video", str(media["text"]), "--audio", audio, "-o",
                            str(tmp_path / "o.mp4")],
        "empty --audio": ["talking-face", "--video", video, "--audio", str(media["empty"]), "-o",
                          str(tmp_path / "o.mp4")],
        "video as --audio": ["talking-face", "--video", video, "--audio", video, "-o", str(tmp_path / "o.mp4")],
        "text as --vocals": [*job_args(media, tmp_path / "o.mp4"), "--vocals", str(media["text"])],
        "missing --video": ["talking-face", "--video", str(tmp_path / "nope.mp4"), "--audio", audio, "-o",
                            str(tmp_path / "o.mp4")],
        "folder as --video": ["talking-face", "--video", str(tmp_path), "--audio", audio, "-o",
                              str(tmp_path / "o.mp4")],
        "negative --width": [*job_args(media, tmp_path / "o.mp4"), "--width", "-5"],
        "huge --height": [*job_args(media, tmp_path / "o.mp4"), "--height", "100000"],
        "existing output": job_args(media, existing),
        "output is the input video": [*job_args(media, media["video"]), "--force"],
        "output in a missing folder": job_args(media, tmp_path / "missing" / "o.mp4"),
        "bad task id": ["download", "../../etc", "-o", str(tmp_path / "o.mp4")],
        "download over an existing file": ["download", "abc123", "-o", str(existing)],
        "state folder is a file": ["--state-dir", str(existing), *job_args(media, tmp_path / "o.mp4")],
    }


@needs_ffmpeg
@pytest.mark.parametrize("without_ffprobe", [False, True], ids=["ffprobe", "sniffing"])
def test_bad_inputs_are_refused_before_any_request(sandbox, media, tmp_path, env, without_ffprobe):
    if without_ffprobe:
        env["PATH"] = str(tmp_path / "empty-path")  # no ffprobe: the container's signature decides
    for name, args in refusal_cases(media, tmp_path).items():
        result = run_cli("--base-url", sandbox.base_url, *args, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, f"{name}: {result.returncode} {result.stderr}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert sandbox.requests == [], f"{name}: sent {sandbox.requests}"
    assert (tmp_path / "existing.mp4").read_bytes() == b"an earlier result"


@needs_ffmpeg
def test_the_media_checks_work_without_ffprobe(sandbox, media, tmp_path, env):
    env["PATH"] = str(tmp_path / "empty-path")
    out = tmp_path / "sniffed.mp4"
    result = run_cli("--base-url", sandbox.base_url, *job_args(media, out), env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == media["video"].read_bytes()


@needs_ffmpeg
def test_force_overwrites_an_existing_output(sandbox, media, tmp_path, env):
    out = tmp_path / "again.mp4"
    out.write_bytes(b"old")
    result = run_cli("--base-url", sandbox.base_url, *job_args(media, out, "--force"), env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == media["video"].read_bytes()


def test_a_missing_key_is_explained(tmp_path):
    result = run_cli("talking-face", "--video", "v.mp4", "--audio", "a.wav", "-o", str(tmp_path / "x.mp4"),
                     env=env_with_key(NEWPORT_API_KEY=""))
    assert result.returncode == 2
    assert "NEWPORT_API_KEY" in result.stderr


def test_plain_http_to_a_remote_host_is_refused(tmp_path):
    result = run_cli("--base-url", "http://example.com", "credits", env=env_with_key())
    assert result.returncode == 2
    assert "--base-url" in result.stderr and "https" in result.stderr
    assert "Preferences" not in result.stderr


# -- resuming instead of paying again -----------------------------------------------------------------------


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@needs_ffmpeg
def test_ctrl_c_after_the_submit_then_the_same_command_submits_once(media, tmp_path, env):
    out = tmp_path / "resumed.mp4"
    with Sandbox(processing_seconds=4.0) as sandbox:
        command = [sys.executable, "-m", "newport_api", "--base-url", sandbox.base_url, *job_args(media, out)]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: submits(sandbox) == 1 or first.poll() is not None, "the submit")
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=WAIT_SECONDS)
        assert first.returncode == 130, stderr
        printed = re.search(r"Task id: (\S+)", stderr)  # printed as soon as the submit answered
        assert printed, stderr
        task_id = printed.group(1)
        assert f"task {task_id} goes on" in stderr and "run the same command again" in stderr
        assert not out.exists()

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT_SECONDS,
                               check=False)
        assert again.returncode == 0, again.stderr
        assert f"Continuing task {task_id}" in again.stderr
        assert out.read_bytes() == media["video"].read_bytes()
        assert submits(sandbox) == 1
        # (a poll cut off by the Ctrl-C may be logged without its body)
        assert {r.body["taskId"] for r in sandbox.requests if r.phase == "poll" and r.body} == {task_id}


@needs_ffmpeg
def test_ctrl_c_while_uploading_then_the_same_command_finishes_the_job(sandbox, media, tmp_path, env):
    sandbox.inject("storage", "slow", None, bytes_per_second=8_000)  # the movie takes seconds to upload
    out = tmp_path / "late.mp4"
    command = [sys.executable, "-m", "newport_api", "--base-url", sandbox.base_url, *job_args(media, out)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: sandbox.count("storage") == 1 or first.poll() is not None, "the upload to start")
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=WAIT_SECONDS)
    assert first.returncode == 130, stderr
    assert "before the job was submitted; nothing was paid" in stderr
    assert submits(sandbox) == 0 and not out.exists()
    sandbox.clear_faults()
    again = run_cli(*command[3:], env=env)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == media["video"].read_bytes()
    assert submits(sandbox) == 1


@needs_ffmpeg
def test_a_submit_of_unknown_fate_is_not_sent_again_without_resubmit(sandbox, media, tmp_path, env):
    sandbox.inject("submit", "reset_mid_body")  # the task is made, its answer lost on the way back
    out = tmp_path / "uncertain.mp4"
    args = ["--base-url", sandbox.base_url, *job_args(media, out)]
    first = run_cli(*args, env=env)
    assert first.returncode == 3, first.stderr
    second = run_cli(*args, env=env)
    assert second.returncode == 3 and "--resubmit" in second.stderr, second.stderr
    assert submits(sandbox) == 1
    third = run_cli(*args, "--resubmit", env=env)
    assert third.returncode == 0, third.stderr
    assert submits(sandbox) == 2
    assert out.read_bytes() == media["video"].read_bytes()


@needs_ffmpeg
def test_status_and_download_of_a_task(sandbox, media, tmp_path, env):
    first = run_cli("--json", "--base-url", sandbox.base_url, *job_args(media, tmp_path / "a.mp4"), env=env)
    task_id = json_lines(first.stdout)[-1]["task_id"]
    status = run_cli("--base-url", sandbox.base_url, "status", task_id, "--json", env=env)
    assert status.returncode == 0, status.stderr
    [event] = json_lines(status.stdout)
    assert event["status"] == "succeeded" and event["task_id"] == task_id and event["video_urls"]
    other = tmp_path / "b.mp4"
    download = run_cli("--base-url", sandbox.base_url, "download", task_id, "-o", str(other), env=env)
    assert download.returncode == 0, download.stderr
    assert other.read_bytes() == media["video"].read_bytes()
    assert submits(sandbox) == 1


# -- failures: exit codes and words ---------------------------------------------------------------------------


@needs_ffmpeg
def test_a_failed_task_is_one_line_and_exit_3(sandbox, media, tmp_path, env):
    sandbox.inject("poll", "task_failed", reason="No face was detected")
    out = tmp_path / "out.mp4"
    result = run_cli("--base-url", sandbox.base_url, *job_args(media, out), "--json", env=env)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("error: Newport AI could not make this clip")
    final = json_lines(result.stdout)[-1]
    assert (final["event"], final["exit_code"], final["kind"]) == ("error", 3, "task_failed")
    assert "Retry" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "out.mp4.part").exists()


def test_credits_and_a_rejected_key(sandbox, env):
    assert run_cli("--base-url", sandbox.base_url, "credits", env=env).stdout.strip() == "1000"
    rejected = run_cli("--base-url", sandbox.base_url, "credits", env=env_with_key(NEWPORT_API_KEY="bad"))
    assert rejected.returncode == 3
    assert "NEWPORT_API_KEY" in rejected.stderr and "Preferences" not in rejected.stderr
    assert "bad" not in rejected.stderr.replace("rejected", "")
    assert API_KEY not in rejected.stderr


def test_a_missing_credits_endpoint_confirms_nothing(sandbox, env):
    sandbox.inject("credits", "html", status=404)
    result = run_cli("--base-url", sandbox.base_url, "credits", env=env)
    assert result.returncode == 3
    assert "neither the key nor the credits could be confirmed" in result.stderr
    assert "accepted" not in result.stderr


def test_an_unreachable_service_names_the_host_and_exits_4(sandbox, env):
    refused = sandbox.refused_origin
    result = run_cli("--base-url", refused, "credits", env=env)
    assert result.returncode == 4, result.stderr
    host = refused.split("://", 1)[1]
    assert f"Can't reach Newport AI at {host}" in result.stderr
    assert "Preferences" not in result.stderr


def test_help_lists_the_exit_codes():
    result = run_cli("--help", env=dict(os.environ))
    for code in ("0", "2", "3", "4", "130"):
        assert f"\n  {code} " in result.stdout
