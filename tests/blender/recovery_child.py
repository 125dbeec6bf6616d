"""One Blender session of a crash-and-restart test: run by ``test_recovery.py`` in a child process.

The parent sets ``BLENDER_USER_RESOURCES`` (the session's Blender user folder, kept
across the children of one test) and ``NEWPORT_API_KEY``, runs a sandbox and reads
this process's stdout.  Every line meant for the parent starts with ``TF `` and is
flushed at once, so the parent can act (SIGKILL, fault changes) the moment it reads it:

* ``start``: install or enable the extension, make a project (a movie strip and an
  audio file), save it (unless ``--unsaved``), press Generate in ASYNC mode and tick
  the controller the way the modal timer does, printing ``TF phase <phase>``, the
  roles uploaded so far and the size of the partial download.  With ``--hold-import``
  it never ticks and reads the job store instead, so a finished download waits for
  an import that never comes: the moment between "downloaded" and "placed".
  With ``--then disable|quit`` it disables the extension, or just returns (the
  interpreter exits normally), once the job reaches ``--at``.
* ``resume``: open the saved .blend (or nothing, for an unsaved file's jobs), list
  the jobs, run ``bpy.ops.sequencer.talking_face_resume()`` (background mode: to the
  end), save, open the file again and count the imported strips; resume once more
  to show that nothing is imported twice.
* ``contend``: one of two sessions on the same file (or two unsaved ones) while a job
  runs: open it, wait for the ``--go`` file, run ``talking_face_resume()`` and report
  whether this session runs the job or another Blender does (``TF resumed``); with
  ``--try-cancel`` press Cancel on it (``TF cancel``).  Then watch it as the monitor does
  (ticking the controller), printing what the panel would say when it changes
  (``TF elsewhere``) and the state after a few ticks (``TF ticked``): take it over when
  its owner is gone (``TF took_over``, then tick to the end), or see it finish elsewhere;
  resume once more and report the strips (``TF settled``).
* ``batch``: issue 11's twelve-shot edit (``batch_edit.py``; the media from ``--shots``, a
  JSON list) saved, then ``talking_face_batch(mode="ASYNC")`` ticked as the monitor does,
  printing ``TF placed <n>`` as results land. Once ``--save-at`` are placed it removes the
  first one's strips (as an artist would) and saves (``TF saved``); it then ticks until the
  parent kills it, or, with ``--until-done``, until every shot is placed (``TF all_placed``). ``resume`` finishes the batch in the next session.

Nothing here imports the repo's own packages: the extension is the installed zip.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import threading
import time
from pathlib import Path

import bpy

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
faulthandler.enable()  # a crash in a session shows where it happened in the output the parent prints
TICK_SECONDS = 0.02
WATCH_TICKS_REPORTED = 10  # contend: the state after this many ticks of watching is printed


def say(kind: str, value: object = "") -> None:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    print(f"TF {kind} {text}".rstrip(), flush=True)


def extension():
    """The installed extension package, enabled: installed from the zip on first use."""
    import importlib

    if EXTENSION_MODULE not in bpy.context.preferences.addons:
        installed = Path(bpy.utils.user_resource("EXTENSIONS", path="user_default")) / "talking_face"
        if installed.is_dir():
            bpy.ops.preferences.addon_enable(module=EXTENSION_MODULE)
        else:
            zip_path = os.environ["TALKING_FACE_ZIP"]
            result = bpy.ops.extensions.package_install_files(
                filepath=zip_path, repo="user_default", enable_on_install=True)
            assert result == {"FINISHED"}, result
    assert EXTENSION_MODULE in bpy.context.preferences.addons, "the extension is not enabled"
    return importlib.import_module(EXTENSION_MODULE)


def configure(base_url: str) -> None:
    bpy.context.preferences.system.use_online_access = True
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    prefs.base_url = base_url
    prefs.output_dir = "//talking_face/"  # next to the .blend; an unsaved file uses the user folder


def make_project(ext, movie: str, audio: str) -> bpy.types.Scene:
    compat = ext.operators.compat
    scene = bpy.data.scenes.new("Recovery")
    compat.set_scene_fps(scene, 25)
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    strip = compat.new_movie(scene, "Take 3", movie, channel=2, frame_start=1)
    scene.sequence_editor.active_strip = strip
    settings = scene.talking_face
    settings.audio_source = "FILE"
    settings.audio_file = audio
    return scene


def controller(ext):
    return ext.operators.controller.get_controller()


def result_strips(ext, job_id: str) -> list[dict]:
    compat = ext.operators.compat
    found = []
    for scene in bpy.data.scenes:
        if scene.sequence_editor is None:
            continue
        for strip in compat.all_strips(scene):
            if strip.get("talking_face_job") == job_id:
                found.append({"scene": scene.name, "name": strip.name, "movie": compat.is_movie(strip),
                              "filepath": bpy.path.abspath(strip.filepath) if compat.is_movie(strip) else ""})
    return found


def describe(record) -> dict:
    return {"job_id": record.job_id, "phase": record.phase.value, "error": record.error,
            "error_kind": record.error_kind, "task_id": record.task_id, "output_path": record.output_path,
            "blend_file": record.owner.get("blend_file", ""), "uploads": sorted(record.uploads)}


# -- start ---------------------------------------------------------------------------------------------

def start(args: argparse.Namespace) -> int:
    ext = extension()
    configure(args.base_url)
    make_project(ext, args.movie, args.audio)
    if args.blend:
        bpy.ops.wm.save_as_mainfile(filepath=args.blend)
    active = controller(ext)
    say("store", str(active.store.directory))
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    job_id = max(active.views.values(), key=lambda record: record.created_at).job_id
    say("job", job_id)
    return watch(ext, active, job_id, args)


def watch(ext, active, job_id: str, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    seen_phase, seen_uploads, seen_part = "", None, -1
    while time.monotonic() < deadline:
        if args.hold_import:
            if active.views[job_id].phase.value == "pending":
                active.tick()  # the inputs are prepared (hashed) before a worker takes the job
            record = active.store.load(job_id)  # written by the worker; nothing here places it
        else:
            active.tick()
            record = active.views[job_id]
        uploads = sorted(record.uploads)
        if uploads != seen_uploads:
            seen_uploads = uploads
            say("uploads", uploads)
        part = record.part_path.stat().st_size if record.part_path.exists() else -1
        if part != seen_part:
            seen_part = part
            say("part", part)
        if record.phase.value != seen_phase:
            seen_phase = record.phase.value
            say("phase", seen_phase)
            if args.then and seen_phase == args.at:
                time.sleep(args.then_after)
                return stop_session(ext, job_id, args.then)
            if record.phase.finished:
                say("record", describe(record))
                if args.blend:
                    bpy.ops.wm.save_mainfile()
                return 0
        time.sleep(TICK_SECONDS)
    say("timeout", seen_phase)
    return 3


def stop_session(ext, job_id: str, how: str) -> int:
    """Leave with the job running: disable the extension, or let the interpreter exit."""
    if how == "disable":
        started = time.monotonic()
        bpy.ops.preferences.addon_disable(module=EXTENSION_MODULE)
        say("disabled", {"seconds": round(time.monotonic() - started, 3),
                         "enabled": EXTENSION_MODULE in bpy.context.preferences.addons,
                         "workers": worker_threads()})
        time.sleep(1.0)  # a worker that outlived the disable would show in the sandbox's log now
        say("workers", worker_threads())
    say("exit", how)
    return 0


def worker_threads() -> list[str]:
    return sorted(thread.name for thread in threading.enumerate()
                  if thread.name.startswith("talking-face-") and thread.is_alive())


# -- resume --------------------------------------------------------------------------------------------

def open_session(args: argparse.Namespace):
    """The enabled extension and its controller, with the saved .blend (if any) open."""
    ext = extension()
    configure(args.base_url)
    if args.blend:
        bpy.ops.wm.open_mainfile(filepath=args.blend)
    active = controller(ext)
    active.reload()
    return ext, active


def run_resume() -> str:
    """Press Resume (background mode: runs the jobs it owns to the end); the error it reports, if any."""
    try:
        bpy.ops.sequencer.talking_face_resume()
    except RuntimeError as error:  # the operator reports a failed job as an error
        return str(error)
    return ""


def resume(args: argparse.Namespace) -> int:
    ext, active = open_session(args)
    listed = [describe(record) for record in active.jobs_for_file(bpy.data.filepath)]
    say("listed", {"file": bpy.data.filepath, "jobs": listed})
    report = run_resume()
    records = {record["job_id"]: record for record in listed}
    outcome = {job_id: {**describe(active.views[job_id]), "strips": result_strips(ext, job_id)}
               for job_id in records}
    say("resumed", {"report": report, "jobs": outcome})
    if args.blend:
        bpy.ops.wm.save_mainfile()
        bpy.ops.wm.open_mainfile(filepath=args.blend)
        report = run_resume()  # nothing left to do: must import nothing again
        say("reopened", {"report": report, "jobs": {job_id: {**describe(active.views[job_id]),
                                                              "strips": result_strips(ext, job_id)}
                                                     for job_id in records}})
    return 0


# -- batch ---------------------------------------------------------------------------------------------

def batch(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).parent))  # batch_edit and the media helpers it uses
    import batch_edit

    ext = extension()
    configure(args.base_url)
    bpy.context.preferences.addons[EXTENSION_MODULE].preferences.max_parallel_jobs = 3
    scene = batch_edit.build_edit(ext.operators.compat, json.loads(Path(args.shots).read_text()))
    bpy.ops.wm.save_as_mainfile(filepath=args.blend)
    active = controller(ext)
    say("store", str(active.store.directory))
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1, mode="ASYNC") == {"FINISHED"}
    jobs = [record.job_id for record in active.jobs_for_file()]
    say("jobs", jobs)
    deadline = time.monotonic() + args.timeout
    placed: list[str] = []
    saved = False
    while time.monotonic() < deadline:
        active.tick()
        now_placed = [job_id for job_id in jobs if active.views[job_id].phase.value == "done"]
        if len(now_placed) != len(placed):
            placed = now_placed
            say("placed", len(placed))
        if args.until_done and len(placed) == len(jobs):
            say("all_placed", len(compat_strips_of_jobs(ext, scene, jobs)))
            return 0
        if not saved and len(placed) >= args.save_at:
            saved = True
            removed = placed[0]
            strips = ext.operators.compat.strips(scene)
            for strip in [strip for strip in strips if strip.get("talking_face_job") == removed]:
                strips.remove(strip)
            bpy.ops.wm.save_mainfile()
            say("saved", {"placed": placed, "removed": removed})
        time.sleep(TICK_SECONDS)
    say("timeout", len(placed))
    return 3


def compat_strips_of_jobs(ext, scene, jobs: list[str]) -> list[str]:
    """The movie strips on the timeline that are results of ``jobs``."""
    return [strip.name for strip in ext.operators.compat.strips(scene)
            if strip.get("talking_face_job") in jobs and ext.operators.compat.is_movie(strip)]


# -- contend -------------------------------------------------------------------------------------------

def contend(args: argparse.Namespace) -> int:
    ext, active = open_session(args)
    if args.go:  # both sessions resume at the same instant, so both may see the job unowned
        say("ready")
        while not os.path.exists(args.go):
            time.sleep(0.002)
    report = run_resume()
    say("resumed", {**ownership_state(ext, active, args.job), "report": report})
    if args.try_cancel:  # as the panel's Cancel on this job would
        say("cancel", {"cancelled": active.cancel(args.job), "stored": active.store.load(args.job).phase.value})
    deadline = time.monotonic() + args.timeout
    shown = None
    ticks = 0
    while time.monotonic() < deadline:
        active.tick()  # as the monitor does: it would place a downloaded result it owns
        ticks += 1
        if ticks == WATCH_TICKS_REPORTED:
            say("ticked", ownership_state(ext, active, args.job))
        elsewhere = active.owned_elsewhere(active.views[args.job]) or ""
        if elsewhere != shown:  # what the panel would say now
            shown = elsewhere
            say("elsewhere", elsewhere)
        if active.store.load(args.job).phase.finished:
            report = run_resume()  # nothing left to do: must import nothing here
            say("settled", {**ownership_state(ext, active, args.job), "report": report})
            while args.linger and not os.path.exists(args.linger) and time.monotonic() < deadline:
                time.sleep(0.05)  # the file stays open, unsaved, as an artist's Blender would
            return 0
        active.watching_other_blenders()  # what the monitor asks on each tick
        if active.take_over_abandoned(ext.operators.job_setup.credentials()):
            say("took_over", ownership_state(ext, active, args.job))
            while not active.views[args.job].phase.finished and time.monotonic() < deadline:
                active.tick()
                time.sleep(TICK_SECONDS)
        time.sleep(0.1)
    say("timeout", ownership_state(ext, active, args.job))
    return 3


def ownership_state(ext, active, job_id: str) -> dict:
    record = active.views[job_id]
    return {**describe(record), "pid": os.getpid(), "strips": result_strips(ext, job_id),
            "elsewhere": active.owned_elsewhere(record) or "", "workers": worker_threads()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("start", "resume", "contend", "batch"))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--blend", default="", help="the project file; empty: never saved")
    parser.add_argument("--movie", default="")
    parser.add_argument("--audio", default="")
    parser.add_argument("--hold-import", action="store_true")
    parser.add_argument("--then", choices=("disable", "quit"), default="")
    parser.add_argument("--at", default="", help="the phase at which --then happens")
    parser.add_argument("--then-after", type=float, default=0.0, help="seconds to wait in that phase first")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--job", default="", help="contend: the job id to watch")
    parser.add_argument("--go", default="", help="contend: resume once this file exists")
    parser.add_argument("--try-cancel", action="store_true", help="contend: cancel the job after resuming")
    parser.add_argument("--linger", default="", help="contend: once settled, stay open until this file exists")
    parser.add_argument("--shots", default="", help="batch: a JSON file of the shots' media")
    parser.add_argument("--save-at", type=int, default=2, help="batch: save once this many results are placed")
    parser.add_argument("--until-done", action="store_true", help="batch: exit 0 once every shot is placed")
    args = parser.parse_args(argv)
    assert os.environ.get("BLENDER_USER_RESOURCES"), "the parent must give each test its own user folder"
    return {"start": start, "resume": resume, "contend": contend, "batch": batch}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
