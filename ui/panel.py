"""The Talking Face tab in the Sequencer's sidebar: the job to make, and the jobs made."""

from __future__ import annotations

import textwrap

import bpy

from ..newport_api import JobRecord, Phase
from ..newport_api.batches import summarize
from ..operators import addon, compat, job_setup, jobs_ops, takes, timeline
from ..operators.controller import elapsed_text, get_controller
from ..operators.shots import Estimate

MAX_LISTED_JOBS = 8
CHARACTER_PIXELS = 6.5  # an average character of Blender's interface font at scale 1
PHASE_ICONS = {
    Phase.DONE: "CHECKMARK",
    Phase.FAILED: "ERROR",
    Phase.CANCELLED: "CANCEL",
}


class SEQUENCER_PT_talking_face(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Talking Face"
    bl_label = "Talking Face"

    def draw(self, context: bpy.types.Context) -> None:
        draw_job_form(self.layout, context)


class SEQUENCER_PT_talking_face_jobs(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Talking Face"
    bl_label = "Jobs"
    bl_parent_id = "SEQUENCER_PT_talking_face"

    def draw(self, context: bpy.types.Context) -> None:
        draw_jobs(self.layout, context)


def draw_job_form(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    layout.use_property_split = True
    layout.use_property_decorate = False
    options = context.scene.talking_face
    _draw_sources(layout, context, options)
    _draw_options(layout, options)
    _draw_estimate(layout, context)
    _draw_generate(layout, context)


def _draw_sources(layout: bpy.types.UILayout, context: bpy.types.Context, options) -> None:
    editor = context.scene.sequence_editor
    column = layout.column()
    if editor is not None:
        column.prop_search(options, "video_strip", editor, compat.ALL_STRIPS_PROPERTY, text="Movie")
        if not options.video_strip:
            strip = timeline.video_strip(context)
            column.label(text=f"Using the active strip: {strip.name}" if strip else "No active movie strip")
    column.prop(options, "audio_source")
    if options.audio_source == "STRIP" and editor is not None:
        column.prop_search(options, "audio_strip", editor, compat.ALL_STRIPS_PROPERTY, text="Sound")
    elif options.audio_source == "FILE":
        column.prop(options, "audio_file")
    column.prop(options, "vocals_file")


def _draw_options(layout: bpy.types.UILayout, options) -> None:
    size = layout.column(align=True)
    size.prop(options, "video_width", text="Output Width")
    size.prop(options, "video_height", text="Height")
    if options.video_width == 0 and options.video_height == 0:
        size.label(text="Size: same as the source")
    column = layout.column()
    column.prop(options, "enhance")
    column.prop(options, "fps_mode")
    column.prop(options, "regenerate")


def _draw_estimate(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    estimate = job_setup.estimate(context)
    if estimate is None:
        return
    box = layout.box()
    box.label(text=f"Estimated cost: {estimate.credits:.1f} credits", icon="FUND")
    audio = "unknown" if estimate.audio_seconds is None else f"{estimate.audio_seconds:.2f} s"
    box.label(text=f"Video {estimate.video_seconds:.2f} s · audio {audio}")
    if estimate.durations_differ:
        _draw_length_choice(box, context, estimate)
    scene_fps = compat.scene_fps(context.scene)
    if abs(estimate.source_fps - scene_fps) > 0.01:
        box.label(text=f"Source is {estimate.source_fps:g} fps, the scene {scene_fps:g} fps; "
                       "the result is retimed to stay in sync.", icon="INFO")


def _draw_length_choice(box: bpy.types.UILayout, context: bpy.types.Context, estimate: Estimate) -> None:
    """How much longer or shorter the audio is than the shot, and what to do about it."""
    longer = estimate.audio_seconds > estimate.video_seconds
    difference = abs(estimate.audio_seconds - estimate.video_seconds)
    box.label(text=f"The audio is {difference:.2f} s {'longer' if longer else 'shorter'} than the shot.",
              icon="INFO")
    box.prop(context.scene.talking_face, "longer_audio" if longer else "shorter_audio")


def _draw_generate(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    reason = job_setup.blocking_reason(context)
    row = layout.row()
    row.scale_y = 1.4
    row.enabled = reason is None
    row.operator("sequencer.talking_face_generate", text="Generate", icon="PLAY")
    row.operator("sequencer.talking_face_generate", text="New Take", icon="DUPLICATE").new_take = True
    if reason:
        draw_sentence(layout, context, reason, icon="INFO")
    _draw_takes(layout, context)
    layout.operator("sequencer.talking_face_batch", text="Dub Shots…", icon="SEQ_STRIP_DUPLICATE")
    if addon.key_source() == "environment":
        layout.label(text="Using the API key from NEWPORT_API_KEY.", icon="KEYINGSET")


def _draw_takes(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Which take of the active strip's source plays, the switch and Redo (only where takes exist)."""
    choice = takes.active_choice(context)
    if choice is None:
        return
    playing = choice.playing
    row = layout.row(align=True)
    row.label(text=f"Take {choice.position(playing)} of {len(choice.takes)} · {playing.label}" if playing
              else f"{len(choice.takes)} takes, all muted", icon="RENDERLAYERS")
    row.operator("sequencer.talking_face_take", text="", icon="TRIA_LEFT").direction = "PREVIOUS"
    row.operator("sequencer.talking_face_take", text="", icon="TRIA_RIGHT").direction = "NEXT"
    row.operator("sequencer.talking_face_redo", text="Redo", icon="FILE_REFRESH")


def draw_jobs(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    if jobs_ops.monitor_error():
        layout.label(text=jobs_ops.monitor_error(), icon="ERROR")
    jobs = get_controller().jobs_for_file()
    if not jobs:
        layout.label(text="No jobs for this file yet.")
        return
    for entry in group_batches(jobs)[:MAX_LISTED_JOBS]:
        if isinstance(entry, list):
            draw_batch(layout.box(), entry, context)
        else:
            draw_job(layout.box(), entry, context)
    controller = get_controller()
    if any(not record.phase.finished and not controller.owned_elsewhere(record) for record in jobs):
        row = layout.row(align=True)
        _draw_pause_resume(row, jobs, batch="", suffix=" All")
        row.operator("sequencer.talking_face_cancel", text="Cancel All", icon="CANCEL")


def _draw_pause_resume(layout: bpy.types.UILayout, jobs: list[JobRecord], batch: str, suffix: str = "") -> None:
    """Resume while any of ``jobs`` is held by a pause, else Pause while any has not started yet."""
    controller = get_controller()
    if any(controller.is_paused(record) for record in jobs):
        operator = layout.operator("sequencer.talking_face_queue", text=f"Resume{suffix}", icon="PLAY")
        operator.action, operator.batch = "RESUME", batch
    elif any(not record.phase.finished and not record.task_id for record in jobs):
        operator = layout.operator("sequencer.talking_face_queue", text=f"Pause{suffix}", icon="PAUSE")
        operator.action, operator.batch = "PAUSE", batch


def group_batches(jobs: list[JobRecord]) -> list[JobRecord | list[JobRecord]]:
    """Jobs in their order, a batch's jobs gathered (in timeline order) where its newest one is."""
    entries: list[JobRecord | list[JobRecord]] = []
    batches: dict[str, list[JobRecord]] = {}
    for record in jobs:
        batch = record.owner.get("batch")
        if not batch:
            entries.append(record)
        elif batch in batches:
            batches[batch].append(record)
        else:
            batches[batch] = [record]
            entries.append(batches[batch])
    for members in batches.values():
        members.sort(key=lambda record: (*record.owner.get("timeline", (0, 0)), record.created_at))
    return entries


def draw_batch(box: bpy.types.UILayout, jobs: list[JobRecord], context: bpy.types.Context) -> None:
    """A batch under one box: its total progress (or its summary once ended), Pause/Resume, Retry Failed, its shots."""
    summary = summarize(jobs)
    paused = any(get_controller().is_paused(record) for record in jobs)
    header = box.row()
    header.label(text=f"Batch of {len(jobs)} shot(s)", icon="PAUSE" if paused else "SEQ_STRIP_DUPLICATE")
    header.label(text=f"{summary.done}/{len(jobs)} done" + (f" · {summary.failed} failed" if summary.failed else ""))
    if paused:
        draw_sentence(box, context, "Paused: the waiting shots start when you press Resume.", icon="INFO")
    if summary.ended:
        _draw_summary(box, context, summary)
    else:
        compat.draw_progress(box, summary.done / len(jobs), f"{summary.done}/{len(jobs)}")
    batch = jobs[0].owner["batch"]
    row = box.row(align=True)
    _draw_pause_resume(row, jobs, batch)
    if summary.failed:
        row.operator("sequencer.talking_face_retry_failed", icon="FILE_REFRESH").batch = batch
    for record in jobs[:MAX_LISTED_JOBS]:
        draw_job(box.box(), record, context)
    if len(jobs) > MAX_LISTED_JOBS:
        box.label(text=f"… and {len(jobs) - MAX_LISTED_JOBS} more shot(s)")


def _draw_summary(box: bpy.types.UILayout, context: bpy.types.Context, summary) -> None:
    """How the batch ended: done, failed with their reasons, credits spent."""
    draw_sentence(box, context, summary.headline(), icon="ERROR" if summary.failed else "CHECKMARK")
    for failure in summary.failures[:MAX_LISTED_JOBS]:
        draw_sentence(box, context, f"{failure.shot}: {failure.reason}", icon="BLANK1")


def draw_sentence(layout: bpy.types.UILayout, context: bpy.types.Context, text: str, icon: str = "NONE") -> None:
    """A sentence wrapped to the sidebar's width: a label cuts long text in its middle, which hides what to do."""
    region = context.region
    pixels = (region.width if region else 300) / max(0.5, context.preferences.system.ui_scale)
    column = layout.column(align=True)
    for number, line in enumerate(textwrap.wrap(text, width=max(20, int((pixels - 40) / CHARACTER_PIXELS)))):
        column.label(text=line, icon=icon if number == 0 else "BLANK1")


def draw_job(box: bpy.types.UILayout, record: JobRecord, context: bpy.types.Context) -> None:
    controller = get_controller()
    paused = controller.pause_reason(record)
    elsewhere = controller.owned_elsewhere(record)
    header = box.row()
    header.label(text=record.label or record.job_id[:8],
                 icon="PAUSE" if paused else PHASE_ICONS.get(record.phase, "SORTTIME"))
    header.label(text=f"{'Paused' if paused else record.phase.label} · {elapsed_text(record)}")
    if elsewhere:
        draw_sentence(box, context, elsewhere, icon="WINDOW")
    elif paused:
        draw_sentence(box, context, paused, icon="INFO")
    elif record.phase == Phase.FAILED:
        draw_sentence(box, context, record.error, icon="ERROR")
    elif not record.phase.finished:
        progress, message = controller.progress_of(record)
        if progress is not None:
            compat.draw_progress(box, progress, message)
        elif message:
            box.label(text=message)
    row = box.row(align=True)
    if paused:
        row.operator("sequencer.talking_face_resume", text="Resume", icon="PLAY").job_id = record.job_id
    if not record.phase.finished and not elsewhere:
        row.operator("sequencer.talking_face_cancel", text="Cancel", icon="CANCEL").job_id = record.job_id
    if record.phase in (Phase.FAILED, Phase.CANCELLED):
        row.operator("sequencer.talking_face_retry", text="Retry", icon="FILE_REFRESH").job_id = record.job_id
    if record.phase == Phase.DONE:
        row.operator("sequencer.talking_face_show", text="Show", icon="RESTRICT_SELECT_OFF").job_id = record.job_id
    if record.phase.finished:
        row.operator("sequencer.talking_face_open_folder", text="", icon="FILE_FOLDER").job_id = record.job_id
        row.operator("sequencer.talking_face_dismiss", text="", icon="X").job_id = record.job_id


CLASSES = (SEQUENCER_PT_talking_face, SEQUENCER_PT_talking_face_jobs)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
