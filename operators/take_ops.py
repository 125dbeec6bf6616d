"""The take operators: switch which take of a source plays, and Redo a take with the options it was made with."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import EnumProperty

from . import addon, compat, placement, timeline
from .jobs_ops import NetworkOperator, TalkingFaceOperator, report_started, runs_synchronously, start_shot
from .media import MediaError
from .takes import Take, active_choice, stored_options, switch

DIRECTIONS = (
    ("NEXT", "Next", "Play the next take (after the last comes the first)"),
    ("PREVIOUS", "Previous", "Play the previous take (before the first comes the last)"),
)


# -- redoing a take ---------------------------------------------------------------------------

class StoredOptions:
    """A take's stored options, read like the panel's settings; a setting it did not store comes from the panel."""

    def __init__(self, stored: dict[str, Any], panel: Any) -> None:
        self._stored = stored
        self._panel = panel

    def __getattr__(self, name: str) -> Any:
        stored = self.__dict__["_stored"]
        return stored[name] if name in stored else getattr(self.__dict__["_panel"], name)


def redo_take(context: bpy.types.Context) -> Take | None:
    """The take Redo makes again: the active take, else the one playing (the source is active)."""
    choice = active_choice(context)
    return (choice.active or choice.playing) if choice is not None else None


def redo_audio(scene: bpy.types.Scene, stored: dict[str, Any], source: Any) -> timeline.AudioChoice:
    audio = stored.get("audio", {})
    if audio.get("kind") == "STRIP":
        return timeline.AudioChoice("STRIP", strip=compat.all_strips(scene).get(audio.get("strip", "")))
    if audio.get("kind") == "MOVIE":
        return timeline.AudioChoice("MOVIE", strip=source)
    return timeline.AudioChoice("FILE", path=audio.get("path", ""))


def redo_blocking_reason(context: bpy.types.Context) -> str | None:
    """One sentence on why Redo cannot run, or None (the network is asked apart)."""
    take = redo_take(context)
    if take is None:
        return "Select a Talking Face take (a result strip) to redo it."
    source = take.movie.get(placement.SOURCE_PROPERTY, "")
    stored = stored_options(take)
    if stored is None:
        return (f"Take {take.label} was made before takes kept their options — select '{source}' "
                "and press New Take.")
    if compat.all_strips(context.scene).get(source) is None:
        return (f"The source strip '{source}' of this take is no longer in the scene — pick a movie strip "
                "and press New Take instead.")
    audio = stored.get("audio", {})
    if audio.get("kind") == "STRIP" and compat.all_strips(context.scene).get(audio.get("strip", "")) is None:
        return (f"The sound strip '{audio.get('strip')}' this take spoke is no longer in the scene "
                "— pick the audio in the panel and press New Take.")
    return None


# -- operators --------------------------------------------------------------------------------

class SEQUENCER_OT_talking_face_take(TalkingFaceOperator, bpy.types.Operator):
    """Play the next (or previous) take of this result's source; its other takes are muted"""

    bl_idname = "sequencer.talking_face_take"
    bl_label = "Switch Take"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 — Blender reads a plain set here

    direction: EnumProperty(name="Direction", items=DIRECTIONS, default="NEXT")

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        choice = active_choice(context)
        if choice is None:
            return "Select a Talking Face result strip (a take) to switch takes."
        if len(choice.takes) < 2:
            return f"'{choice.source}' has only one take — press New Take to make another."
        return None

    def execute(self, context: bpy.types.Context) -> set[str]:
        choice = active_choice(context)
        chosen = switch(context.scene, choice, 1 if self.direction == "NEXT" else -1)
        self.report({"INFO"}, f"Talking Face: take {chosen.label} of '{choice.source}' plays "
                              f"({choice.position(chosen)} of {len(choice.takes)}).")
        return {"FINISHED"}


class SEQUENCER_OT_talking_face_redo(NetworkOperator, bpy.types.Operator):
    """Make this take again with the options it was made with: a new take, paid for again"""

    bl_idname = "sequencer.talking_face_redo"
    bl_label = "Redo Take"

    @classmethod
    def disabled_reason(cls, context: bpy.types.Context) -> str | None:
        return redo_blocking_reason(context) or addon.network_blocking_reason()

    def execute(self, context: bpy.types.Context) -> set[str]:
        take = redo_take(context)
        stored = stored_options(take)
        source = compat.all_strips(context.scene)[take.movie[placement.SOURCE_PROPERTY]]
        audio = redo_audio(context.scene, stored, source)
        shot = timeline.read_shot(context, source, audio, options=StoredOptions(stored, timeline.settings(context)),
                                  new_take=True)
        if shot.reason:
            self.report({"ERROR"}, shot.reason)
            return {"CANCELLED"}
        try:
            record = start_shot(context, shot, addon.credentials(), sync=runs_synchronously(self.mode))
        except MediaError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return report_started(self, record, runs_synchronously(self.mode))


CLASSES = (SEQUENCER_OT_talking_face_take, SEQUENCER_OT_talking_face_redo)
