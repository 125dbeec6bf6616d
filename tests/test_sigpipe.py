"""A program that embeds Python (Blender) keeps SIGPIPE's default action, which ends the process.

Found in the GUI lane: cancelling a fast upload killed Debian's Blender with SIGPIPE (exit 141),
because the cancel shuts the socket down while the worker is still sending. These tests run the
real worker in a child process whose SIGPIPE is set back to the default, as Blender leaves it,
against the sandbox on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import API_KEY

from newport_api.sandbox import Sandbox

CHILD = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as Blender leaves it
    from newport_api import JobRecord, JobStore, JobWorker, NewportClient, RunnerSettings
    base_url, video, audio, folder, key = sys.argv[1:6]
    worker = JobWorker(lambda token: NewportClient(key, base_url, cancel=token), JobStore(folder),
                       settings=RunnerSettings(progress_interval=0.0))
    record = JobRecord(video=video, audio=audio, output_path=folder + "/result.mp4")
    worker.start(record)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # cancel as soon as the upload is under way, while still sending
        event = worker.progress.get(record.job_id)
        if event is not None and event.phase == "uploading" and event.progress:
            time.sleep(float(sys.argv[6]))
            break
        time.sleep(0.001)
    worker.cancel(record.job_id)
    assert worker.join(record.job_id, timeout=10)
    print("ended as", JobStore(folder).load(record.job_id).phase.value, flush=True)
""")


def test_cancelling_a_fast_upload_never_kills_a_host_that_keeps_sigpipe(tmp_path: Path):
    video = tmp_path / "big.mp4"
    with video.open("wb") as out:
        out.truncate(512 * 1024 * 1024)  # sparse: sent at full loopback speed
    audio = tmp_path / "line.wav"
    audio.write_bytes(b"RIFF" + bytes(4096))
    repo = Path(__file__).resolve().parents[1]
    with Sandbox(api_keys=[API_KEY]) as sandbox:
        done = subprocess.run([sys.executable, "-c", CHILD, sandbox.base_url, str(video), str(audio),
                               str(tmp_path / "jobs"), API_KEY, "0.3"],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode != -signal.SIGPIPE, "the process was killed by SIGPIPE"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ended as cancelled" in done.stdout
