"""Goal: Generate returns at once with a 4 GB untrimmed source; hashing it never holds up the window.

Adds the big movie (``TF_GUI_BIG``) untrimmed, presses Generate, waits until the upload starts
(the file was described and hashed off the main thread by then), then cancels.
"""

import importlib.util
import os

import bpy

spec = importlib.util.spec_from_file_location("gui_driver", os.environ["TF_GUI_DRIVER"])
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    scene = bpy.context.scene
    editor = scene.sequence_editor
    strips = getattr(editor, "strips", None) or editor.sequences
    big = strips.new_movie(name="Big", filepath=os.environ["TF_GUI_BIG"], channel=4, frame_start=1)
    editor.active_strip = big
    scene.talking_face.video_strip = "Big"
    d.choose_audio(scene)
    yield 1.0
    result, elapsed = d.invoke("sequencer.talking_face_generate")
    d.facts["generate"] = {"result": sorted(result), "ms": elapsed}
    job_id = d.jobs()[-1].job_id
    d.facts["job_id"] = job_id
    yield d.until(lambda: d.phase_of(job_id) == "uploading", 180, "the upload to start")
    d.record_job(job_id)
    d.invoke("sequencer.talking_face_cancel", job_id=job_id)
    yield d.until(lambda: d.phase_of(job_id) == "cancelled", 10, "the job to be cancelled")


d.run(scenario())
