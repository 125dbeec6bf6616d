"""Preparing inputs in real Blender, through the installed extension.

What the service gets must be what the strip shows: an untrimmed mp4 as its own
bytes; a trimmed movie as exactly its visible frames (each frame's colour encodes its
index in the source, so the check reads indices, not pixels); a trimmed sound as its
visible seconds (the ramp WAV tells where a cut starts). The artist's scene must come
out of preparation exactly as it went in.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pathlib
import runpy
import subprocess
import sys
import warnings
from types import ModuleType
from typing import Any

import bpy
import pytest
import sample_media
import sound_strips

SOURCE_FRAMES = 25
SOURCE_FPS = 25
PIXEL_NOISE = 4  # 8-bit levels H.264 may move a flat colour by


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def source_movie(compat: ModuleType, media_dir: pathlib.Path) -> pathlib.Path:
    """1 s at 25 fps, 320×240, frame i coloured with index i."""
    return sample_media.make_movie(compat, media_dir / "source.mp4", frames=SOURCE_FRAMES, fps=SOURCE_FPS)


@pytest.fixture(scope="module")
def ramp_wav(media_dir: pathlib.Path) -> pathlib.Path:
    return sample_media.write_ramp_wav(media_dir / "ramp.wav", seconds=3.0)


def add_movie(compat: ModuleType, scene: bpy.types.Scene, path: pathlib.Path, frame_start: int = 10) -> Any:
    return compat.new_movie(scene, "Take 1", str(path), channel=2, frame_start=frame_start)


def rna_values(data: Any) -> dict[str, Any]:
    """Every readable plain property of an RNA struct (numbers, strings, enums, vectors)."""
    values = {}
    for prop in data.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.type in {"POINTER", "COLLECTION"}:
            continue
        with warnings.catch_warnings():  # 5.0 warns on reading deprecated ones such as Scene.use_nodes
            warnings.simplefilter("ignore", DeprecationWarning)
            value = getattr(data, prop.identifier)
        values[prop.identifier] = tuple(value) if getattr(prop, "array_length", 0) else value
    return values


def scene_snapshot(compat: ModuleType, scene: bpy.types.Scene) -> dict[str, Any]:
    render = scene.render
    return {
        "scene": rna_values(scene),
        "render": rna_values(render),
        "image_settings": rna_values(render.image_settings),
        "ffmpeg": rna_values(render.ffmpeg),
        "view": rna_values(scene.view_settings),
        "strips": {strip.name: rna_values(strip) for strip in compat.all_strips(scene)},
        "scenes": sorted(bpy.data.scenes.keys()),
        "window_scene": bpy.context.window.scene.name,
        "context_scene": bpy.context.scene.name,
    }


# --- Video ----------------------------------------------------------------------------------------


def test_untrimmed_mp4_is_uploaded_as_its_own_bytes(compat, media, user_scene, source_movie, tmp_path):
    strip = add_movie(compat, user_scene, source_movie)
    work_dir = tmp_path / "work"

    assert not media.needs_cut(strip, user_scene)
    prepared = media.prepare_video(strip, user_scene, str(work_dir))

    assert pathlib.Path(prepared.path) == source_movie
    assert prepared.is_source_file
    assert prepared.sha256 == media.file_sha256(str(source_movie))
    assert (prepared.frames, prepared.fps) == (SOURCE_FRAMES, SOURCE_FPS)
    assert prepared.duration == pytest.approx(SOURCE_FRAMES / SOURCE_FPS)
    assert not work_dir.exists(), "an untrimmed mp4 must not be encoded"


def test_trimmed_strip_is_cut_to_exactly_its_visible_frames(compat, media, user_scene, source_movie, tmp_path):
    strip = add_movie(compat, user_scene, source_movie, frame_start=10)
    first, end = 5, 19  # source frames [a, b) the strip will show
    strip.frame_offset_start = first
    strip.frame_offset_end = SOURCE_FRAMES - end
    progress: list[tuple[int, int]] = []

    assert media.needs_cut(strip, user_scene)
    assert media.visible_seconds(strip, user_scene) == pytest.approx((end - first) / SOURCE_FPS)
    prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"),
                                   on_progress=lambda done, total: progress.append((done, total)))

    assert not prepared.is_source_file
    assert pathlib.Path(prepared.path).parent == tmp_path / "work"
    assert (prepared.frames, prepared.fps) == (end - first, SOURCE_FPS)
    assert prepared.duration == pytest.approx((end - first) / SOURCE_FPS)
    facts = sample_media.movie_facts(compat, pathlib.Path(prepared.path))
    assert facts == {"frames": end - first, "width": 320, "height": 240, "fps": SOURCE_FPS}
    colours = sample_media.read_frame_colours(compat, pathlib.Path(prepared.path), tmp_path / "cut")
    source_colours = sample_media.read_frame_colours(compat, source_movie, tmp_path / "source")
    indices = [sample_media.frame_index(rgb) for rgb in colours]
    assert indices == list(range(first, end)), "first and last frames must be the source's a and b-1"
    for cut, source in zip(colours, source_colours[first:end], strict=True):
        # Codec noise only: a second tone mapping (AgX) would move these by tens of levels.
        assert max(abs(a - b) for a, b in zip(cut, source, strict=True)) <= PIXEL_NOISE, (cut, source)
    assert progress == [(done, end - first) for done in range(1, end - first + 1)]


def test_hold_offsets_are_honoured(compat, media, user_scene, source_movie, tmp_path):
    strip = add_movie(compat, user_scene, source_movie)
    strip.animation_offset_start = 3  # source frames 0-2 held out
    strip.animation_offset_end = 2
    strip.frame_offset_start = 4  # then 4 more frames trimmed: the strip starts at source frame 7

    prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"))

    expected = list(range(7, SOURCE_FRAMES - 2))
    assert prepared.frames == len(expected) == strip.frame_final_duration
    assert sample_media.read_frame_indices(compat, pathlib.Path(prepared.path), tmp_path / "frames") == expected


def test_strip_played_at_the_scene_rate_is_cut_in_source_frames(extension, compat, media, user_scene, source_movie,
                                                                tmp_path):
    """A 25 fps movie stretched over a 30 fps scene (as the artist's "Adjust Playback Rate" does)."""
    compat.set_scene_fps(user_scene, 30)
    strip = sample_media.add_stretched_movie(extension, user_scene, source_movie, frame_start=1, channel=1)
    assert strip.frame_final_duration == 30, "the operator should stretch 25 frames over 30"
    strip.frame_offset_start = 6  # 0.2 s: source frames 0-4
    strip.frame_offset_end = 6

    assert media.visible_seconds(strip, user_scene) == pytest.approx(0.6)
    prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"))

    assert (prepared.frames, prepared.fps) == (15, SOURCE_FPS)
    assert sample_media.read_frame_indices(compat, pathlib.Path(prepared.path), tmp_path / "frames") == \
        list(range(5, 20))


def test_frames_held_past_the_content_are_not_sent(compat, media, user_scene, source_movie, tmp_path):
    strip = add_movie(compat, user_scene, source_movie, frame_start=10)
    strip.frame_offset_start = -5  # the first frame held for 5 frames before the content
    strip.frame_offset_end = 10

    prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"))

    assert media.needs_cut(strip, user_scene)
    assert prepared.frames == 15 and media.visible_seconds(strip, user_scene) == pytest.approx(15 / SOURCE_FPS)
    assert sample_media.read_frame_indices(compat, pathlib.Path(prepared.path), tmp_path / "frames") == \
        list(range(15))


@pytest.mark.parametrize("suffix, cut", [(".mov", False), (".mkv", True)])
def test_only_mp4_and_mov_are_uploaded_untouched(compat, media, user_scene, media_dir, tmp_path, suffix, cut):
    movie = sample_media.make_movie(compat, media_dir / f"whole{suffix}", frames=8)
    strip = add_movie(compat, user_scene, movie)

    prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"))

    assert media.needs_cut(strip, user_scene) is cut
    assert prepared.is_source_file is not cut
    assert pathlib.Path(prepared.path).suffix == (".mp4" if cut else suffix)
    assert prepared.frames == 8


def test_preparation_leaves_the_scene_exactly_as_it_was(compat, media, user_scene, source_movie, tmp_path):
    user_scene.render.fps, user_scene.render.fps_base = 30, 1.001
    user_scene.frame_start, user_scene.frame_end, user_scene.frame_current = 3, 77, 12
    user_scene.render.resolution_x, user_scene.render.resolution_y = 1280, 720
    user_scene.render.filepath = "//renders/shot_"
    user_scene.view_settings.view_transform = "AgX"
    strip = add_movie(compat, user_scene, source_movie)
    strip.frame_offset_start, strip.frame_offset_end = 2, 3
    compat.new_effect(user_scene, "Backdrop", "COLOR", channel=1, frame_start=1, length=40)
    before = scene_snapshot(compat, user_scene)
    images_before = set(bpy.data.images.keys())

    media.prepare_video(strip, user_scene, str(tmp_path / "work"))

    assert scene_snapshot(compat, user_scene) == before
    # The render pipeline may create its own "Render Result"/"Viewer Node" images; nothing else.
    assert set(bpy.data.images.keys()) - images_before <= {"Render Result", "Viewer Node"}


@pytest.mark.parametrize("kind", ["COLOR", "TEXT"])
def test_a_strip_that_is_not_a_movie_is_refused(compat, media, user_scene, tmp_path, kind):
    strip = compat.new_effect(user_scene, "Title", kind, channel=1, frame_start=1, length=25)

    with pytest.raises(media.MediaError, match="choose a movie strip"):
        media.prepare_video(strip, user_scene, str(tmp_path))
    with pytest.raises(media.MediaError, match="choose a movie strip"):
        media.needs_cut(strip, user_scene)


def test_a_missing_movie_file_is_reported(compat, media, user_scene, source_movie, tmp_path):
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(source_movie.read_bytes())
    strip = add_movie(compat, user_scene, moved)
    moved.unlink()

    with pytest.raises(media.MediaError, match="missing"):
        media.prepare_video(strip, user_scene, str(tmp_path / "work"))


# --- The cut in a background Blender ----------------------------------------------------------------


def test_parse_cut_progress(media):
    assert media.parse_cut_progress("TALKING_FACE_PROGRESS 3 12") == pytest.approx(0.25)
    assert media.parse_cut_progress("TALKING_FACE_PROGRESS 12 12\n") == 1.0
    assert media.parse_cut_progress("Append frame 3") is None
    assert media.parse_cut_progress("TALKING_FACE_PROGRESS x 12") is None
    assert media.parse_cut_progress("TALKING_FACE_PROGRESS 1 0") is None


def test_cut_command_runs_the_script_that_cuts(compat, media, user_scene, source_movie, tmp_path, monkeypatch):
    """The background command line, run for real when a Blender program exists.

    The bpy wheel has none (``bpy.app.binary_path`` is empty), so there the script's own
    ``__main__`` path runs in this process with the command's arguments: the same code a
    background Blender would run, minus the process.
    """
    strip = add_movie(compat, user_scene, source_movie)
    strip.frame_offset_start, strip.frame_offset_end = 10, 5
    command, output = media.cut_video_command(strip, user_scene, str(tmp_path / "work"),
                                              blender=bpy.app.binary_path or "blender")

    separator = command.index("--")
    assert command[1:separator] == ["-b", "--factory-startup", "--python-exit-code", "1",
                                    "--python", str(media.CUT_SCRIPT)]
    assert media.CUT_SCRIPT.is_file() and media.CUT_SCRIPT.name == "cut_video.py"
    if media.background_cut_available():
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
    else:
        assert bpy.app.binary_path == "" and not media.background_cut_available()
        with pytest.raises(media.MediaError):
            media.cut_video_command(strip, user_scene, str(tmp_path / "work"))
        monkeypatch.setattr(sys, "argv", ["blender", *command[separator:]])
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(media.CUT_SCRIPT), run_name="__main__")
        assert exit_.value.code == 0, stdout.getvalue()
        lines = stdout.getvalue().splitlines()

    fractions = [fraction for fraction in map(media.parse_cut_progress, lines) if fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 10
    prepared = media.describe_video(output, is_source_file=False)
    assert prepared.frames == 10
    assert sample_media.read_frame_indices(compat, pathlib.Path(output), tmp_path / "frames") == list(range(10, 20))


# --- Audio ------------------------------------------------------------------------------------------
# Sound strips come from ``sound_strips.add_sound_strip``: ``new_sound`` where Blender has Audaspace,
# else pasted from a saved .blend, as they reach the 4.2 wheels. Cutting in other formats and
# without ``aud`` is tested in test_audio.py.


@pytest.mark.parametrize("hold_start, block_frames", [(0, 1 << 16), (5, 1 << 16), (5, 2000)])
def test_trimmed_sound_strip_is_cut_to_its_visible_samples(compat, media, user_scene, ramp_wav, tmp_path,
                                                          monkeypatch, hold_start, block_frames):
    """Duration within a frame, and the very samples the strip plays (read in blocks or at once)."""
    fps = 25
    monkeypatch.setattr(importlib.import_module(media.__name__.replace(".media", ".cut_audio")),
                        "BLOCK_FRAMES", block_frames)
    compat.set_scene_fps(user_scene, fps)
    strip = sound_strips.add_sound_strip(compat, user_scene, "Voice", ramp_wav, channel=3, frame_start=10)
    strip.animation_offset_start = hold_start
    strip.frame_offset_start = 10  # 0.4 s further into the file
    strip.frame_offset_end = 20
    visible = strip.frame_final_duration / fps

    assert media.visible_seconds(strip, user_scene) == pytest.approx(visible)
    prepared = media.prepare_audio_strip(strip, user_scene, str(tmp_path / "work"))

    assert not prepared.is_source_file and prepared.path.endswith(".wav")
    assert abs(prepared.duration - visible) < 1 / fps
    samples, rate = sample_media.wav_samples(prepared.path)
    first = round((hold_start + 10) / fps * rate)
    assert rate == sample_media.RAMP_RATE and len(samples) == round(visible * rate)
    # Each sample holds its index in the file: a WAV is cut by the stdlib, exact to the sample.
    assert list(samples) == list(range(first, first + len(samples)))


def test_sound_offset_moves_the_cut_within_the_file(compat, media, user_scene, ramp_wav, tmp_path):
    compat.set_scene_fps(user_scene, 25)
    strip = sound_strips.add_sound_strip(compat, user_scene, "Voice", ramp_wav, channel=3, frame_start=1)
    if not hasattr(strip, "sound_offset"):
        pytest.skip("sound strips have no sound_offset before Blender 4.5: nothing to test here")
    strip.sound_offset = 0.5
    strip.frame_offset_end = 25

    prepared = media.prepare_audio_strip(strip, user_scene, str(tmp_path / "work"))

    samples, rate = sample_media.wav_samples(prepared.path)
    assert samples[0] == 0.5 * rate, "the strip plays the file from 0.5 s"


def test_whole_sound_strip_is_uploaded_as_its_file(compat, media, user_scene, ramp_wav, tmp_path):
    compat.set_scene_fps(user_scene, 25)
    strip = sound_strips.add_sound_strip(compat, user_scene, "Voice", ramp_wav, channel=3, frame_start=1)

    assert not media.audio_needs_cut(strip)
    prepared = media.prepare_audio_strip(strip, user_scene, str(tmp_path / "work"))

    assert pathlib.Path(prepared.path) == ramp_wav and prepared.is_source_file
    assert prepared.duration == pytest.approx(3.0)


def test_packed_sound_is_written_out_first(compat, media, user_scene, media_dir, tmp_path):
    wav = sample_media.write_ramp_wav(media_dir / "packed.wav", seconds=3.0)
    compat.set_scene_fps(user_scene, 25)
    strip = sound_strips.add_sound_strip(compat, user_scene, "Packed", wav, channel=3, frame_start=1)
    strip.sound.pack()
    wav.unlink()
    strip.frame_offset_end = 50

    assert media.audio_needs_cut(strip), "a packed sound has no file of its own to upload"
    prepared = media.prepare_audio_strip(strip, user_scene, str(tmp_path / "work"))

    assert pathlib.Path(prepared.path).parent == tmp_path / "work"
    assert abs(prepared.duration - 1.0) < 1 / 25
    assert list(sample_media.wav_samples(prepared.path)[0]) == list(range(sample_media.RAMP_RATE))


def test_audio_file_is_uploaded_as_it_is(media, ramp_wav):
    prepared = media.prepare_audio_file(str(ramp_wav))

    assert prepared.is_source_file and prepared.duration == pytest.approx(3.0)
    assert media.audio_file_seconds(str(ramp_wav)) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def talking_movie(compat: ModuleType, media_dir: pathlib.Path) -> pathlib.Path:
    """2 s of colour-coded frames with a 440 Hz tone muxed in by ffmpeg (Blender cannot mux sound without Audaspace)."""
    wav = sample_media.write_sine_wav(media_dir / "sine.wav", seconds=2.0)
    picture = sample_media.make_movie(compat, media_dir / "talking_picture.mp4", frames=50)
    movie = media_dir / "talking.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(picture), "-i", str(wav), "-map", "0:v", "-map", "1:a",
                    "-c:v", "copy", "-c:a", "aac", str(movie)], check=True)
    return movie


def test_movie_own_sound_over_its_visible_range(compat, media, user_scene, tmp_path, talking_movie, source_movie):
    strip = add_movie(compat, user_scene, talking_movie)
    strip.frame_offset_start, strip.frame_offset_end = 10, 15  # 25 frames = 1.0 s shown
    silent = add_movie(compat, user_scene, source_movie, frame_start=200)

    assert media.movie_has_audio(strip) and not media.movie_has_audio(silent)
    with pytest.raises(media.MediaError, match="has no sound"):
        media.prepare_movie_audio(silent, user_scene, str(tmp_path / "work"))
    if not compat.has_audio_support():
        with pytest.raises(media.MediaError, match=r"^This Blender build cannot decode MP4 sound .* WAV"):
            media.prepare_movie_audio(strip, user_scene, str(tmp_path / "work"))
        return
    prepared = media.prepare_movie_audio(strip, user_scene, str(tmp_path / "work"))

    assert abs(prepared.duration - 1.0) < 1 / 25
