"""Scenario g: a job the service fails shows its sentence in the panel; Retry from the panel finishes it."""

import importlib.util
import os

import bpy

spec = importlib.util.spec_from_file_location("gui_driver", os.environ["TF_GUI_DRIVER"])
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    d.choose_audio(bpy.context.scene)
    d.invoke("sequencer.talking_face_generate")
    job_id = d.jobs()[-1].job_id
    d.facts["job_id"] = job_id
    yield d.until(lambda: d.phase_of(job_id) == "failed", 120, "the job to fail")
    yield 0.5
    d.screenshot("panel-failed")
    d.facts["failed"] = d.record_job(job_id)
    d.invoke("sequencer.talking_face_retry", job_id=job_id)
    yield d.until(lambda: d.phase_of(job_id) == "done", 120, "the retried job to be done")
    d.record_job(job_id)
    bpy.ops.wm.save_mainfile()


d.run(scenario())
