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
