"""Scenario g: a job the service fails shows its sentence in the panel; Retry from the panel finishes it."""


import gui_driver as d


def scenario():
    job_id = yield from d.generate()
    yield d.until(lambda: d.phase_of(job_id) == "failed", 120, "the job to fail")
    yield 0.5
    d.screenshot("panel-failed")
    d.facts["failed"] = d.record_job(job_id)
    d.invoke("sequencer.talking_face_retry", job_id=job_id)
    yield from d.finish(job_id, "the retried job to be done")

