"""Scenario d: two Blenders on one saved file while a job runs.

``TF_GUI_ROLE=owner`` presses Generate and keeps the job running (until the test kills this
Blender); ``TF_GUI_ROLE=watcher`` opens the same file meanwhile: it must show the job as running
in the other Blender, never run it too, and take it over once that Blender is gone.

With ``TF_GUI_UNSAVED=1`` both are new, never-saved sessions (Blender started without a file):
the owner builds its edit in the start-up scene; the watcher must list the job as running
elsewhere and refuse to cancel it, since only its owner may write its record.
"""

import os

import bpy
import gui_driver as d

UNSAVED = os.environ.get("TF_GUI_UNSAVED") == "1"


def build_unsaved_edit():
    """The project's strips, in the start-up scene of a Blender that has no file."""
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strips = getattr(editor, "strips", None) or editor.sequences
    folder = os.environ["TF_GUI_PROJECT"]
    editor.active_strip = strips.new_movie(name="Take", filepath=f"{folder}/take.mp4", channel=2, frame_start=1)
    strips.new_sound(name="Line", filepath=f"{folder}/line.mp3", channel=1, frame_start=1)


def owner():
    if UNSAVED:
        build_unsaved_edit()
    job_id = yield from d.generate(show_tab=False)
    os.makedirs(os.environ["TF_GUI_SIGNALS"], exist_ok=True)
    with open(os.path.join(os.environ["TF_GUI_SIGNALS"], "job_id"), "w") as out:
        out.write(job_id)
    yield d.until(lambda: d.phase_of(job_id) == "processing", 120, "the job to be processing")
    d.signal("owner-processing")
    yield d.until(lambda: d.received("never"), 600, "the test to kill this Blender")


def watcher():
    with open(os.path.join(os.environ["TF_GUI_SIGNALS"], "job_id")) as given:
        job_id = given.read().strip()
    d.facts["job_id"] = job_id
    yield from d.show_talking_face_tab()
    yield d.until(lambda: job_id in d.controller().views, 10, "the job to be listed")
    yield d.until(lambda: d.controller().owned_elsewhere(d.controller().views[job_id]), 10,
                  "the job to show as running elsewhere")
    d.facts["elsewhere"] = d.controller().owned_elsewhere(d.controller().views[job_id])
    d.facts["running_here_while_owned"] = d.controller().is_running(job_id)
    yield 0.5
    d.screenshot("panel-elsewhere")
    d.signal("watcher-sees")
    if UNSAVED:
        result, _elapsed = d.invoke("sequencer.talking_face_cancel", job_id=job_id)
        d.facts["cancel"] = sorted(result)
        d.facts["phase_after_cancel"] = d.phase_of(job_id)
        return
    yield from d.finish(job_id, "the job to be taken over and done")


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    yield from (owner() if os.environ["TF_GUI_ROLE"] == "owner" else watcher())

