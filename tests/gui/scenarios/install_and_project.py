"""First start with a window: Install from Disk, enable, allow online access, save the preferences;
then build the project every other scenario copies: a trimmed movie strip and a sound strip."""

import os

import bpy
import gui_driver as d

TRIM = 10
SOUND_TRIM = 3


def scenario():
    yield 0.5
    with d.override(kind="WINDOW"):
        result = bpy.ops.extensions.package_install_files(
            "EXEC_DEFAULT", filepath=os.environ["TF_GUI_ZIP"], repo="user_default", enable_on_install=True)
    d.note(f"package_install_files -> {sorted(result)}")
    yield d.until(lambda: d.EXTENSION in bpy.context.preferences.addons, 30, "the extension to be enabled")
    bpy.context.preferences.system.use_online_access = True
    bpy.ops.wm.save_userpref()
    d.facts["installed"] = d.EXTENSION in bpy.context.preferences.addons

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    editor = scene.sequence_editor_create()
    strips = getattr(editor, "strips", None) or editor.sequences  # 4.4 renamed sequences to strips
    folder = os.path.dirname(os.environ["TF_GUI_RESULT"]) + "/project"
    movie = strips.new_movie(name="Take", filepath=folder + "/take.mp4", channel=2, frame_start=1)
    movie.frame_offset_start = TRIM
    movie.frame_offset_end = TRIM
    sound = strips.new_sound(name="Line", filepath=folder + "/line.mp3", channel=1,
                             frame_start=movie.frame_final_start - SOUND_TRIM)
    sound.frame_offset_start = SOUND_TRIM
    editor.active_strip = movie
    scene.frame_start, scene.frame_end = 1, 120
    d.facts["movie"] = {"start": movie.frame_final_start, "end": movie.frame_final_end,
                        "duration": movie.frame_duration}
    d.facts["sound"] = {"start": sound.frame_final_start, "end": sound.frame_final_end}
    bpy.ops.wm.save_as_mainfile(filepath=folder + "/project.blend", relative_remap=True)
    bpy.ops.file.make_paths_relative()
    bpy.ops.wm.save_mainfile()

