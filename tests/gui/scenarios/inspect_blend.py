"""Background Blender: every strip of every scene of the open .blend, as JSON (argument after --)."""

import json
import sys

import bpy

strips = []
for scene in bpy.data.scenes:
    editor = scene.sequence_editor
    if editor is None:
        continue
    for strip in getattr(editor, "strips_all", None) or editor.sequences_all:
        strips.append({
            "scene": scene.name, "name": strip.name, "type": strip.type, "channel": strip.channel,
            "start": strip.frame_final_start, "end": strip.frame_final_end, "mute": strip.mute,
            "job": strip.get("talking_face_job", ""),
            "take": strip.get("talking_face_take", 0), "take_of": strip.get("talking_face_source", ""),
            "filepath": bpy.path.abspath(getattr(strip, "filepath", "") or
                                         getattr(getattr(strip, "sound", None), "filepath", "") or ""),
        })
with open(sys.argv[sys.argv.index("--") + 1], "w") as out:
    json.dump({"file": bpy.data.filepath, "fps": bpy.context.scene.render.fps, "strips": strips}, out, indent=1)
