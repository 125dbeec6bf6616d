"""Issue 11's takes with a window: Generate, then New Take on the same trimmed strip, then the take switch.

Both presses go through the sidebar's operators (INVOKE, as a click); the second one is New Take,
which pays again although an identical job exists. Once both takes are on the timeline the
switch (the Takes row's ▶) makes the first take play again, wrapping around; the file is saved
and another Blender reads what the artist would find in it.
"""

import bpy
import gui_driver as d


def wait_for_new_job(before):
    yield d.until(lambda: len(d.jobs()) > before, 30, "the job to start")
    job_id = d.jobs()[-1].job_id
    yield from d.finish(job_id, "the take to be placed")
    return job_id


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    d.choose_audio(bpy.context.scene)
    job_ids = []
    for press in ({}, {"new_take": True}):  # Generate, then New Take
        before = len(d.jobs())
        result, _elapsed = d.invoke("sequencer.talking_face_generate", **press)
        d.facts.setdefault("presses", []).append(sorted(result))
        job_ids.append((yield from wait_for_new_job(before)))
    d.facts["job_ids"] = job_ids
    yield 0.5
    d.screenshot("takes-newest")
    result, _elapsed = d.invoke("sequencer.talking_face_take", direction="NEXT")
    d.facts["switch"] = sorted(result)
    editor = bpy.context.scene.sequence_editor
    d.facts["active_after_switch"] = editor.active_strip.name if editor.active_strip else ""
    with d.override(kind="WINDOW"):
        bpy.ops.sequencer.view_all()
    yield 1.0
    d.screenshot("takes")
    bpy.ops.wm.save_mainfile()
