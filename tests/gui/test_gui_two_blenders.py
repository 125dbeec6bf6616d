"""Scenario d: two Blender processes on one .blend while a job runs — one owner, one submit."""

from __future__ import annotations


def test_a_second_blender_shows_the_job_running_elsewhere_and_takes_it_over_when_the_first_dies(gui, sandbox):
    first = gui.start("two_blenders.py", blend=gui.project, env={"TF_GUI_ROLE": "owner"})
    gui.wait_signal("owner-processing", first)
    sandbox.inject("poll", "status0", times=None)  # the task stays in the queue while the two look at it
    second = gui.start("two_blenders.py", blend=gui.project, env={"TF_GUI_ROLE": "watcher"})
    gui.wait_signal("watcher-sees", second)
    submits_before_kill = sandbox.count("submit")
    gui.kill(first)  # the owner crashes: its OS lock goes with it
    sandbox.clear_faults()
    run = gui.finish(second).check()
    assert "Running in another Blender (pid" in run.facts["elsewhere"]
    assert not run.facts["running_here_while_owned"], "the second Blender ran a job the first one owned"
    assert run.facts["jobs"][run.facts["job_id"]]["phase"] == "done"
    assert submits_before_kill == sandbox.count("submit") == 1, "taken over by polling the same task"
    assert sandbox.count("download") == 1, "the result is downloaded (written) by one Blender"
    movies = [strip for strip in gui.inspect()["strips"] if strip["job"] == run.facts["job_id"]
              and strip["type"] == "MOVIE"]
    assert len(movies) == 1


def test_two_unsaved_sessions_one_owns_the_job_and_the_other_may_not_cancel_it(gui, sandbox):
    unsaved = {"TF_GUI_UNSAVED": "1", "TF_GUI_PROJECT": str(gui.project.parent)}
    first = gui.start("two_blenders.py", env={"TF_GUI_ROLE": "owner", **unsaved})
    gui.wait_signal("owner-processing", first)
    sandbox.inject("poll", "status0", times=None)
    run = gui.finish(gui.start("two_blenders.py", env={"TF_GUI_ROLE": "watcher", **unsaved})).check()
    assert "Running in another Blender (pid" in run.facts["elsewhere"]
    assert not run.facts["running_here_while_owned"]
    assert run.facts["cancel"] == ["CANCELLED"], "only the owner may cancel (and write) the job"
    assert run.facts["phase_after_cancel"] == "processing"
    assert [record["phase"] for record in gui.job_records()] == ["processing"]
    gui.kill(first)
    assert sandbox.count("submit") == 1
