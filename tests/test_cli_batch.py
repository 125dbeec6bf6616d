"""``python -m newport_api batch MANIFEST`` as a pipeline runs it: real subprocesses against the sandbox.

The oracles are outside the command: the sandbox's request log (what was uploaded
and submitted, by which row, and when each job began and ended), and the
outputs, which must equal each row's own source video byte for byte (the
sandbox's "result" is the uploaded video).  Each row's video is a different
movie (its own length), so a row's upload, submit and result are told apart by
the video's file name, which the client keeps in the storage key.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_media import FFMPEG, NO_FFMPEG, write_movie, write_tone
from conftest import API_KEY, env_with_key
from test_cli import WAIT_SECONDS, json_lines, wait_for

from newport_api.sandbox import Sandbox

SHOTS = 6


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shot1.mp4 … shot6.mp4 (six different movies), line.wav, vocals.wav and a text file."""
    if not FFMPEG:
        pytest.skip(NO_FFMPEG)
    folder = tmp_path_factory.mktemp("batch_media")
    for number in range(1, SHOTS + 1):
        write_movie(folder / f"shot{number}.mp4", seconds=0.6 + 0.12 * number)
    write_tone(folder / "line.wav", 1.0)
    write_tone(folder / "vocals.wav", 1.0, frequency=330)
    (folder / "notes.txt").write_text("not audio, just words\n" * 40)
    return folder


@pytest.fixture
def project(media: Path, tmp_path: Path) -> Path:
    """A project folder: the media under shots/, an empty dub/ for the results; manifests go at its top."""
    shutil.copytree(media, tmp_path / "project" / "shots")
    (tmp_path / "project" / "dub").mkdir()
    return tmp_path / "project"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return env_with_key(TALKING_FACE_STATE_DIR=str(tmp_path / "state"))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["video", "audio", "output", "vocals", "width", "height", "enhance", "fps"]
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def shot_row(number: int, **options: str) -> dict[str, str]:
    return {"video": f"shots/shot{number}.mp4", "audio": "shots/line.wav", "output": f"dub/shot{number}.mp4",
            **options}


def batch_command(sandbox: Sandbox, manifest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "newport_api", "--base-url", sandbox.base_url, "batch", str(manifest), *extra]


def run_batch(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run from ``cwd``, not the manifest's folder: the manifest's relative paths must not depend on it."""
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


def row_of(url_or_key: str) -> int | None:
    """The row a storage key or an uploaded file's URL belongs to (the client keeps the file's name)."""
    for number in range(1, SHOTS + 1):
        if f"_shot{number}.mp4" in url_or_key:
            return number
    return None


def video_uploads(sandbox: Sandbox) -> list[tuple[int | None, float]]:
    """(row, time) of each upload of a row's video to the storage host."""
    uploads = [(row_of(str((request.body or {}).get("key", ""))), request.time) for request in sandbox.requests
               if request.role == "storage" and request.method == "POST"]
    return [(row, time) for row, time in uploads if row is not None]  # not the audio


def submitted_rows(sandbox: Sandbox) -> list[int | None]:
    return [row_of(request.body["srcVideoUrl"]) for request in sandbox.requests if request.phase == "submit"]


def summary_of(stdout: str) -> dict:
    [summary] = [event for event in json_lines(stdout) if event["event"] == "summary"]
    return summary


def most_jobs_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


# -- a whole batch --------------------------------------------------------------------------------------------


