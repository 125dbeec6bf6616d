"""Dub a whole edit with a window: the confirmation dialog, then one submit and one placed result per shot."""

from __future__ import annotations


def test_dub_shots_asks_first_then_places_each_shot_once(gui, sandbox):
    run = gui.run("batch.py", blend=gui.project, timeout=360).check()
    job_ids = run.facts["job_ids"]
    assert len(job_ids) == 3
    assert sandbox.count("submit") == 3
    saved = gui.inspect()
    shots = {strip["name"]: strip for strip in saved["strips"] if strip["type"] == "MOVIE" and not strip["job"]}
    for job_id in job_ids:
        job = run.facts["jobs"][job_id]
        assert job["phase"] == "done"
        source = shots[job["owner"]["source_strip"]]
        placed = [strip for strip in saved["strips"] if strip["job"] == job_id and strip["type"] == "MOVIE"]
        assert len(placed) == 1 and placed[0]["start"] == source["start"]
        assert placed[0]["channel"] > source["channel"]
