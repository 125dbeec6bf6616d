"""Issue 11's batch with a window: three shots, each with a line on channel 1; Dub Shots asks first.

The confirmation dialog is open (and screenshotted) until the scenario presses Return, as an
artist confirms it; then the queue runs and the Jobs list groups the batch's shots.
"""

import os
import subprocess

import bpy
import gui_driver as d

SHOT_STARTS = (11, 131, 251)


def add_shots(scene):
    editor = scene.sequence_editor
    strips = getattr(editor, "strips", None) or editor.sequences
    folder = os.path.dirname(bpy.data.filepath)
    for strip in strips:
        strip.select = strip.type == "MOVIE"
    for number, start in enumerate(SHOT_STARTS[1:], start=2):
        movie = strips.new_movie(name=f"Take {number}", filepath=f"{folder}/take.mp4", channel=2,
                                 frame_start=start - 10)
        movie.frame_offset_start = movie.frame_offset_end = 10
        strips.new_sound(name=f"Line {number}", filepath=f"{folder}/line.mp3", channel=1, frame_start=start)
        movie.select = True
    scene.frame_end = 400


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    scene = bpy.context.scene
    add_shots(scene)
    yield 0.5
    d.invoke("sequencer.talking_face_batch", audio="OVERLAP", audio_channel=1)
    yield 1.5
    d.screenshot("batch-confirm")
    subprocess.run(["xdotool", "key", "Return"], check=False)  # OK in the dialog
    yield d.until(lambda: len(d.jobs()) == len(SHOT_STARTS), 30, "the batch's jobs to start")
    d.facts["job_ids"] = [record.job_id for record in d.jobs()]
    yield d.until(lambda: all(d.phase_of(job_id) == "done" for job_id in d.facts["job_ids"]), 240,
                  "every shot to be done")
    yield 0.5
    d.screenshot("batch-jobs")
    for job_id in d.facts["job_ids"]:
        d.record_job(job_id)
    bpy.ops.wm.save_mainfile()
