"""Issue 11's edit: twelve shots of mixed sizes and rates, each with its dialogue on channel 1.

Shared by the in-process batch test (``test_batch_edit.py``) and the crash-and-reopen
sessions (``recovery_child.py batch``). The shots are ffmpeg's ``testsrc2`` (moving, coloured,
with the frame number burnt in), under a second each, so twelve cost a few seconds to make,
cut and send; every other shot is trimmed at its start, so its first visible frame is not its
first frame. The dialogues are sine WAVs of different lengths, each starting a frame after its
shot and ending inside it.

The oracles for a placed result are ffprobe's (its frames and rate, the dialogue's length),
never the extension's own measurements.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
from types import ModuleType
from typing import Any

import bpy
import edit_shots
import sample_media
from edit_shots import (
    DIALOGUE_CHANNEL,
    SCENE_FPS,
    SHOT_CHANNEL,
    dialogue_seconds,
    line_name,
    shot_name,
    shot_start,
)
from sample_media import Footage

TRIM = 2  # source frames hidden at the start of every odd shot
SHOTS = tuple(Footage(name, size, rate, frames) for name, size, rate, frames in edit_shots.SHOTS)


def make_media(folder: pathlib.Path, *, at_scene_rate: bool = False) -> list[dict[str, str]]:
    """Per shot, its movie and its dialogue (as plain paths: a child session gets them as JSON).

    ``at_scene_rate``: the same sizes and lengths in seconds, all at the scene's rate. For the
    killed-batch session, whose queue the sandbox holds still: a result of another rate waits
    for the running jobs' threads to end before ``movie_strip_add`` places it (that operator crashed
    bpy while they ran: ``compat.overridden_operator_must_wait``), and a held queue would hold
    those placements too. ``test_results_of_other_rates_placed_while_shots_upload_do_not_crash_blender``
    and the GUI lane place every rate.
    """
    clips = [dataclasses.replace(clip, name=f"{clip.name}_at_{SCENE_FPS}", rate=str(SCENE_FPS),
                                 frames=round(clip.frames / clip.fps * SCENE_FPS)) for clip in SHOTS] \
        if at_scene_rate else SHOTS
    return [{"movie": str(sample_media.make_footage(clip, folder)),
             "line": str(sample_media.write_sine_wav(folder / f"line{index:02d}.wav", dialogue_seconds(index)))}
            for index, clip in enumerate(clips)]


def build_edit(compat: ModuleType, media: list[dict[str, str]], name: str = "Batch edit") -> bpy.types.Scene:
    """The edit in a new scene shown in the window, with the twelve shots selected."""
    import sound_strips

    scene = bpy.data.scenes.new(name)
    compat.set_scene_fps(scene, SCENE_FPS)
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    for index, files in enumerate(media):
        strip = compat.new_movie(scene, shot_name(index), files["movie"], channel=SHOT_CHANNEL,
                                 frame_start=shot_start(index))
        if index % 2:
            strip.frame_offset_start = TRIM
        sound_strips.add_sound_strip(compat, scene, line_name(index), pathlib.Path(files["line"]),
                                     channel=DIALOGUE_CHANNEL, frame_start=strip.frame_final_start + 1)
    for strip in compat.all_strips(scene):
        strip.select = strip.name.startswith("Shot")
    scene.frame_start, scene.frame_end = 1, shot_start(len(media))
    scene.talking_face.regenerate = True  # every run pays for its own jobs: nothing reused from another
    return scene


def probe_seconds(path: str, stream: str) -> float:
    """ffprobe's duration of the first ``stream`` ("v" or "a") of a file: frames ÷ rate for video."""
    sample_media.require_ffmpeg()
    entries = "stream=nb_read_frames,r_frame_rate" if stream == "v" else "stream=duration"
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{stream}:0", "-count_frames",
                           "-show_entries", entries, "-of", "json", path],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ffprobe {path} failed: {done.stderr}"
    [found] = json.loads(done.stdout)["streams"]
    if stream == "a":
        return float(found["duration"])
    numerator, _, denominator = found["r_frame_rate"].partition("/")
    return int(found["nb_read_frames"]) * int(denominator or 1) / int(numerator)


def placed_facts(compat: ModuleType, scene: bpy.types.Scene) -> dict[str, dict[str, Any]]:
    """Per job id, what the timeline shows of its result: for the movie and the sound strip, start,
    length, channel and file; plus the source it was placed above (as plain data, for a child's report)."""
    facts: dict[str, dict[str, Any]] = {}
    for strip in compat.all_strips(scene):
        job_id = strip.get("talking_face_job")
        if not job_id:
            continue
        kind = "movie" if compat.is_movie(strip) else "sound"
        owner = strip if kind == "movie" else strip.sound
        facts.setdefault(job_id, {"movie": [], "sound": []})[kind].append({
            "start": strip.frame_final_start, "length": strip.frame_final_duration, "channel": strip.channel,
            "file": bpy.path.abspath(owner.filepath)})
    return facts


def shots_on_timeline(compat: ModuleType, scene: bpy.types.Scene) -> dict[str, dict[str, int]]:
    return {strip.name: {"start": strip.frame_final_start, "channel": strip.channel}
            for strip in compat.all_strips(scene) if strip.name.startswith("Shot")}


def in_sync_problems(placed: dict[str, Any], shot: dict[str, int], *, with_sound: bool,
                     fps: float = SCENE_FPS) -> list[str]:
    """What is off in one job's placed result (an empty list: one movie, and one sound where the build
    can add sound strips, in sync)."""
    problems = []
    sounds = 1 if with_sound else 0  # Blender without Audaspace (the bpy 4.2 wheel) places no sound strip
    if len(placed["movie"]) != 1 or len(placed["sound"]) != sounds:
        return [f"{len(placed['movie'])} movie and {len(placed['sound'])} sound strips, not 1 and {sounds}"]
    [movie] = placed["movie"]
    if movie["channel"] <= shot["channel"]:
        problems.append(f"the result is on channel {movie['channel']}, not above its shot's {shot['channel']}")
    if movie["start"] != shot["start"]:
        problems.append(f"starts on {movie['start']}, its shot's first visible frame is {shot['start']}")
    picture = round(probe_seconds(movie["file"], "v") * fps)
    if abs(movie["length"] - picture) > 1:
        problems.append(f"the picture lasts {movie['length']} frames, its file {picture} at {fps} fps")
    for sound in placed["sound"]:
        if sound["start"] != shot["start"]:
            problems.append(f"the sound starts on {sound['start']}, the picture on {shot['start']}")
        speech = round(probe_seconds(sound["file"], "a") * fps)
        if abs(sound["length"] - speech) > 1:
            problems.append(f"the sound lasts {sound['length']} frames, its file {speech} at {fps} fps")
    return problems
