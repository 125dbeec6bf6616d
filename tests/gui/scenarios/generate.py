"""Scenario a: Blender started on the project with the extension enabled at start-up.

Pick the sound strip in the panel, press Generate (INVOKE, as a click), keep the event loop
running while the monitor ticks, the clip is cut by a background Blender and the job runs;
save when the result has landed. Screenshots: Generate greyed out with its reason, running,
done.
"""


import bpy
import gui_driver as d


def scenario():
    d.facts["enabled_at_startup"] = d.enabled()
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    scene = bpy.context.scene
    scene.talking_face.audio_source = "STRIP"
    yield 0.5
    d.screenshot("panel-idle-greyed")
    job_id = yield from d.generate(show_tab=False)
    yield d.until(d.monitor_running, 5, "the monitor to tick")
    yield d.until(lambda: d.phase_of(job_id) in ("processing", "done"), 120, "the job to be processing")
    d.screenshot("panel-running")
    yield from d.finish(job_id)
    yield 0.5
    d.screenshot("panel-done")
    yield d.until(lambda: not d.monitor_running(), 10, "the monitor to stop once nothing is running")

