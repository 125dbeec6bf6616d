"""Scenario b, second half: Blender opened again on the saved file; load_post resumes the job."""

import os

import gui_driver as d


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    job_id = os.environ["TF_GUI_JOB"]
    yield from d.finish(job_id, "the resumed job to be done")

