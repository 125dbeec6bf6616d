"""A pipeline's session, run by ``test_placement.py`` in a child process: place a result
whose rate differs from the scene's, remove that scene, exit.

The parent sets ``BLENDER_USER_RESOURCES`` and ``TALKING_FACE_ZIP`` and passes the result
movie's path. The child prints ``TF placed <strip length> <proxy setup> <proxy on the strip>`` per shot and leaves the
exit code to Blender: a crash at exit shows there, nowhere else.
"""

from __future__ import annotations

import importlib
import sys

import bpy
from recovery_child import extension

SCENE_FPS = 25
SHOTS = 3  # one scene removed while the previous one's proxy job may still run


def main(result_movie: str) -> None:
    package = extension()
    compat = importlib.import_module(f"{package.__name__}.operators.compat")
    placement = importlib.import_module(f"{package.__name__}.operators.placement")
    for shot in range(SHOTS):
        scene = bpy.data.scenes.new(f"pipeline shot {shot}")
        compat.set_scene_fps(scene, SCENE_FPS)
        compat.ensure_editor(scene)
        source = compat.new_movie(scene, "Take", result_movie, channel=1, frame_start=1)
        names = placement.place_result(scene, source.name, result_movie, job_id=f"job-{shot}", name="Take TF")
        placed = compat.strips(scene)[names[0]]
        setup = bpy.context.preferences.system.sequencer_proxy_setup
        print(f"TF placed {placed.frame_final_duration} {setup} {placed.use_proxy}", flush=True)
        bpy.data.scenes.remove(scene)

if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--") + 1])
