"""Scenario g's failed state, and the lane's goals: Generate with a 4 GB source, event-loop gaps."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import GOALS

FOUR_GB = 4 * 1024**3


def test_a_failed_job_says_why_and_retry_from_the_panel_finishes_it(gui, sandbox):
    sandbox.inject("poll", "task_failed")
    run = gui.run("failed_then_retry.py", blend=gui.project).check()
    failed = run.facts["failed"]
    assert failed["phase"] == "failed"
    assert "could not make this clip" in failed["error"] and "Retry" in failed["error"]
    assert run.facts["jobs"][run.facts["job_id"]]["phase"] == "done"
    assert sandbox.count("submit") == 2, "the artist's Retry after a failed task pays again, once"


def big_movie(gui, folder: Path) -> Path:
    """A real 2 s H.264 clip padded with a 4 GB ``free`` box (sparse: no disk is used for it)."""
    path = folder / "big.mp4"
    subprocess.run(["chroot", str(gui.root), "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1920x1080:rate=25:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    padding = FOUR_GB - path.stat().st_size
    with path.open("ab") as out:
        out.write((1).to_bytes(4, "big") + b"free" + padding.to_bytes(8, "big"))
        out.truncate(FOUR_GB)
    return path


def test_generate_returns_at_once_with_a_4_gb_source(gui, sandbox, tmp_path):
    big = big_movie(gui, tmp_path)
    run = gui.run("big_source.py", blend=gui.project, env={"TF_GUI_BIG": str(big)}).check()
    assert run.facts["generate"]["result"] == ["FINISHED"]
    GOALS["Generate returns (ms), untrimmed 4 GB source (goal < 50)"] = run.facts["generate"]["ms"]
    job = run.facts["jobs"][run.facts["job_id"]]
    assert job["video"] == str(big), "an untrimmed .mp4 is sent as its file"
    assert len(job["owner"]["input_sha256"]["video"]) == 64, "hashed (off the main thread) before the upload"
    assert sandbox.count("submit") == 0
