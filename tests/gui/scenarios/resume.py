"""Scenario b, second half: Blender opened again on the saved file; load_post resumes the job."""

import importlib.util
import os

import bpy

spec = importlib.util.spec_from_file_location("gui_driver", os.environ["TF_GUI_DRIVER"])
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    job_id = os.environ["TF_GUI_JOB"]
    yield d.until(lambda: d.phase_of(job_id) == "done", 120, "the resumed job to be done")
    d.record_job(job_id)
    bpy.ops.wm.save_mainfile()


d.run(scenario())
