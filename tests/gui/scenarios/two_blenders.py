"""Scenario d: two Blenders on one saved file while a job runs.

``TF_GUI_ROLE=owner`` presses Generate and keeps the job running (until the test kills this
Blender); ``TF_GUI_ROLE=watcher`` opens the same file meanwhile: it must show the job as running
in the other Blender, never run it too, and take it over once that Blender is gone.
"""

import os

import gui_driver as d


def owner():
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
    yield from d.finish(job_id, "the job to be taken over and done")


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    yield from (owner() if os.environ["TF_GUI_ROLE"] == "owner" else watcher())

