"""Issue 11's queue with a window: a batch of three shots, one at a time; Pause from the panel while the
first runs, Resume after a while, then the batch's summary in the panel, the status bar and the Info log.

The shots are batch.py's (the test copies it beside this file). Times are ``time.monotonic()``, the
clock the sandbox stamps its requests with, so the test can tell which submits came while paused.
"""

import os
import subprocess
import sys
import time

import bpy
import gui_driver as d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batch import SHOT_STARTS, add_shots  # found once the folder is on the path

PAUSED_SECONDS = 4.0  # about 20 ticks of the monitor: a queue that ignored the pause would start a job


def batch_id() -> str:
    return d.jobs()[0].owner["batch"]


def running_here() -> int:
    return d.controller().running_count()


def info_log() -> str:
    """Every report of the Info editor, as Blender copies them (Info ▸ Copy)."""
    area = d.sequencer_area()
    previous = area.type
    area.type = "INFO"
    try:
        with d.override(area, kind="WINDOW"):
            bpy.ops.info.select_all(action="SELECT")
            bpy.ops.info.report_copy()
    finally:
        area.type = previous
    return bpy.context.window_manager.clipboard


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    bpy.context.preferences.addons[d.EXTENSION].preferences.max_parallel_jobs = 1
    yield from d.show_talking_face_tab()
    add_shots(bpy.context.scene)
    bpy.context.scene.talking_face.regenerate = True  # Take 2 and 3 are alike: each pays for its own result
    yield 0.5
    d.invoke("sequencer.talking_face_batch", audio="OVERLAP", audio_channel=1)
    yield 1.0
    subprocess.run(["xdotool", "key", "Return"], check=False)  # OK in the confirmation dialog
    yield d.until(lambda: len(d.jobs()) == len(SHOT_STARTS), 30, "the batch's jobs to start")
    d.facts["job_ids"] = [record.job_id for record in d.jobs()]
    yield d.until(lambda: d.controller().worker.any_running(), 60, "the first shot to be sent")
    d.invoke("sequencer.talking_face_queue", action="PAUSE", batch=batch_id())  # the batch box's Pause
    d.facts["paused_at"] = time.monotonic()
    yield d.until(lambda: running_here() == 0, 120, "the running shot to finish")
    d.facts["idle_from"] = time.monotonic()
    yield PAUSED_SECONDS
    d.screenshot("batch-paused")
    d.facts["phases_before_resume"] = {job_id: d.phase_of(job_id) for job_id in d.facts["job_ids"]}
    d.facts["resumed_at"] = time.monotonic()
    d.invoke("sequencer.talking_face_queue", action="RESUME", batch=batch_id())  # the batch box's Resume
    yield d.until(lambda: all(d.phase_of(job_id) == "done" for job_id in d.facts["job_ids"]), 240,
                  "every shot to be done")
    yield 1.0
    d.screenshot("batch-summary")
    d.facts["info_log"] = info_log()
    for job_id in d.facts["job_ids"]:
        d.record_job(job_id)
    bpy.ops.wm.save_mainfile()
