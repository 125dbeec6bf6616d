"""The main job, headless: install the extension, make a project, Generate, save, show the result.

Run it through ``python3 tools/dev.py demo``, which builds the zip and runs this
file in a ``bpy`` venv with ``TALKING_FACE_ZIP`` set.

Against the local sandbox by default.  With ``NEWPORT_API_KEY`` and
``NEWPORT_BASE_URL`` both set, it talks to that service instead (the real one
spends real credits).
"""

from __future__ import annotations

import atexit
import importlib
import os
import pathlib
import shutil
import sys
import tempfile
from contextlib import ExitStack

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "demo_output"
EXTENSION_MODULE = "bl_ext.user_default.talking_face"
SANDBOX_KEY = "sk-sandbox-demo"

# A throw-away Blender user folder: the demo never touches your own Blender set-up, and removes it
# at exit (registered before bpy's own exit handlers, so it runs after them: atexit is LIFO).
USER_RESOURCES = tempfile.mkdtemp(prefix="talking_face_demo_user_")
os.environ["BLENDER_USER_RESOURCES"] = USER_RESOURCES
atexit.register(shutil.rmtree, USER_RESOURCES, ignore_errors=True)

import bpy  # after the environment above: bpy reads it on import


def load_sample_media():
    """The test suite's media generator: movies and sounds made by Blender itself."""
    spec = importlib.util.spec_from_file_location("sample_media", REPO_ROOT / "tests/blender/sample_media.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_media"] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def install_extension(zip_path: str):
    print(f"Installing {zip_path} (Install from Disk)")
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        sys.exit(f"demo: installing the extension failed: {result}")
    bpy.context.preferences.system.use_online_access = True
    return importlib.import_module(EXTENSION_MODULE)


def service(stack: ExitStack) -> tuple[str, str]:
    """The base URL and key to use: the real service when asked, else a local sandbox."""
    base_url, key = os.environ.get("NEWPORT_BASE_URL", ""), os.environ.get("NEWPORT_API_KEY", "")
    if base_url and key:
        print(f"Using the service at {base_url}")
        return base_url, key
    sys.path.insert(0, str(REPO_ROOT))  # the sandbox comes from the source tree: the zip has none
    from newport_api.sandbox import Sandbox

    sandbox = stack.enter_context(Sandbox(processing_seconds=3.0, queued_seconds=1.0))
    print(f"Using the local sandbox at {sandbox.base_url} (its result is the source video, unchanged)")
    return sandbox.base_url, SANDBOX_KEY


def make_project(extension, media) -> bpy.types.Scene:
    """A scene with a trimmed movie strip of a 'take' and a sound strip of the new line."""
    compat = extension.operators.compat
    media_dir = OUTPUT / "media"
    movie = media.make_movie(compat, media_dir / "take.mp4", frames=100, fps=25, size=(640, 360))
    line = media.write_sine_wav(media_dir / "new_line.wav", seconds=2.4)
    scene = bpy.data.scenes.new("Talking Face Demo")
    compat.set_scene_fps(scene, 25)
    scene.frame_start, scene.frame_end = 1, 120
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    take = compat.new_movie(scene, "Take 3", str(movie), channel=2, frame_start=1)
    take.frame_offset_start = 20  # the editor trimmed the take: only its visible frames are sent
    take.frame_offset_end = 20
    settings = scene.talking_face
    if compat.has_audio_support():
        compat.new_sound(scene, "New line", str(line), channel=1, frame_start=take.frame_final_start)
        settings.audio_source, settings.audio_strip = "STRIP", "New line"
    else:
        settings.audio_source, settings.audio_file = "FILE", str(line)
    settings.video_strip = "Take 3"
    return scene


def describe(extension, scene: bpy.types.Scene) -> None:
    compat = extension.operators.compat
    for strip in sorted(compat.all_strips(scene), key=lambda s: s.channel):
        job = strip.get("talking_face_job", "")
        source = bpy.path.abspath(strip.filepath) if hasattr(strip, "filepath") else \
            bpy.path.abspath(strip.sound.filepath) if hasattr(strip, "sound") else ""
        marker = f"  ← result of job {job[:8]}" if job else ("  (muted source)" if strip.mute else "")
        print(f"  channel {strip.channel}: {strip.name!r:24} {strip.type:6} frames "
              f"{strip.frame_final_start}–{strip.frame_final_end}  {source}{marker}")


def main() -> int:
    zip_path = os.environ.get("TALKING_FACE_ZIP")
    if not zip_path:
        sys.exit("demo: run me through `python3 tools/dev.py demo` (TALKING_FACE_ZIP is not set)")
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    extension = install_extension(zip_path)
    with ExitStack() as stack:
        base_url, key = service(stack)
        prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
        prefs.base_url = base_url
        os.environ["NEWPORT_API_KEY"] = key  # the key stays out of the .blend and the preferences
        scene = make_project(extension, load_sample_media())
        blend = OUTPUT / "talking_face_demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # results go next to it: //talking_face/
        print("Generating…")
        if bpy.ops.sequencer.talking_face_generate() != {"FINISHED"}:
            return 1
        bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.data.scenes["Talking Face Demo"]
    print(f"\nSaved {blend}; scene {scene.name!r} now holds:")
    describe(extension, scene)
    results = [s for s in extension.operators.compat.all_strips(scene) if s.get("talking_face_job")]
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
