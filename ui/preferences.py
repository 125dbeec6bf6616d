"""Add-on preferences: the API key, where the service is, where results go."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..newport_api import DEFAULT_BASE_URL
from ..operators import compat
from ..operators.addon import ADDON_PACKAGE, DEFAULT_PARALLEL_JOBS, ENV_API_KEY
from ..operators.controller import get_controller


class TalkingFacePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    api_key: StringProperty(
        name="API Key", subtype="PASSWORD",
        description="Your Newport AI API key (sk-…). NEWPORT_API_KEY in the environment takes precedence")
    base_url: StringProperty(
        name="API Base URL", default=DEFAULT_BASE_URL,
        description="Where the Newport AI API lives; change only for a local sandbox or a proxy")
    ca_bundle: StringProperty(
        name="CA Bundle", subtype="FILE_PATH",
        description="A certificate bundle to trust instead of the system's (for company proxies)")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//talking_face/",
        options=compat.BLEND_RELATIVE_PATH_OPTIONS,
        description="Where results are saved ('//' is the .blend's folder; unsaved files use the "
                    "extension's user folder)")
    mute_sources: BoolProperty(
        name="Mute Source Strips After Import", default=True,
        description="Mute the source movie and sound strips once the result is on the timeline")
    max_parallel_jobs: IntProperty(
        name="Jobs at Once", default=DEFAULT_PARALLEL_JOBS, min=1, soft_max=10,
        description="How many jobs run at the same time; the others wait in the queue, in timeline order")
    show_advanced: BoolProperty(name="Advanced", default=False)

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self.layout, self)


def draw_preferences(layout: bpy.types.UILayout, prefs: TalkingFacePreferences) -> None:
    layout.use_property_split = True
    column = layout.column()
    if os.environ.get(ENV_API_KEY):
        row = column.row()
        row.enabled = False
        row.prop(prefs, "api_key")
        column.label(text="Using the key from the NEWPORT_API_KEY environment variable.", icon="INFO")
    else:
        column.prop(prefs, "api_key")
    column.operator("sequencer.talking_face_check_key", icon="CHECKMARK")
    status = get_controller().key_status
    if status:
        column.label(text=status)
    column.prop(prefs, "output_dir")
    column.prop(prefs, "mute_sources")
    column.prop(prefs, "max_parallel_jobs")
    column.prop(prefs, "show_advanced")
    if prefs.show_advanced:
        column.prop(prefs, "base_url")
        column.prop(prefs, "ca_bundle")


CLASSES = (TalkingFacePreferences,)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
