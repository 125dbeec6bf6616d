"""Issue 11's acceptance check in the GUI lane: the twelve-shot edit, SIGKILL mid-batch, reopen.

Debian's Blender with a window runs Dub Shots on twelve shots of mixed sizes and rates (the
table of ``tests/blender/edit_shots.py``, made here by Debian's ffmpeg), is SIGKILLed while some
results are placed and saved, some placed but not saved, some submitted and the rest waiting,
and is opened again on the saved file. The oracles: the sandbox's request log (twelve submits
over both sessions), the job records on disk at the kill, and the saved .blend read back by
another Blender (each shot's result placed exactly once, above it, from its first frame).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blender"))  # the edit's bpy-free table
import edit_shots

PARALLEL = 3  # the preferences' default max_parallel_jobs
KILL_AFTER = 4  # results placed before the queue is held and Blender killed
IN_FLIGHT = ("uploading", "submitting", "downloading", "downloaded")


def make_edit(root: Path, folder: Path) -> Path:
    """The twelve shots and their dialogues, made by the root's ffmpeg; their listing for the scenario."""
    ffmpeg = ["chroot", str(root), "ffmpeg", "-v", "error", "-y"]
    shots = []
    for index, (name, (width, height), rate, frames) in enumerate(edit_shots.SHOTS):
        movie, line = folder / f"{name}.mp4", folder / f"line{index:02d}.wav"
        subprocess.run([*ffmpeg, "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate}",
                        "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(movie)], check=True)
        tone = f"sine=frequency=440:sample_rate=48000:duration={edit_shots.dialogue_seconds(index)}"
        subprocess.run([*ffmpeg, "-f", "lavfi", "-i", tone, "-c:a", "pcm_s16le", str(line)], check=True)
        shots.append({"name": edit_shots.shot_name(index), "line_name": edit_shots.line_name(index),
                      "movie": str(movie), "line": str(line), "start": edit_shots.shot_start(index)})
    listing = folder / "edit.json"
    listing.write_text(json.dumps(shots))
    return listing


def held(records: list[dict]) -> bool:
    """The held queue stands still: every slot polls a task the sandbox keeps queued, the rest wait."""
    polling = [record for record in records if record["phase"] in ("queued", "processing")]
    waiting = [record for record in records if record["phase"] == "pending"]
    return (len(records) == len(edit_shots.SHOTS) and not any(record["phase"] in IN_FLIGHT for record in records)
            and all(record["task_id"] for record in polling)
            and all(record["message"] == "Waiting in the queue" for record in waiting)
            and (len(polling) == PARALLEL or not waiting))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_twelve_shots_killed_mid_batch_then_reopened_finish_once_each(gui, sandbox, gui_root):
    listing = make_edit(gui_root, gui.project.parent)
    session = gui.start("batch_edit_kill.py", blend=gui.project, env={"TF_GUI_STAGE": "start",
                                                                      "TF_GUI_EDIT": str(listing)})
    gui.wait_signal("saved", session, timeout=300)
    wait_for(lambda: sum(record["phase"] == "done" for record in gui.job_records()) >= KILL_AFTER, 240,
             f"{KILL_AFTER} results placed")
    sandbox.inject("poll", "status0", None)  # hold the queue: the running tasks stay queued
    wait_for(lambda: held(gui.job_records()), 120, "the batch's queue to stand still")
    gui.kill(session)
    at_kill = {record["job_id"]: record for record in gui.job_records()}
    phases = [record["phase"] for record in at_kill.values()]
    assert phases.count("done") >= KILL_AFTER and "pending" in phases and (
        "queued" in phases or "processing" in phases), phases
    submitted = sandbox.count("submit")

    sandbox.clear_faults()
    reopened = gui.run("batch_edit_kill.py", blend=gui.project, env={"TF_GUI_STAGE": "reopen"}, timeout=420).check()
    assert sorted(reopened.facts["job_ids"]) == sorted(at_kill)
    assert sandbox.count("submit") == len(edit_shots.SHOTS) >= submitted, "no shot was submitted twice"
    saved = gui.inspect()
    shots = {strip["name"]: strip for strip in saved["strips"] if strip["name"].startswith("Shot")}
    for job_id, job in reopened.facts["jobs"].items():
        assert job["phase"] == "done", job["error"]
        if at_kill[job_id]["task_id"]:
            assert job["task_id"] == at_kill[job_id]["task_id"], "a submitted task was polled, not sent again"
        source = shots[job["owner"]["source_strip"]]
        placed = [strip for strip in saved["strips"] if strip["job"] == job_id and strip["type"] == "MOVIE"]
        assert len(placed) == 1, f"{source['name']}: {len(placed)} results in the saved file"
        assert placed[0]["start"] == source["start"] and placed[0]["channel"] > source["channel"]
