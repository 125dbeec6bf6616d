"""Pause and resume the queue (``sequencer.talking_face_queue``), and the summary when a batch ends.

The oracles: the sandbox's request log (no submit while paused, one per shot in all), the job
records as the store wrote them on disk (what a reopened Blender reads), the strips placed on
the timeline, and the price the test computes from the WAV lengths it wrote (1 credit a second).
"""

from __future__ import annotations

import json
import pathlib

import bpy
from test_batch import (  # noqa: F401 — fixtures and helpers shared with the batch's own tests
    assert_placed_in_sync,
    controller,
    dialogue_seconds,
    new_jobs,
    prefs,
    sandbox,
    scene_rate_edit,
    scene_rate_files,
    tick_until,
)

SHOTS = 6
IDLE_TICKS = 30  # ticks with nothing running: a paused queue must start nothing in any of them


def stored_records(jobs) -> dict[str, dict]:
    """The records as the store wrote them: what a Blender opening the file next reads."""
    folder = pathlib.Path(jobs.store.directory)
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def tick_idle(jobs, times: int = IDLE_TICKS) -> None:
    for _ in range(times):
        jobs.tick()
        assert jobs.running_count() == 0, "a paused queue starts nothing"


def draw_panel(extension, capfd) -> None:
    """Draw the Jobs list as the sidebar does; Blender complains on stderr of an unknown icon or operator."""
    capfd.readouterr()
    layout = bpy.context.window_manager.popmenu_begin__internal("talking face queue test").layout
    extension.ui.panel.draw_jobs(layout, bpy.context)
    printed = capfd.readouterr()
    assert "not found" not in printed.err and "Error" not in printed.err, printed.err


def run_to_the_end(jobs, records, limit: int) -> int:
    """Tick until every shot is done, never more than ``limit`` running; the most seen at once."""
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, jobs.running_count())
        assert jobs.running_count() <= limit, "never more than max_parallel_jobs at once"
        return all(jobs.views[record.job_id].phase.value == "done" for record in records)

    assert tick_until(jobs, all_done, timeout=180)
    return most


def test_pause_lets_the_submit_in_flight_finish_and_starts_nothing_new_then_resume_finishes_every_shot(
         extension, scene_rate_edit, sandbox, prefs, capfd):  # noqa: F811
    edit = scene_rate_edit
    prefs.max_parallel_jobs = 1
    jobs = controller(extension)
    sandbox.inject("submit", "stall", seconds=5)  # the first submit is in flight long enough to pause meanwhile
    before = set(jobs.views)
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", mode="ASYNC") == {"FINISHED"}
    records = new_jobs(extension, before)
    assert len(records) == SHOTS
    assert tick_until(jobs, lambda: sandbox.count("submit") == 1)
    [in_flight] = [record for record in records if jobs.worker.is_running(record.job_id)]
    assert not jobs.views[in_flight.job_id].task_id, "paused while its submit is on its way"

    assert bpy.ops.sequencer.talking_face_queue(action="PAUSE") == {"FINISHED"}
    assert tick_until(jobs, lambda: jobs.running_count() == 0)
    stored = stored_records(jobs)
    assert stored[in_flight.job_id]["task_id"], "the task of the submit in flight is recorded"
    assert jobs.views[in_flight.job_id].phase.value == "done", "the paid task went on to its result"
    tick_idle(jobs)
    assert sandbox.count("submit") == 1, "no new submit while paused"
    waiting = [record for record in records if record.job_id != in_flight.job_id]
    assert all(stored[record.job_id]["phase"] == "pending" for record in waiting)
    assert all(stored[record.job_id]["owner"].get("queue_paused") for record in waiting), "the pause is saved"

    draw_panel(extension, capfd)  # the batch box with Resume while paused
    assert bpy.ops.sequencer.talking_face_queue(action="RESUME") == {"FINISHED"}
    run_to_the_end(jobs, records, limit=1)
    assert sandbox.count("submit") == SHOTS, "one submit per shot"
    for record in records:
        assert_placed_in_sync(extension, edit, jobs.views[record.job_id])
    jobs.tick()  # the tick that sees the last shot done already told; one more must not tell again
    printed = capfd.readouterr().out
    draw_panel(extension, capfd)  # the batch box with its summary
    credits = sum(dialogue_seconds(index) for index in range(SHOTS))  # 1 credit a second of audio at 25 fps
    headline = f"Batch of {SHOTS} shots ended: {SHOTS} done — {credits:.1f} credits spent."
    lines = printed.splitlines()
    assert lines.count(f"Talking Face: {headline}") == 1, f"told once, in the terminal:\n{printed}"
    assert lines.count(f"Info: Talking Face: {headline}") == 1, f"and once as an operator's report:\n{printed}"


