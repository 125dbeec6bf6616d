"""The command line as a user runs it: a real subprocess against the sandbox."""

from __future__ import annotations

import subprocess
import sys

from conftest import API_KEY, env_with_key


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newport_api", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_talking_face_writes_a_complete_output(sandbox, video_file, audio_file, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_cli("--base-url", sandbox.base_url, "talking-face", "--video", str(video_file),
                     "--audio", str(audio_file), "-o", str(out), "--enhance", "--fps", "original",
                     env=env_with_key())
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == video_file.read_bytes()
    assert result.stdout.strip() == str(out)
    assert "Downloading" in result.stderr
    [submit] = [r for r in sandbox.requests if r.phase == "submit"]
    assert submit.body["videoParams"] == {"video_width": 0, "video_height": 0, "video_enhance": 1,
                                          "fps": "original"}


def test_a_failure_is_one_line_and_a_nonzero_exit(sandbox, video_file, audio_file, tmp_path):
    sandbox.inject("poll", "task_failed", reason="No face was detected")
    out = tmp_path / "out.mp4"
    result = run_cli("--base-url", sandbox.base_url, "talking-face", "--video", str(video_file),
                     "--audio", str(audio_file), "-o", str(out), env=env_with_key())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Newport AI could not make this clip")
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "out.mp4.part").exists()


def test_a_missing_key_is_explained(video_file, tmp_path):
    env = env_with_key(NEWPORT_API_KEY="")
    result = run_cli("talking-face", "--video", str(video_file), "--audio", str(video_file), "-o", "x.mp4",
                     env=env)
    assert result.returncode == 2
    assert "NEWPORT_API_KEY" in result.stderr


def test_credits_and_a_rejected_key(sandbox):
    assert run_cli("--base-url", sandbox.base_url, "credits", env=env_with_key()).stdout.strip() == "1000"
    rejected = run_cli("--base-url", sandbox.base_url, "credits", env=env_with_key(NEWPORT_API_KEY="bad"))
    assert rejected.returncode == 1
    assert "rejected" in rejected.stderr and "bad" not in rejected.stderr.replace("rejected", "")
    assert API_KEY not in rejected.stderr


def test_plain_http_to_a_remote_host_is_refused(video_file):
    result = run_cli("--base-url", "http://example.com", "credits", env=env_with_key())
    assert result.returncode == 2
    assert "https" in result.stderr
