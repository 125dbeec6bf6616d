"""Issue 11's twelve-shot edit with a window, killed mid-batch, then opened again.

``TF_GUI_STAGE=start``: build the edit (the shots listed in ``$TF_GUI_EDIT``, a JSON file: each
movie on channel 2, its dialogue on channel 1 a frame later) in a scene of its own, save, press
Dub Shots and confirm the dialog with Return as an artist does; save once two results are placed
(``signal saved``), then go on until the test SIGKILLs Blender.
``TF_GUI_STAGE=reopen``: Blender opened on the saved file finishes the batch by itself (load_post);
wait until every job of the file is done, then save.
"""

import json
import os
import subprocess

import bpy
import gui_driver as d

STAGE = os.environ["TF_GUI_STAGE"]
SAVE_AT = 2


def build_edit(shots):
    scene = bpy.data.scenes.new("Batch edit")
    scene.render.fps, scene.render.fps_base = 25, 1.0
    d.window().scene = scene
    editor = scene.sequence_editor_create()
    strips = getattr(editor, "strips", None) or editor.sequences  # 4.4 renamed sequences to strips
    for shot in shots:
        movie = strips.new_movie(name=shot["name"], filepath=shot["movie"], channel=2, frame_start=shot["start"])
        strips.new_sound(name=shot["line_name"], filepath=shot["line"], channel=1, frame_start=shot["start"] + 1)
        movie.select = True
    for strip in strips:
        strip.select = strip.type == "MOVIE"
    scene.frame_start, scene.frame_end = 1, shots[-1]["start"] + 80
    scene.talking_face.regenerate = True
    return scene


def done_jobs():
    return [record.job_id for record in d.jobs() if record.phase.value == "done"]


def start():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    with open(os.environ["TF_GUI_EDIT"]) as listing:
        build_edit(json.load(listing))
    bpy.ops.wm.save_mainfile()
    yield 0.5
    d.invoke("sequencer.talking_face_batch", audio="OVERLAP", audio_channel=1)
    yield 1.5
    d.screenshot("batch-edit-confirm")
    subprocess.run(["xdotool", "key", "Return"], check=False)  # OK in the dialog
    yield d.until(lambda: len(d.jobs()) == 12, 60, "the batch's twelve jobs")
    d.facts["job_ids"] = [record.job_id for record in d.jobs()]
    yield d.until(lambda: len(done_jobs()) >= SAVE_AT, 240, f"{SAVE_AT} results placed")
    bpy.ops.wm.save_mainfile()
    d.facts["saved_placed"] = done_jobs()
    d.screenshot("batch-edit-running")
    d.signal("saved")
    yield d.until(lambda: d.received("never"), 600, "SIGKILL from the test")


def reopen():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    yield 1.0
    mine = [record.job_id for record in d.controller().jobs_for_file()]
    d.facts["job_ids"] = mine
    yield d.until(lambda: all(d.phase_of(job_id) == "done" for job_id in mine), 300,
                  "every shot of the batch to be done")
    yield 0.5
    d.screenshot("batch-edit-reopened-done")
    for job_id in mine:
        d.record_job(job_id)
    bpy.ops.wm.save_mainfile()


def scenario():
    yield from start() if STAGE == "start" else reopen()
