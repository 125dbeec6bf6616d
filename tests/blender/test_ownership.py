"""Two Blender processes on one job: exactly one owns it, the other shows it and takes over when it dies.

Issue 9, scenario d, with the machinery of ``test_recovery.py``: real Blender sessions in
child processes (``recovery_child.py``), one Blender user folder (so one job store) and a
sandbox served from this process, whose request log spans every session.  A first session
presses Generate and is SIGKILLed while the sandbox holds the task queued; then two sessions
open the same saved .blend (or two unsaved sessions run) and both call
``talking_face_resume()``.  The sandbox is imported from the source tree.
"""

from __future__ import annotations

import json
import pathlib

import test_recovery
from test_recovery import CHILD_SECONDS, Child, Project, killed_in, requests_of, wait_for

from newport_api.sandbox import Sandbox

# The fixtures of the crash-and-restart tests, shared: the noise movie and the project's sessions.
media = test_recovery.media
project = test_recovery.project


def contend(session: Project, job_id: str, *, saved: bool = True, go: pathlib.Path | None = None,
            try_cancel: bool = False, linger: pathlib.Path | None = None) -> Child:
    args = ["contend", "--job", job_id, "--timeout", str(CHILD_SECONDS)]
    args += ["--blend", str(session.blend)] if saved else []
    args += ["--try-cancel"] if try_cancel else []
    args += ["--linger", str(linger)] if linger else []
    return session._spawn("contend", [*args, *(["--go", str(go)] if go else [])])


def owner_pid(session: Project, job_id: str) -> int | None:
    path = session.store / f"{job_id}.owner"
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def two_sessions_on_a_queued_job(session: Project, sandbox: Sandbox, *, linger: pathlib.Path | None = None,
                                 ) -> tuple[str, str, Child, Child]:
    """The job queued with nobody running it; two sessions resume it at once: (job, task, owner, other).

    With ``linger`` both stay open once the job has finished, until that file exists.
    """
    child, job_id = killed_in(session, "queued")
    wait_for(lambda: sandbox.count("poll") >= 1, CHILD_SECONDS, "a poll answered 'queued'")
    child.kill()
    task_id = session.record(job_id)["task_id"]
    assert task_id and session.record(job_id)["phase"] == "queued"
    go = session.root / "go"
    first, second = (contend(session, job_id, go=go, linger=linger) for _ in range(2))
    for child in (first, second):
        child.expect("ready")
    go.touch()  # both resume at once: only the claim keeps the second one out
    by_pid = {first.process.pid: first, second.process.pid: second}
    wait_for(lambda: owner_pid(session, job_id) in by_pid, CHILD_SECONDS, "one of the two sessions to own the job")
    owner = by_pid[owner_pid(session, job_id)]
    other = second if owner is first else first
    return job_id, task_id, owner, other


def assert_shown_as_running_elsewhere(other: Child, owner: Child, *, tried_cancel: bool = False) -> None:
    said = other.expect("resumed")
    assert said["phase"] == "queued", other.output()
    assert said["elsewhere"].startswith("Running in another Blender"), said
    assert said["strips"] == [] and said["workers"] == [], "the other session runs nothing"
    if tried_cancel:
        assert other.expect("cancel") == {"cancelled": False, "stored": "queued"}, "only the owner may cancel it"
    # Right after a refused claim the owner file may not name the new owner yet; soon it does.
    other.expect("elsewhere", lambda text: f"Running in another Blender (pid {owner.process.pid})" in text)


def test_one_of_two_sessions_owns_the_job_and_the_other_takes_over_when_it_is_killed(project, media):
    with Sandbox(processing_seconds=0.2) as sandbox:
        sandbox.inject("poll", "status0", None)  # queued until cleared: the owner keeps polling
        session = project(sandbox)
        job_id, task_id, owner, other = two_sessions_on_a_queued_job(session, sandbox)
        assert_shown_as_running_elsewhere(other, owner)
        polls = sandbox.count("poll")
        wait_for(lambda: sandbox.count("poll") > polls, CHILD_SECONDS, "the owner polling")
        assert sandbox.count("submit") == 1
        owner.kill()
        sandbox.clear_faults()
        took_over = other.expect("took_over")
        assert took_over["elsewhere"] == ""
        settled = other.expect("settled")
        assert other.finish() == 0, other.output()
        assert "Traceback" not in other.stderr(), other.output()
        assert settled["phase"] == "done" and settled["task_id"] == task_id, other.output()
        [strip] = [strip for strip in settled["strips"] if strip["movie"]]
        output = pathlib.Path(settled["output_path"])
        assert pathlib.Path(strip["filepath"]) == output
        assert output.read_bytes() == media["movie"].read_bytes()
        assert sandbox.count("submit") == 1, "taken over without a second submit"
        assert sandbox.count("download") == 1, "the result was written by one process"
        assert all(entry.body == {"taskId": task_id} for entry in requests_of(sandbox, "poll"))
        assert session.record(job_id)["phase"] == "done"
        assert not (session.store / f"{job_id}.owner").exists(), "released once placed"


