"""Write ``data/sound_strip.blend``: one scene holding one sound strip, for builds that cannot make one.

The bpy 4.2 wheels have no Audaspace, so ``strips.new_sound`` raises there; a sound strip
still arrives in such a build inside a .blend saved by an artist's Blender, and
``sound_strips.add_sound_strip`` brings it in the same way. Run in a bpy venv that has
Audaspace (the 4.2 wheel reads this 4.5 file)::

    .venvs/bpy-4.5.15/bin/python tests/blender/make_sound_strip_blend.py
"""

from __future__ import annotations

import pathlib
import tempfile

import bpy
import sample_media
import sound_strips


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        sound = sample_media.write_ramp_wav(pathlib.Path(folder) / "donor.wav", seconds=sound_strips.DONOR_SECONDS)
        scene = bpy.data.scenes.new(sound_strips.DONOR_SCENE)
        scene.render.fps, scene.render.fps_base = sound_strips.DONOR_FPS, 1.0
        editor = scene.sequence_editor_create()
        collection = editor.strips if hasattr(editor, "strips") else editor.sequences
        strip = collection.new_sound(name="Sound", filepath=str(sound), channel=1, frame_start=1)
        assert strip.frame_duration == round(sound_strips.DONOR_SECONDS * sound_strips.DONOR_FPS)
        strip.sound.filepath = "//donor.wav"  # replaced by each test; no path of this machine is kept
        bpy.data.libraries.write(str(sound_strips.DONOR_BLEND), {scene}, path_remap="NONE", compress=True)
    print(f"wrote {sound_strips.DONOR_BLEND}")


if __name__ == "__main__":
    main()
