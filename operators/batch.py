"""Dub a whole edit: one job per shot, each paired with its audio by one rule.

``read_shots`` turns the selected (or in-range) picture strips into ``shots.Shot``s (read by
``timeline.read_shot``), in timeline order, each with its audio or the sentence saying why it
cannot run. Every runnable shot starts by ``jobs_ops.start_shot`` — the path Generate takes —
and its record carries ``owner["batch"]``, which groups the batch in the Jobs list.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..newport_api import Phase
from ..newport_api.batches import summarize
from . import addon, compat, media, placement, timeline
from .controller import get_controller
from .jobs_ops import NetworkOperator, TalkingFaceOperator, ensure_monitor, runs_synchronously, start_shot
from .lengths import LONGER_AUDIO_ITEMS, SHORTER_AUDIO_ITEMS
from .shots import Shot, estimate

AUDIO_RULES = (
    ("OVERLAP", "Overlapping Sound", "The sound strip that overlaps the shot the most"),
    ("OWN", "Movie's Own Sound", "The sound inside each shot's movie file"),
    ("FILES", "File per Shot", "A file per shot from the pattern, {strip} being the strip's name"),
)
SCOPES = (
    ("SELECTED", "Selected Strips", "Every selected movie or image-sequence strip"),
    ("RANGE", "Frame Range", "Every movie or image-sequence strip in the scene's frame range"),
    ("META", "Inside Selected Metas",
     "Every movie or image-sequence strip inside the selected metas; each result goes in its meta, above its shot"),
)
QUEUE_ACTIONS = (
    ("PAUSE", "Pause", "No waiting job starts until Resume; jobs already running go on to their result"),
    ("RESUME", "Resume", "Waiting jobs start again, in timeline order, at most Jobs at Once at a time"),
)
REPORT_LEVELS = (("INFO", "Info", ""), ("WARNING", "Warning", ""))
DIALOG_WIDTH = 560
MAX_DIALOG_ROWS = 25


def read_shots(context: bpy.types.Context, *, audio: str, audio_channel: int, audio_pattern: str,
               scope: str, shard: str = "", lengths_choice: timeline.LengthChoice | None = None,
               measure: bool = True) -> list[Shot]:
    """The batch's shots in timeline order (by start, then channel); ``shard`` 'i/n' keeps every n-th from the i-th.

    ``lengths_choice``: the batch's own, by default the panel's; ``measure`` as ``timeline.read_shot``'s.
    Raises ``ValueError`` with a sentence for a malformed shard.
    """
    strips = sorted(_picture_strips(context.scene, scope), key=lambda strip: (strip.frame_final_start, strip.channel))
    index, count = parse_shard(shard)
    return [_pair(context, strip, audio, audio_channel, audio_pattern, lengths_choice, measure)
            for strip in strips[index::count]]


def parse_shard(shard: str) -> tuple[int, int]:
    if not shard.strip():
        return 0, 1
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"The shard '{shard}' is not of the form i/n with 0 ≤ i < n (e.g. 0/4) — fix it.")
    return index, count


def _picture_strips(scene: bpy.types.Scene, scope: str) -> list:
    first, last = scene.frame_start, scene.frame_end + 1
    candidates = _inside_selected_metas(scene) if scope == "META" else compat.all_strips(scene)
    return [strip for strip in candidates
            if media.is_video_strip(strip) and not strip.get(placement.JOB_PROPERTY)  # a result is no shot
            and (scope == "META" or (strip.select if scope == "SELECTED"
                                     else strip.frame_final_start < last and strip.frame_final_end > first))]


def _inside_selected_metas(scene: bpy.types.Scene) -> list:
    """Every strip inside the selected meta strips, metas nested in them included (each strip once)."""
    found: dict[int, Any] = {}
    pending = [strip for strip in compat.all_strips(scene) if compat.is_meta(strip) and strip.select]
    while pending:
        for strip in compat.meta_contents(pending.pop()):
            if compat.is_meta(strip):
                pending.append(strip)
            found.setdefault(strip.as_pointer(), strip)
    return list(found.values())


def _pair(context: bpy.types.Context, strip, rule: str, channel: int, pattern: str,
          lengths_choice: timeline.LengthChoice | None, measure: bool) -> Shot:
    reason = None
    if rule == "OVERLAP":
        choice = timeline.AudioChoice("STRIP", strip=overlapping_sound(context.scene, strip, channel))
        if choice.strip is None:
            where = f" on channel {channel}" if channel else ""
            reason = (f"No sound strip overlaps '{strip.name}'{where} — add its dialogue there or pick another "
                      "audio rule.")
    elif rule == "OWN":
        choice = timeline.AudioChoice("MOVIE", strip=strip)
        if not compat.is_movie(strip):
            reason = (f"'{strip.name}' is an image sequence, which has no sound of its own — pick another "
                      "audio rule.")
    else:
        choice = timeline.AudioChoice("FILE", path=bpy.path.abspath(pattern.replace("{strip}", strip.name)))
        if not os.path.isfile(choice.path):
            reason = f"There is no audio file for '{strip.name}' at '{choice.path}' — add it or change the pattern."
    shot = timeline.read_shot(context, strip, choice, lengths_choice=lengths_choice, measure=measure)
    return dataclasses.replace(shot, reason=reason) if reason else shot


def overlapping_sound(scene: bpy.types.Scene, strip, channel: int = 0):
    """The sound strip overlapping ``strip``'s visible range the most (on ``channel``; 0: any), or None.

    Results placed earlier are never a shot's dialogue.
    """
    best, best_frames = None, 0
    for sound in compat.all_strips(scene):
        if not compat.is_sound(sound) or sound.get(placement.JOB_PROPERTY) or (channel and sound.channel != channel):
            continue
        frames = (min(sound.frame_final_end, strip.frame_final_end)
                  - max(sound.frame_final_start, strip.frame_final_start))
        if frames > best_frames:
            best, best_frames = sound, frames
    return best


class SEQUENCER_OT_talking_face_batch(NetworkOperator, bpy.types.Operator):
    """Lip-sync every selected shot (or every shot in the frame range) to its own audio, one job each"""

    bl_idname = "sequencer.talking_face_batch"
    bl_label = "Dub Shots with Talking Face"

    audio: EnumProperty(name="Audio", items=AUDIO_RULES, default="OVERLAP")
    audio_channel: IntProperty(name="Sound Channel", default=0, min=0, max=128,
                               description="The channel of the dialogue's sound strips (0: any channel)")
    audio_pattern: StringProperty(name="Audio Files", default="//dub/{strip}.wav",
                                  description="Each shot's audio file; {strip} is replaced by the strip's name")
    scope: EnumProperty(name="Shots", items=SCOPES, default="SELECTED")
    shard: StringProperty(name="Shard", default="",
                          description="'i/n' runs only every n-th shot from the i-th (0-based), to split "
                                      "an edit across machines")
    # Unset, they are the panel's choices (the scene's): a batch treats lengths as a single job does.
    longer_audio: EnumProperty(name="Longer Audio", items=LONGER_AUDIO_ITEMS, default="AS_IS",
                               description="What to send when a shot's audio lasts longer than the shot")
    shorter_audio: EnumProperty(name="Shorter Audio", items=SHORTER_AUDIO_ITEMS, default="SHORTER",
                                description="What to send when a shot's audio ends before the shot")

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        if context.scene is None or context.scene.sequence_editor is None:
            return "Open a scene with a Video Sequencer to dub its shots."
        return addon.network_blocking_reason()

    def shots(self, context: bpy.types.Context, *, measure: bool = True) -> list[Shot]:
        return read_shots(context, audio=self.audio, audio_channel=self.audio_channel,
                          audio_pattern=self.audio_pattern, scope=self.scope, shard=self.shard,
                          lengths_choice=self.lengths_choice(context), measure=measure)

    def lengths_choice(self, context: bpy.types.Context) -> timeline.LengthChoice:
        """The operator's length choices; those not given are the scene's."""
        scene_choice = timeline.length_choice(context)
        given = self.properties.is_property_set
        return timeline.LengthChoice(
            self.longer_audio if given("longer_audio") else scene_choice.longer_audio,
            self.shorter_audio if given("shorter_audio") else scene_choice.shorter_audio)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        choice = self.lengths_choice(context)  # the dialog starts from the panel's choices
        self.longer_audio, self.shorter_audio = choice.longer_audio, choice.shorter_audio
        if context.window is None or bpy.app.background:
            return self.execute(context)
        return context.window_manager.invoke_props_dialog(self, width=DIALOG_WIDTH)

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        column = layout.column()
        column.prop(self, "scope")
        column.prop(self, "audio")
        if self.audio == "OVERLAP":
            column.prop(self, "audio_channel")
        elif self.audio == "FILES":
            column.prop(self, "audio_pattern")
        column.prop(self, "longer_audio")
        column.prop(self, "shorter_audio")
        try:
            draw_shot_list(layout, context, self.shots(context, measure=False))
        except ValueError as error:
            layout.label(text=str(error), icon="ERROR")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            shots = self.shots(context)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if not shots:
            self.report({"ERROR"}, "There are no movie strips to dub — select the shots (or use the frame range"
                                   ", or select meta strips that hold shots).")
            return {"CANCELLED"}
        sync = runs_synchronously(self.mode)
        problems = [f"{shot.name}: {shot.reason}" for shot in shots if shot.reason]
        started = 0
        batch_id = uuid.uuid4().hex[:12]
        credentials = addon.credentials()
        records = []
        for shot in (shot for shot in shots if not shot.reason):
            try:
                record = start_shot(context, shot, credentials, sync=sync, batch=batch_id)
            except media.MediaError as error:
                problems.append(f"{shot.name}: {error}")
                continue
            records.append(record)
            if record.phase == Phase.FAILED:
                problems.append(f"{shot.name}: {record.error}")
            else:
                started += 1
        if not sync:
            ensure_monitor()
        elif records:  # headless the batch has ended here: its summary goes to the terminal
            print("Talking Face: " + "\n  ".join(summarize(records).lines()), flush=True)
        return self._report(len(shots), started, problems, sync)

    def _report(self, total: int, started: int, problems: list[str], sync: bool) -> set[str]:
        done = "placed" if sync else "started"
        if problems:
            self.report({"ERROR"}, f"Talking Face: {started} of {total} shot(s) {done}; not {done}: "
                                   + " | ".join(problems))
            return {"CANCELLED"} if sync or not started else {"FINISHED"}
        self.report({"INFO"}, f"Talking Face: {started} shot(s) {done}.")
        return {"FINISHED"}


def draw_shot_list(layout: bpy.types.UILayout, context: bpy.types.Context, shots: list[Shot]) -> None:
    """The confirmation: every shot with its audio, duration and credits, the total, and the shots skipped."""
    runnable = [shot for shot in shots if not shot.reason]
    costs = [estimate(shot) for shot in runnable]
    box = layout.box()
    for shot, cost in list(zip(runnable, costs))[:MAX_DIALOG_ROWS]:
        row = box.row()
        row.label(text=shot.name, icon="SEQUENCE")
        row.label(text=shot.audio_name, icon="SOUND")
        if cost is None:
            row.label(text="—")
            continue
        row.label(text=f"{cost.billed_seconds:.1f} s · {cost.credits:.1f} credits")
    total = sum(cost.credits for cost in costs if cost is not None)
    if len(runnable) > MAX_DIALOG_ROWS:
        box.label(text=f"… and {len(runnable) - MAX_DIALOG_ROWS} more shot(s)")
    layout.label(text=f"{len(runnable)} shot(s), about {total:.1f} credits in all", icon="FUND")
    balance = get_controller().key_status
    layout.label(text=balance or "Press Check Key in the preferences to see the balance.", icon="INFO")
    for shot in (shot for shot in shots if shot.reason):
        layout.label(text=f"Skipped {shot.name}: {shot.reason}", icon="ERROR")


class SEQUENCER_OT_talking_face_retry_failed(NetworkOperator, bpy.types.Operator):
    """Run the failed shots of this batch again (the others are left as they are)"""

    bl_idname = "sequencer.talking_face_retry_failed"
    bl_label = "Retry Failed"

    batch: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        controller = get_controller()
        sync = runs_synchronously(self.mode)
        failed = [record.job_id for record in list(controller.views.values())
                  if record.owner.get("batch") == self.batch and record.phase == Phase.FAILED]
        if not failed:
            self.report({"WARNING"}, "This batch has no failed shots to retry.")
            return {"CANCELLED"}
        retried = [controller.retry(job_id, addon.credentials(), sync=sync) for job_id in failed]
        still_failed = [record for record in retried if record is not None and record.phase == Phase.FAILED]
        if not sync:
            ensure_monitor()
        if still_failed:
            self.report({"ERROR"}, " | ".join(f"{record.label}: {record.error}" for record in still_failed))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Talking Face: retried {len(failed)} shot(s).")
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_queue(TalkingFaceOperator, bpy.types.Operator):
    """Pause the queue (no waiting job starts; running ones go on) or resume it"""

    bl_idname = "sequencer.talking_face_queue"
    bl_label = "Pause or Resume Talking Face Jobs"

    action: EnumProperty(name="Action", items=QUEUE_ACTIONS, default="PAUSE")
    batch: StringProperty(name="Batch", default="",
                          description="The batch to pause or resume; empty: every job of this file")

    @classmethod
    def description(cls, context: bpy.types.Context, properties) -> str:
        return next(text for action, _name, text in QUEUE_ACTIONS if action == properties.action)

    def execute(self, context: bpy.types.Context) -> set[str]:
        controller = get_controller()
        if self.action == "PAUSE":
            held = controller.pause_queue(self.batch)
            if not held:
                self.report({"WARNING"}, "There is no waiting job to pause; jobs already running finish on "
                                         "their own (Cancel stops one).")
                return {"CANCELLED"}
            self.report({"INFO"}, f"Talking Face: paused — {len(held)} job(s) wait until you press Resume; "
                                  "the ones already running go on.")
            return {"FINISHED"}
        released = controller.resume_queue(self.batch)
        if not released:
            self.report({"WARNING"}, "Nothing is paused.")
            return {"CANCELLED"}
        self._queue_stopped_jobs(controller, released)
        self.report({"INFO"}, f"Talking Face: resumed — {len(released)} job(s) start as slots free up.")
        ensure_monitor()
        return {"FINISHED"}

    @staticmethod
    def _queue_stopped_jobs(controller, released: list) -> None:
        """With a window, jobs paused in an earlier session that nothing queued yet join the queue now."""
        if bpy.app.background or addon.network_blocking_reason() is not None:
            return  # headless, talking_face_resume continues them (as after any reopen)
        for record in released:
            if not controller.is_running(record.job_id):
                controller.resume(addon.credentials(), job_id=record.job_id)


class SEQUENCER_OT_talking_face_batch_report(bpy.types.Operator):
    """Show how a batch ended in the status bar and the Info log"""

    bl_idname = "sequencer.talking_face_batch_report"
    bl_label = "Talking Face Batch Report"
    bl_options = {"INTERNAL"}  # noqa: RUF012 — Blender reads a plain set here

    message: StringProperty(options={"SKIP_SAVE"})
    level: EnumProperty(items=REPORT_LEVELS, default="INFO", options={"SKIP_SAVE"})

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # A report made from a modal handler reaches the status bar; one from a timer's call would not.
        if context.window is None:
            return self.execute(context)
        self._timer = context.window_manager.event_timer_add(0.01, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self.execute(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (SEQUENCER_OT_talking_face_batch, SEQUENCER_OT_talking_face_retry_failed, SEQUENCER_OT_talking_face_queue,
           SEQUENCER_OT_talking_face_batch_report)
