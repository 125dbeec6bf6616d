"""Operators of the Talking Face workflow: ``bpy.ops.sequencer.talking_face_*``.

With a window, Generate hands the job to a worker thread and makes sure the
monitor (an app timer on the main thread) is ticking; the artist keeps editing.  In background mode
(``blender -b``, the ``bpy`` module) nothing would ever tick, so the same
operators run the job to completion before they return.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..newport_api import JobRecord, Phase
from . import addon, compat, job_setup, timeline
from .addon import Credentials
from .controller import TICK_SECONDS, get_controller
from .media import MediaError
from .preparation import PreparationPlan
from .shots import Shot

RUN_MODES = (
    ("AUTO", "Auto", "Run in the background with a window, to completion without one"),
    ("ASYNC", "Async", "Always run in worker threads (for scripts that drive the controller's tick)"),
    ("SYNC", "Sync", "Always run to completion before returning"),
)


def runs_synchronously(mode: str) -> bool:
    return mode == "SYNC" or (mode == "AUTO" and bpy.app.background)


def start_planned(record: JobRecord, plan: PreparationPlan | None, credentials: Credentials, *,
                  sync: bool) -> JobRecord:
    """Hand a planned job to the controller: its preparation off the main thread (``plan``), or the job.

    Without ``sync`` it joins the controller's queue; with it, it runs to the end first.
    """
    controller = get_controller()
    if plan is not None:  # cut and hashed off the main thread; the tick launches the job after
        controller.prepare(record, credentials)
        return record
    return controller.launch(record, credentials, sync=sync)


def start_shot(context: bpy.types.Context, shot: Shot, credentials: Credentials, *, sync: bool,
               batch: str = "") -> JobRecord:
    """Plan a shot's job and hand it over: the one start path of Generate (a batch of one), the batch and Redo.

    ``batch`` groups the job with the others of its batch. Raises ``MediaError`` with a sentence.
    """
    record, plan = job_setup.plan_job(context, shot, defer=not sync,
                                      cut_program="" if sync else job_setup.background_cut_program())
    if batch:
        record.owner["batch"] = batch
    return start_planned(record, plan, credentials, sync=sync)


class TalkingFaceOperator:
    """Shared poll plumbing: ``disabled_reason`` says why the button is grey."""

    bl_options = {"REGISTER"}  # noqa: RUF012 — Blender reads a plain set here

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        return None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = cls.disabled_reason(context)
        if reason:
            cls.poll_message_set(reason)
        return reason is None


class SEQUENCER_OT_talking_face_generate(TalkingFaceOperator, bpy.types.Operator):
    """Lip-sync the movie strip to the chosen audio with Newport AI"""

    bl_idname = "sequencer.talking_face_generate"
    bl_label = "Generate Talking Face"

    mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"HIDDEN", "SKIP_SAVE"})
    new_take: BoolProperty(name="New Take", default=False, options={"SKIP_SAVE"},
                           description="Pay for a new take even when an identical job already succeeded "
                                       "on this computer")

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        return job_setup.blocking_reason(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        sync = runs_synchronously(self.mode)
        try:
            record = start_shot(context, timeline.panel_shot(context, new_take=self.new_take), addon.credentials(),
                                sync=sync)
        except MediaError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return report_started(self, record, sync)


def report_started(operator: bpy.types.Operator, record: JobRecord, sync: bool) -> set[str]:
    """Tell the artist what became of a job just handed over (failed, reused, placed or started)."""
    if record.phase == Phase.FAILED:
        operator.report({"ERROR"}, record.error or record.message)
        return {"CANCELLED"}
    if record.owner.get("reused_from"):
        operator.report({"INFO"}, "Talking Face: reused the result of an identical earlier job "
                                  "(no credits spent; press New Take to pay for a new one).")
    elif sync:
        operator.report({"INFO"}, f"Talking Face: '{record.label}' is on the timeline.")
    else:
        operator.report({"INFO"}, f"Talking Face: started '{record.label}'.")
        ensure_monitor()
    return {"FINISHED"}


class _Monitor:
    """The session's one monitor: a ``bpy.app.timers`` function on the main thread.

    Not a modal operator: Blender refuses F8 (Reload Scripts) while a Python modal operator
    runs ("Can't reload with running modal operators"), so a job in flight would block it.
    A persistent app timer ticks from the same event loop, survives opening another file, and
    ``unregister`` removes it (disable, F8).
    """

    last_error = ""


def _monitor_tick() -> float | None:
    """One controller tick; returning None ends the timer once nothing is left to do."""
    try:
        active = get_controller().tick()
    except Exception as error:  # noqa: BLE001 — a bug in one tick must not stop every job's progress
        message = (f"Talking Face could not update its jobs ({type(error).__name__}: {error}); "
                   "they keep running — report this if it repeats.")
        if message != _Monitor.last_error:
            _Monitor.last_error = message
            print(message, flush=True)
        return TICK_SECONDS
    return TICK_SECONDS if active else None


def monitor_is_alive() -> bool:
    return bpy.app.timers.is_registered(_monitor_tick)


def stop_monitor() -> None:
    if monitor_is_alive():
        bpy.app.timers.unregister(_monitor_tick)


def ensure_monitor() -> None:
    """Start ticking if it is not already (never in background mode, where nothing would tick it)."""
    if bpy.app.background or monitor_is_alive():
        return
    bpy.app.timers.register(_monitor_tick, first_interval=TICK_SECONDS, persistent=True)


def monitor_error() -> str:
    """The last tick failure, for the panel ('' when none)."""
    return _Monitor.last_error


class JobOperator(TalkingFaceOperator):
    """Operators on one job of the list, named by ``job_id``."""

    job_id: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def record(self) -> JobRecord | None:
        return get_controller().views.get(self.job_id)


class NetworkOperator(TalkingFaceOperator):
    """Operators that talk to the service: grey while it may not be reached, sync or async by ``mode``."""

    mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        return addon.network_blocking_reason()


class SEQUENCER_OT_talking_face_cancel(JobOperator, bpy.types.Operator):
    """Cancel this Talking Face job (or every running one when no job is given)"""

    bl_idname = "sequencer.talking_face_cancel"
    bl_label = "Cancel Talking Face Job"

    def execute(self, context: bpy.types.Context) -> set[str]:
        controller = get_controller()
        job_ids = [self.job_id] if self.job_id else [job.job_id for job in controller.views.values()
                                                      if not job.phase.finished]
        cancelled = [job_id for job_id in job_ids if controller.cancel(job_id)]
        if not cancelled:
            elsewhere = [controller.owned_elsewhere(controller.views[job_id]) for job_id in job_ids
                         if job_id in controller.views]
            reason = next((sentence for sentence in elsewhere if sentence), "")
            self.report({"WARNING"}, f"{reason} Cancel it there." if reason
                        else "There is no running Talking Face job to cancel.")
            return {"CANCELLED"}
        ensure_monitor()
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_retry(JobOperator, NetworkOperator, bpy.types.Operator):
    """Run a failed or cancelled job again, reusing whatever is still valid"""

    bl_idname = "sequencer.talking_face_retry"
    bl_label = "Retry Talking Face Job"

    def execute(self, context: bpy.types.Context) -> set[str]:
        controller = get_controller()
        record = controller.retry(self.job_id, addon.credentials(), sync=runs_synchronously(self.mode))
        if record is None:
            self.report({"WARNING"}, "Only a failed or cancelled job can be retried.")
            return {"CANCELLED"}
        if record.phase == Phase.FAILED:
            self.report({"ERROR"}, record.error)
            return {"CANCELLED"}
        ensure_monitor()
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_resume(NetworkOperator, bpy.types.Operator):
    """Continue this paused Talking Face job (or every unfinished one of this file) from where it stopped"""

    bl_idname = "sequencer.talking_face_resume"
    bl_label = "Resume Talking Face Jobs"

    job_id: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        resumed = get_controller().resume(addon.credentials(), sync=runs_synchronously(self.mode),
                                          job_id=self.job_id)
        failed = [record for record in resumed if record.phase == Phase.FAILED]
        if failed:
            self.report({"ERROR"}, failed[0].error)
        self.report({"INFO"}, f"Talking Face: resumed {len(resumed)} job(s).")
        ensure_monitor()
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_check_key(NetworkOperator, bpy.types.Operator):
    """Ask Newport AI whether the API key works, and how many credits are left"""

    bl_idname = "sequencer.talking_face_check_key"
    bl_label = "Check Key"

    def execute(self, context: bpy.types.Context) -> set[str]:
        controller = get_controller()
        sync = runs_synchronously(self.mode)
        controller.check_key(addon.credentials(), sync=sync)
        if sync:
            self.report({"INFO"}, controller.key_status)
        else:
            ensure_monitor()
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_show(JobOperator, bpy.types.Operator):
    """Select the job's result strips and make the first one active"""

    bl_idname = "sequencer.talking_face_show"
    bl_label = "Show in Sequencer"

    def execute(self, context: bpy.types.Context) -> set[str]:
        record = self.record()
        names = record.owner.get("imported_strips", []) if record else []
        scene = bpy.data.scenes.get(record.owner.get("scene", "")) if record else None
        strips = [compat.all_strips(scene).get(name) for name in names] if scene else []
        strips = [strip for strip in strips if strip is not None]
        if not strips:
            self.report({"WARNING"}, "The result strips are no longer in the sequencer.")
            return {"CANCELLED"}
        for strip in compat.all_strips(scene):
            strip.select = False
        for strip in strips:
            strip.select = True
        scene.sequence_editor.active_strip = strips[0]
        scene.frame_current = strips[0].frame_final_start
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_open_folder(JobOperator, bpy.types.Operator):
    """Open the folder that holds the job's result"""

    bl_idname = "sequencer.talking_face_open_folder"
    bl_label = "Open Folder"

    def execute(self, context: bpy.types.Context) -> set[str]:
        record = self.record()
        folder = os.path.dirname(record.output_path) if record else str(job_setup.output_folder())
        if not os.path.isdir(folder):
            self.report({"WARNING"}, f"The folder '{folder}' does not exist yet.")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_dismiss(JobOperator, bpy.types.Operator):
    """Remove a finished job from the list (its result file and strips stay)"""

    bl_idname = "sequencer.talking_face_dismiss"
    bl_label = "Dismiss"

    def execute(self, context: bpy.types.Context) -> set[str]:
        get_controller().dismiss(self.job_id)
        return {"FINISHED"}


CLASSES = (
    SEQUENCER_OT_talking_face_generate,
    SEQUENCER_OT_talking_face_cancel,
    SEQUENCER_OT_talking_face_retry,
    SEQUENCER_OT_talking_face_resume,
    SEQUENCER_OT_talking_face_check_key,
    SEQUENCER_OT_talking_face_show,
    SEQUENCER_OT_talking_face_open_folder,
    SEQUENCER_OT_talking_face_dismiss,
)