def test_the_owner_imports_the_result_and_the_other_session_never_does(project, media):
    with Sandbox(processing_seconds=0.2) as sandbox:
        sandbox.inject("poll", "status0", None)
        session = project(sandbox)
        quit_both = session.root / "quit"
        job_id, task_id, owner, other = two_sessions_on_a_queued_job(session, sandbox, linger=quit_both)
        assert_shown_as_running_elsewhere(other, owner)
        sandbox.clear_faults()
        finished = owner.expect("resumed")  # the owner's resume returns once the job is placed
        assert finished["phase"] == "done", owner.output()
        assert len([strip for strip in finished["strips"] if strip["movie"]]) == 1
        # The owner's placement is not saved yet: the other copy of the file lacks it, yet must not
        # take it for a lost one (only a session that ended unsaved loses its placements).
        settled = other.expect("settled")
        quit_both.touch()
        for child in (owner, other):
            assert child.finish() == 0, child.output()
            assert "Traceback" not in child.stderr(), child.output()
        assert settled["phase"] == "done" and finished["task_id"] == task_id
        assert settled["strips"] == [], "imported by the owner only, also after resuming again"
        assert sorted(session.record(job_id)["owner"]["imported_strips"]) == sorted(
            strip["name"] for strip in finished["strips"])
        assert sandbox.count("submit") == 1
        assert sandbox.count("download") == 1


def test_two_unsaved_sessions_leave_a_running_job_to_its_owner(project, media):
    """An unsaved session sees every unsaved job as its file's; one another session runs is shown, not run."""
    with Sandbox(processing_seconds=0.2) as sandbox:
        sandbox.inject("poll", "status0", None)
        session = project(sandbox)
        starter = session.start(saved=False)
        job_id = starter.expect("job")
        starter.expect("phase", lambda phase: phase == "queued")
        other = contend(session, job_id, saved=False, try_cancel=True)
        assert_shown_as_running_elsewhere(other, starter, tried_cancel=True)
        sandbox.clear_faults()
        done = starter.expect("record")
        assert done["phase"] == "done", starter.output()
        settled = other.expect("settled")
        for child in (starter, other):
            assert child.finish() == 0, child.output()
            assert "Traceback" not in child.stderr(), child.output()
        assert settled["phase"] == "done" and settled["strips"] == [], other.output()
        assert pathlib.Path(done["output_path"]).read_bytes() == media["movie"].read_bytes()
        assert sandbox.count("submit") == 1
        assert sandbox.count("download") == 1


def test_a_result_waiting_for_its_owners_import_is_imported_once_by_the_next_owner(project, media):
    """Downloaded but not placed by a session that is still alive: the other session, ticking as the
    monitor does, leaves it alone; once that session is killed it imports it, without fetching it again."""
    with Sandbox(processing_seconds=0.2) as sandbox:
        session = project(sandbox)
        starter = session.start(hold_import=True)  # owns the job, never ticks: never places it
        job_id = starter.expect("job")
        starter.expect("phase", lambda phase: phase == "downloaded")
        other = contend(session, job_id)
        said = other.expect("resumed")
        assert said["phase"] == "downloaded" and said["strips"] == [], other.output()
        other.expect("elsewhere", lambda text: f"(pid {starter.process.pid})" in text)
        watching = other.expect("ticked")
        assert watching["phase"] == "downloaded" and watching["strips"] == [], "not placed by a non-owner"
        starter.kill()
        settled = other.expect("settled")  # placed by the tick, the first to claim it once the owner is gone
        assert other.finish() == 0, other.output()
        assert "Traceback" not in other.stderr(), other.output()
        assert settled["phase"] == "done", other.output()
        [strip] = [strip for strip in settled["strips"] if strip["movie"]]
        assert pathlib.Path(strip["filepath"]).read_bytes() == media["movie"].read_bytes()
        assert sandbox.count("download") == 1, "a complete result is not fetched again"
        assert sandbox.count("submit") == 1
