"""Issue 11's length choices with a window: the shot is shortened until the line outlasts it, the
panel offers what to do (screenshot), Hold Last Frame is chosen and Generate pressed; the clip is
cut by a background Blender, extended to the line's length, and lands from the shot's first frame.
"""

import bpy
import gui_driver as d

SHOT_FRAMES = 40  # 1.6 s at 25 fps; the line plays 2.28 s


def scenario():
    yield d.until(d.enabled, 10, "the extension to be enabled")
    d.use_sandbox()
    yield from d.show_talking_face_tab()
    scene = bpy.context.scene
    editor = scene.sequence_editor
    take = (getattr(editor, "strips_all", None) or editor.sequences_all)["Take"]
    take.frame_offset_end += take.frame_final_duration - SHOT_FRAMES
    d.choose_audio(scene)
    scene.talking_face.longer_audio = "HOLD"
    yield 1.0  # the sidebar grows by the choice's rows: let its panels settle before the screenshot
    estimate = d.extension().operators.job_setup.estimate(bpy.context)
    d.facts["estimate"] = {"video_seconds": estimate.video_seconds, "audio_seconds": estimate.audio_seconds,
                           "differ": estimate.durations_differ, "credits": estimate.credits,
                           "length_choice": estimate.length_choice}
    d.screenshot("lengths-panel")
    job_id = yield from d.generate(show_tab=False)
    yield from d.finish(job_id)
    yield 0.5
    d.screenshot("lengths-done")