def test_a_pause_survives_a_reopen_and_resumed_jobs_keep_to_max_parallel_jobs(
        extension, scene_rate_edit, sandbox, prefs):  # noqa: F811
    edit = scene_rate_edit
    prefs.max_parallel_jobs = 2
    jobs = controller(extension)
    before = set(jobs.views)
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", mode="ASYNC") == {"FINISHED"}
    records = new_jobs(extension, before)
    assert bpy.ops.sequencer.talking_face_queue(action="PAUSE") == {"FINISHED"}
    assert tick_until(jobs, lambda: jobs.running_count() == 0), "the two preparing shots stop at the gate"
    tick_idle(jobs)
    assert sandbox.count("submit") == 0

    extension.operators.controller.discard_controller()  # Blender quits (or the extension is turned off)
    stored = stored_records(jobs)
    assert all(stored[record.job_id]["owner"].get("queue_paused") for record in records)
    reopened = controller(extension)
    assert reopened is not jobs
    assert bpy.ops.sequencer.talking_face_resume(mode="ASYNC") == {"FINISHED"}  # what opening the file does
    tick_idle(reopened)
    assert sandbox.count("submit") == 0, "still paused after the reopen"

    assert bpy.ops.sequencer.talking_face_queue(action="RESUME") == {"FINISHED"}
    most = run_to_the_end(reopened, records, limit=2)
    assert most == 2, "both slots were used"
    assert sandbox.count("submit") == SHOTS
    for record in records:
        assert_placed_in_sync(extension, edit, reopened.views[record.job_id])


def test_pausing_one_batch_leaves_another_running(extension, scene_rate_edit, sandbox, prefs):  # noqa: F811
    prefs.max_parallel_jobs = 3
    jobs = controller(extension)
    compat = extension.operators.compat
    batches = []
    for shard in ("0/2", "1/2"):  # two batches: the even shots, then the odd ones
        before = set(jobs.views)
        assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", shard=shard, mode="ASYNC") == {"FINISHED"}
        batches.append(new_jobs(extension, before))
        for strip in compat.all_strips(scene_rate_edit):
            strip.select = strip.name.startswith("Shot")
    paused, running = batches
    started_before_pause = {record.job_id for record in paused if jobs.worker.is_running(record.job_id)}
    assert bpy.ops.sequencer.talking_face_queue(action="PAUSE", batch=paused[0].owner["batch"]) == {"FINISHED"}
    assert tick_until(jobs, lambda: all(jobs.views[record.job_id].phase.value == "done" for record in running)
                      and jobs.running_count() == 0)
    tick_idle(jobs)
    held = [record for record in paused if record.job_id not in started_before_pause]
    assert held and all(jobs.views[record.job_id].phase.value == "pending" for record in held)
    assert sandbox.count("submit") == len(running) + len(started_before_pause)
    assert bpy.ops.sequencer.talking_face_queue(action="PAUSE", batch=running[0].owner["batch"]) == {"CANCELLED"}, \
        "a batch that has ended has nothing to pause"
    assert bpy.ops.sequencer.talking_face_queue(action="RESUME", batch=paused[0].owner["batch"]) == {"FINISHED"}
    run_to_the_end(jobs, paused, limit=3)
    assert sandbox.count("submit") == SHOTS
