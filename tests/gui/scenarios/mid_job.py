"""Scenarios b, c and e: something happens to Blender or the extension while a job runs.

``TF_GUI_MODE`` says what, once the newest job reaches ``TF_GUI_PHASE``:

- ``quit``: File ▸ Quit (the job keeps its record; ``resume.py`` opens the file again);
- ``disable``: disable and re-enable the extension in the Preferences, then wait for the result;
- ``reload``: F8 (``script.reload``), then wait for the result;
- ``cancel``: Cancel in the job's row of the panel;
- ``offline``: switch Online Access off, hold, switch it on again, then wait for the result;
- ``stalled``: disable the extension, switch Online Access off, enable it again (nothing may resume
  it now), switch Online Access on: the job shows as paused until Resume is pressed in its row;
- ``tick_error``: one tick of the monitor raises; the panel says so and the job still lands.
"""

import os

import bpy
import gui_driver as d

MODE = os.environ["TF_GUI_MODE"]
PHASE = os.environ.get("TF_GUI_PHASE", "processing")


def wait_until_done(job_id):
    yield d.until(d.monitor_running, 5, "the monitor to run again")
    yield from d.finish(job_id)


def scenario():
    job_id = yield from d.generate()
    yield d.until(lambda: d.phase_of(job_id) == PHASE, 120, f"the job to be {PHASE}")
    d.signal(PHASE)
    if MODE == "quit":
        return  # gui_driver quits as File ▸ Quit does, with the job still running
    if MODE in ("disable", "reload"):
        if MODE == "disable":
            bpy.ops.preferences.addon_disable(module=d.EXTENSION)
            yield 0.5
            bpy.ops.preferences.addon_enable(module=d.EXTENSION)
        else:
            with d.override(kind="WINDOW"):
                bpy.ops.script.reload()
        d.note(f"{MODE} done")
        yield 0.2
        yield from wait_until_done(job_id)
    elif MODE == "cancel":
        d.invoke("sequencer.talking_face_cancel", job_id=job_id)
        yield d.until(lambda: d.phase_of(job_id) == "cancelled", 5, "the job to be cancelled")
        yield 0.5
        d.screenshot(f"panel-cancelled-{PHASE}")
        d.record_job(job_id)
    elif MODE == "stalled":
        bpy.ops.preferences.addon_disable(module=d.EXTENSION)
        bpy.context.preferences.system.use_online_access = False
        bpy.ops.preferences.addon_enable(module=d.EXTENSION)
        yield 1.0
        bpy.context.preferences.system.use_online_access = True
        yield 1.0
        record = d.controller().views[job_id]
        d.facts["paused_reason"] = d.controller().pause_reason(record)
        d.facts["phase_while_paused"] = record.phase.value
        d.screenshot("panel-paused")
        d.invoke("sequencer.talking_face_resume", job_id=job_id)
        yield from wait_until_done(job_id)
    elif MODE == "tick_error":
        controller = d.controller()
        real_tick = controller.tick
        failures = []

        def failing_once():
            if not failures:
                failures.append(1)
                raise RuntimeError("a tick failure made by the test")
            return real_tick()

        controller.tick = failing_once
        yield d.until(lambda: failures, 5, "the failing tick")
        d.facts["monitor_error"] = d.extension().operators.jobs_ops.monitor_error()
        yield from wait_until_done(job_id)
    elif MODE == "offline":
        bpy.context.preferences.system.use_online_access = False
        yield d.until(lambda: job_id in d.controller().paused_offline and not d.controller().is_running(job_id),
                      5, "the job to pause")
        yield 0.5
        d.screenshot("panel-paused-offline")
        d.signal("paused")
        yield d.until(lambda: d.received("go-online"), 60, "the test to let it go on")
        bpy.context.preferences.system.use_online_access = True
        yield from wait_until_done(job_id)