def test_six_rows_two_at_a_time_each_submitted_once_with_its_options(media, project, tmp_path, env):
    options = {2: {"enhance": "yes"}, 3: {"width": "320", "height": "240"}, 4: {"fps": "original"},
               5: {"vocals": "shots/vocals.wav"}}
    manifest = write_csv(project / "shots.csv", [shot_row(n, **options.get(n, {})) for n in range(1, SHOTS + 1)])
    with Sandbox(processing_seconds=1.0) as sandbox:
        command = batch_command(sandbox, manifest, "--parallel", "2", "--json")
        result = run_batch(command, env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        log = sandbox.requests

        for number in range(1, SHOTS + 1):
            assert (project / "dub" / f"shot{number}.mp4").read_bytes() == (media / f"shot{number}.mp4").read_bytes()
        assert sorted(submitted_rows(sandbox)) == list(range(1, SHOTS + 1))
        params = {row_of(r.body["srcVideoUrl"]): r.body for r in log if r.phase == "submit"}
        assert params[1]["videoParams"] == {"video_width": 0, "video_height": 0, "video_enhance": 0}  # 25 fps
        assert params[2]["videoParams"]["video_enhance"] == 1
        assert (params[3]["videoParams"]["video_width"], params[3]["videoParams"]["video_height"]) == (320, 240)
        assert params[4]["videoParams"]["fps"] == "original"
        assert "vocalAudioUrl" in params[5] and all("vocalAudioUrl" not in params[n] for n in (1, 2, 3, 4, 6))

        # At most two jobs at once: a job runs from its video's upload to its result's download.
        summary = summary_of(result.stdout)
        task_of_row = {entry["row"]: entry["task_id"] for entry in summary["done"]}
        assert sorted(task_of_row) == list(range(1, SHOTS + 1)) and summary["exit_code"] == 0
        downloaded = {r.path.rsplit("/", 1)[-1].removesuffix(".mp4"): r.time for r in log if r.role == "cdn"}
        started = {row: time for row, time in reversed(video_uploads(sandbox))}  # the first upload of each
        spans = [(started[row], downloaded[task_of_row[row]]) for row in range(1, SHOTS + 1)]
        assert most_jobs_at_once(spans) == 2
        assert summary["credits_estimated"] == pytest.approx(6.0, abs=0.1)  # 6 × 1 s of audio at 25 fps

        # One event per job state change, in each job's order.
        phases = [e["phase"] for e in json_lines(result.stdout) if e["event"] == "job" and e["row"] == 3]
        assert phases == ["pending", "uploading", "submitting", "queued", "processing", "downloading", "done"]

        # Run again: every row is done, so nothing at all is sent.
        again = run_batch(command, env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert len(sandbox.requests) == len(log)
        assert [entry["row"] for entry in summary_of(again.stdout)["skipped"]] == list(range(1, SHOTS + 1))


def test_a_failed_row_does_not_stop_the_others(media, project, tmp_path, env, sandbox):
    sandbox.inject("poll", "task_failed", reason="No face was detected")  # whichever task is polled first
    manifest = project / "shots.json"
    manifest.write_text(json.dumps([{**shot_row(n), "enhance": n % 2 == 0} for n in range(1, 5)]))
    result = run_batch(batch_command(sandbox, manifest, "--parallel", "2"), env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    made = [n for n in range(1, 5) if (project / "dub" / f"shot{n}.mp4").exists()]
    [failed] = [n for n in range(1, 5) if n not in made]
    for number in made:
        assert (project / "dub" / f"shot{number}.mp4").read_bytes() == (media / f"shot{number}.mp4").read_bytes()
    assert sorted(submitted_rows(sandbox)) == [1, 2, 3, 4]
    assert sorted(result.stdout.split()) == [str(project / "dub" / f"shot{n}.mp4") for n in made]
    assert "Batch of 4 rows: 3 done, 1 failed." in result.stderr
    assert (f"row {failed} failed: Newport AI could not make this clip (No face was detected) — adjust the "
            "inputs, then run the same command again.") in result.stderr
    assert "Traceback" not in result.stderr and "Retry" not in result.stderr


# -- Ctrl-C, then the same command ---------------------------------------------------------------------------


def test_ctrl_c_mid_batch_then_the_same_command_submits_and_uploads_each_row_once(media, project, tmp_path,
                                                                                     env):
    manifest = write_csv(project / "shots.csv", [shot_row(n) for n in range(1, SHOTS + 1)])
    with Sandbox(processing_seconds=3.0) as sandbox:
        command = batch_command(sandbox, manifest, "--parallel", "2", "--json")
        first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        wait_for(lambda: sandbox.count("submit") == 2 or first.poll() is not None, "two submits")
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=WAIT_SECONDS)
        assert first.returncode == 130, stderr
        summary = summary_of(stdout)
        assert summary["exit_code"] == 130 and summary["not_started"], summary
        assert 2 <= sandbox.count("submit") < SHOTS

        again = run_batch(command, env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        for number in range(1, SHOTS + 1):
            assert (project / "dub" / f"shot{number}.mp4").read_bytes() == (media / f"shot{number}.mp4").read_bytes()
        assert sorted(submitted_rows(sandbox)) == list(range(1, SHOTS + 1))
        assert sorted(row for row, _ in video_uploads(sandbox)) == list(range(1, SHOTS + 1))


# -- refused before anything is sent -------------------------------------------------------------------------


def bad_manifest(project: Path) -> tuple[Path, set[int]]:
    rows = [shot_row(1),
            shot_row(2, video="shots/missing.mp4"),
            shot_row(3, audio="shots/notes.txt"),
            shot_row(4),
            shot_row(5, width="-5"),
            shot_row(6, output="dub/shot1.mp4")]
    return write_csv(project / "shots.csv", rows), {2, 3, 5, 6}


def test_bad_rows_refuse_the_whole_batch_before_any_request(project, tmp_path, env, sandbox):
    manifest, bad = bad_manifest(project)
    result = run_batch(batch_command(sandbox, manifest), env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(" (line")[0] for line in lines[:-1]] == [f"error: row {n}" for n in sorted(bad)]
    assert lines[-1] == ("error: 4 of 6 rows are invalid, so nothing was sent — fix them, or pass --skip-invalid "
                         "to run the others.")
    assert "Traceback" not in result.stderr
    assert sandbox.requests == []
    assert list((project / "dub").iterdir()) == []


def test_skip_invalid_runs_the_valid_rows_and_names_the_others(media, project, tmp_path, env, sandbox):
    manifest, bad = bad_manifest(project)
    result = run_batch(batch_command(sandbox, manifest, "--skip-invalid", "--json"), env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    summary = summary_of(result.stdout)
    assert [entry["row"] for entry in summary["invalid"]] == sorted(bad)
    assert [entry["row"] for entry in summary["done"]] == [1, 4]
    assert sorted(submitted_rows(sandbox)) == [1, 4]
    for number in (1, 4):
        assert (project / "dub" / f"shot{number}.mp4").read_bytes() == (media / f"shot{number}.mp4").read_bytes()


def test_too_few_credits_for_the_whole_batch_refuse_it_before_any_upload(project, tmp_path, env):
    manifest = write_csv(project / "shots.csv", [shot_row(n) for n in range(1, 5)])
    with Sandbox(credits=3) as sandbox:  # each row alone fits (1 s of audio: 1 credit); the four do not
        result = run_batch(batch_command(sandbox, manifest), env, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip() == ("error: The rows to make need about 4 credits but the account has 3 — top "
                                         "up your Newport AI account or run fewer rows, then run the same command "
                                         "again.")
        assert {request.phase for request in sandbox.requests} == {"credits"}


def test_a_rejected_key_refuses_the_batch_before_any_upload(project, tmp_path):
    manifest = write_csv(project / "shots.csv", [shot_row(n) for n in range(1, 3)])
    with Sandbox(api_keys=[API_KEY]) as sandbox:
        env = env_with_key(NEWPORT_API_KEY="sk-not-this-one", TALKING_FACE_STATE_DIR=str(tmp_path / "state"))
        result = run_batch(batch_command(sandbox, manifest), env, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip() == ("error: Newport AI rejected the API key in NEWPORT_API_KEY — check it, "
                                         "then run the same command again.")  # once for the batch, not per row
        assert [request.phase for request in sandbox.requests] == ["credits"]


def test_a_row_whose_submit_went_unanswered_is_sent_again_only_with_resubmit(media, project, tmp_path, env,
                                                                           sandbox):
    sandbox.inject("submit", "reset_mid_body")  # row 1's task is made, its answer lost on the way back
    manifest = write_csv(project / "shots.csv", [shot_row(1), shot_row(2)])
    command = batch_command(sandbox, manifest, "--parallel", "1")
    first = run_batch(command, env, cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    assert (project / "dub" / "shot2.mp4").read_bytes() == (media / "shot2.mp4").read_bytes()
    second = run_batch(command, env, cwd=tmp_path)
    assert second.returncode == 3 and "--resubmit" in second.stderr, second.stderr
    assert sorted(submitted_rows(sandbox)) == [1, 2]
    third = run_batch([*command, "--resubmit"], env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert sorted(submitted_rows(sandbox)) == [1, 1, 2]
    assert (project / "dub" / "shot1.mp4").read_bytes() == (media / "shot1.mp4").read_bytes()


def test_a_row_continues_the_task_a_talking_face_command_started(media, project, tmp_path, env):
    manifest = write_csv(project / "shots.csv", [shot_row(1), shot_row(2)])
    with Sandbox(processing_seconds=3.0) as sandbox:
        single = [sys.executable, "-m", "newport_api", "--base-url", sandbox.base_url, "talking-face",
                  "--video", str(project / "shots" / "shot1.mp4"), "--audio", str(project / "shots" / "line.wav"),
                  "-o", str(tmp_path / "elsewhere.mp4")]
        first = subprocess.Popen(single, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: sandbox.count("submit") == 1 or first.poll() is not None, "the submit")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=WAIT_SECONDS)
        assert first.returncode == 130, stderr

        result = run_batch(batch_command(sandbox, manifest, "--json"), env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert sorted(submitted_rows(sandbox)) == [1, 2]  # row 1's job is the command's: one submit in all
        [continued] = [e for e in json_lines(result.stdout) if e["event"] == "job" and e["row"] == 1][:1]
        assert continued["message"].startswith(f"continuing task {continued['task_id']}"), continued
        assert (project / "dub" / "shot1.mp4").read_bytes() == (media / "shot1.mp4").read_bytes()


def test_ctrl_c_during_a_submit_waits_for_its_answer_so_the_rerun_continues_it(media, project, tmp_path, env,
                                                                             sandbox):
    sandbox.inject("submit", "stall", seconds=2)  # row 1's submit is made, its answer comes late
    manifest = write_csv(project / "shots.csv", [shot_row(1), shot_row(2)])
    command = batch_command(sandbox, manifest, "--parallel", "1", "--json")
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_for(lambda: sandbox.count("submit") == 1 or first.poll() is not None, "the submit")
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=WAIT_SECONDS)
    assert first.returncode == 130, stderr
    assert "Waiting for Newport AI to confirm a submit" in stderr
    [interrupted] = summary_of(stdout)["interrupted"]
    assert interrupted["row"] == 1 and interrupted["task_id"], interrupted

    again = run_batch(command, env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(submitted_rows(sandbox)) == [1, 2]
    for number in (1, 2):
        assert (project / "dub" / f"shot{number}.mp4").read_bytes() == (media / f"shot{number}.mp4").read_bytes()
