"""Goal: Generate returns at once with a 4 GB untrimmed source; hashing it never holds up the window.

Adds the big movie (``TF_GUI_BIG``) untrimmed, presses Generate, waits until the upload starts
(the file was described and hashed off the main thread by then), then cancels.
"""

import os

import bpy
import gui_driver as d


def scenario():
    scene = bpy.context.scene
    editor = scene.sequence_editor
    strips = getattr(editor, "strips", None) or editor.sequences
    big = strips.new_movie(name="Big", filepath=os.environ["TF_GUI_BIG"], channel=4, frame_start=1)
    editor.active_strip = big
    scene.talking_face.video_strip = "Big"
    yield 1.0
    job_id = yield from d.generate(show_tab=False)
    yield d.until(lambda: d.phase_of(job_id) == "uploading", 180, "the upload to start")
    d.record_job(job_id)
    d.invoke("sequencer.talking_face_cancel", job_id=job_id)
    yield d.until(lambda: d.phase_of(job_id) == "cancelled", 10, "the job to be cancelled")

