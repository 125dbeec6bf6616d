"""Scenarios b, c and e: quit, disable/enable, F8, cancel and Online Access while a job runs.

Each is checked from the outside: the sandbox's log (how many submits, what was sent when),
the saved .blend read back by another Blender, and the job's record on disk.
"""

from __future__ import annotations

import time

import pytest


def placed(gui, job_id: str) -> list[dict]:
    return [strip for strip in gui.inspect()["strips"] if strip["job"] == job_id and strip["type"] == "MOVIE"]


@pytest.mark.parametrize("phase", ["queued", "processing"])
def test_quit_mid_job_then_open_the_file_again_finishes_it_once(gui, sandbox, phase):
    if phase == "queued":
        sandbox.inject("poll", "status0", times=None)  # held in the queue until the test lets go
    first = gui.run("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": "quit", "TF_GUI_PHASE": phase}).check()
    job_id = first.facts["job_id"]
    assert [record["phase"] for record in gui.job_records()] == [phase], "the record keeps its phase"
    sandbox.clear_faults()
    second = gui.run("resume.py", blend=gui.project, env={"TF_GUI_JOB": job_id}).check()
    assert second.facts["jobs"][job_id]["phase"] == "done"
    assert sandbox.count("submit") == 1, "a resumed job is polled again, never submitted again"
    assert len(placed(gui, job_id)) == 1


@pytest.mark.parametrize("how", ["disable", "reload"])
def test_disable_enable_or_f8_mid_job_still_lands_the_result(gui, sandbox, how):
    run = gui.run("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": how}).check()
    job_id = run.facts["job_id"]
    assert run.facts["jobs"][job_id]["phase"] == "done"
    assert sandbox.count("submit") == 1
    assert len(placed(gui, job_id)) == 1


@pytest.mark.parametrize("phase", ["uploading", "processing"])
def test_cancel_from_the_panel(gui, sandbox, phase):
    if phase == "uploading":
        sandbox.inject("storage", "slow", None, bytes_per_second=20_000)
    run = gui.run("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": "cancel", "TF_GUI_PHASE": phase}).check()
    job = run.facts["jobs"][run.facts["job_id"]]
    assert job["phase"] == "cancelled"
    assert sandbox.count("submit") == (0 if phase == "uploading" else 1)
    assert sandbox.count("download") == 0
    assert not placed(gui, run.facts["job_id"])


def test_online_access_off_pauses_the_job_and_on_continues_it(gui, sandbox):
    session = gui.start("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": "offline"})
    gui.wait_signal("paused", session)
    seen = len(sandbox.requests)
    time.sleep(4.0)  # while paused, nothing may be sent: polls would have come every 2 s
    assert len(sandbox.requests) == seen, [request.phase for request in sandbox.requests[seen:]]
    gui.signal("go-online")
    run = gui.finish(session).check()
    assert run.facts["jobs"][run.facts["job_id"]]["phase"] == "done"
    assert sandbox.count("submit") == 1
    assert len(placed(gui, run.facts["job_id"])) == 1


def test_a_job_nothing_resumed_shows_as_paused_and_resume_in_its_row_finishes_it(gui, sandbox):
    run = gui.run("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": "stalled"}).check()
    assert run.facts["phase_while_paused"] == "processing"
    assert "press Resume" in run.facts["paused_reason"]
    assert run.facts["jobs"][run.facts["job_id"]]["phase"] == "done"
    assert sandbox.count("submit") == 1
    assert len(placed(gui, run.facts["job_id"])) == 1


def test_an_exception_in_a_tick_is_reported_and_ticking_goes_on(gui, sandbox):
    run = gui.run("mid_job.py", blend=gui.project, env={"TF_GUI_MODE": "tick_error"}).check()
    assert "a tick failure made by the test" in run.facts["monitor_error"]
    assert "report this" in run.facts["monitor_error"]
    assert run.facts["jobs"][run.facts["job_id"]]["phase"] == "done"
    assert len(placed(gui, run.facts["job_id"])) == 1
