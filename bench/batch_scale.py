"""Row 6: a 500-shot batch against the sandbox, ``talking_face_batch`` vs the command line's batch.

Ours: Blender (the ``bpy`` module, background mode, as a render-farm node or a pipeline
script runs it) opens an edit of ``SHOTS`` shots, each a movie strip with its dialogue's
sound strip overlapping it on channel 1, selects them all and runs
``bpy.ops.sequencer.talking_face_batch(audio='OVERLAP', audio_channel=1)``: every shot
prepared, uploaded, submitted, polled, downloaded and placed above itself. Its wall time
is the operator's call; its memory growth is the process's peak resident size (``VmHWM``,
reset first) over its resident size just before the call.

Blender itself keeps an open decoder per movie strip (about 4 MB each in bpy 5.0), so
``FLOOR_STRIPS`` strips of the same results are then added with ``strips.new_movie`` alone, in a
scene of their own: that cost per strip, times the shots, is Blender's share of the growth; the
rest is the extension's (records, sound strips, what a shot leaves behind).

The reference: ``python -m newport_api batch MANIFEST`` over the same movies and WAVs
(the same bytes Blender sends: the shots are untrimmed, the sounds start with their shots),
its default three jobs at a time. Both talk to one sandbox in this process, which answers
each task at its first poll (no poll interval in either time), and whose request log
counts the submits of each side: exactly ``SHOTS`` each, or the row fails.

The media are tiny (64×64, 0.4 s) and all distinct (ffmpeg's segment muxer cuts one
``testsrc2`` run into ``SHOTS`` clips; every WAV has its own pitch), so no upload is
reused from another shot and the run takes a couple of minutes.
"""

from __future__ import annotations

import array
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    REPO_ROOT,
    BenchError,
    Child,
    Row,
    child_env,
    display_command,
    memory_kib,
    ratio_text,
    remember,
    reset_peak,
    say,
    serve_requests,
    settle_disk,
)

SHOTS = 500
SHOT_FRAMES = 10  # at 25 fps: 0.4 s
SHOT_GAP = 20  # frames between shot starts on the timeline
SCENE_FPS = 25
LINE_SECONDS = 0.32  # each dialogue: shorter than its shot, whole frames at 25 fps
FLOOR_STRIPS = 50  # movie strips added with the data API alone: Blender's own cost of one
CLI_PARALLEL = 3  # the command line's default, and the add-on's default max_parallel_jobs
MB = 1000 * 1000


# -- the media ---------------------------------------------------------------------------------------


def make_media(folder: Path, count: int = SHOTS) -> list[dict[str, str]]:
    """``count`` distinct tiny movies (one ffmpeg run) and as many distinct WAVs."""
    folder.mkdir(parents=True, exist_ok=True)
    segment_seconds = SHOT_FRAMES / SCENE_FPS
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
               f"testsrc2=size=64x64:rate={SCENE_FPS}", "-frames:v", str(count * SHOT_FRAMES),
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(SHOT_FRAMES),
               "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds})", "-f", "segment",
               "-segment_time", str(segment_seconds), "-reset_timestamps", "1", str(folder / "shot%03d.mp4")]
    remember(display_command(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"ffmpeg could not make the shots: {done.stderr[-500:]}")
    movies = sorted(folder.glob("shot*.mp4"))[:count]
    if len(movies) != count:
        raise BenchError(f"ffmpeg made {len(movies)} shots, not {count}")
    return [{"movie": str(movie), "line": str(write_line(folder / f"line{index:03d}.wav", index))}
            for index, movie in enumerate(movies)]


def write_line(path: Path, index: int, rate: int = 16000) -> Path:
    pitch = 200 + index  # every line its own content, so no upload is shared between shots
    samples = array.array("h", (round(6000 * math.sin(2 * math.pi * pitch * i / rate))
                                for i in range(round(LINE_SECONDS * rate))))
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return path


# -- inside Blender ----------------------------------------------------------------------------------


class BatchBench:
    def __init__(self, base_url: str) -> None:
        from in_blender import part, start_blender

        self.bpy, extension, _ = start_blender()
        self.compat = part(extension, "operators.compat")
        self.controller = part(extension, "operators.controller")
        self.work = Path(tempfile.mkdtemp(prefix="talking_face_bench_batch_"))
        prefs = self.bpy.context.preferences.addons[extension.__name__].preferences
        prefs.api_key, prefs.base_url, prefs.output_dir = API_KEY, base_url, str(self.work / "results")

    def edit(self, shots: list[dict[str, str]]) -> Any:
        bpy, compat = self.bpy, self.compat
        scene = bpy.data.scenes.new("Batch bench")
        compat.set_scene_fps(scene, SCENE_FPS)
        bpy.context.window.scene = scene
        compat.ensure_editor(scene)
        for index, shot in enumerate(shots):
            start = 1 + index * SHOT_GAP
            compat.new_movie(scene, f"Shot {index:03d}", shot["movie"], channel=2, frame_start=start).select = True
            compat.new_sound(scene, f"Line {index:03d}", shot["line"], channel=1, frame_start=start).select = False
        scene.frame_start, scene.frame_end = 1, len(shots) * SHOT_GAP
        scene.talking_face.regenerate = True
        return scene

    def batch(self, shots: list[dict[str, str]]) -> dict[str, Any]:
        scene = self.edit(shots)
        reset_peak()
        before_kib = memory_kib("VmRSS")
        started = time.monotonic()
        try:
            result = self.bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1)
            error = ""
        except RuntimeError as failure:  # the operator reports failed shots as an error
            result, error = {"CANCELLED"}, str(failure)
        seconds = time.monotonic() - started
        growth = (memory_kib("VmHWM") - before_kib) * 1024
        views = self.controller.get_controller().views.values()
        results = {strip.get("talking_face_job"): self.bpy.path.abspath(strip.filepath)
                   for strip in self.compat.all_strips(scene)
                   if strip.get("talking_face_job") and self.compat.is_movie(strip)}
        done = sum(1 for record in views if record.phase.value == "done")
        per_strip = self.movie_strip_cost(sorted(results.values())[:FLOOR_STRIPS])
        print(f"[bench] batch: {len(shots)} shots in {seconds:.1f} s, {done} done, {len(results)} placed, "
              f"memory +{growth / MB:.1f} MB; a movie strip alone costs {per_strip / MB:.1f} MB", flush=True)
        return {"result": sorted(result), "error": error[:500], "seconds": seconds, "growth": growth,
                "done": done, "placed": len(results), "movie_strip_bytes": per_strip}

    def movie_strip_cost(self, movies: list[str]) -> float:
        """Resident bytes one movie strip adds by itself (``strips.new_movie``, nothing of ours)."""
        scene = self.bpy.data.scenes.new("Movie strip cost")
        self.compat.ensure_editor(scene)
        before_kib = memory_kib("VmRSS")
        for index, movie in enumerate(movies):
            self.compat.new_movie(scene, f"strip {index}", movie, channel=1 + index % 100, frame_start=1)
        return (memory_kib("VmRSS") - before_kib) * 1024 / max(1, len(movies))

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    bench = BatchBench(sys.argv[1])
    try:
        serve_requests({"batch": bench.batch})
    finally:
        bench.close()
    return 0


# -- in the orchestrator -----------------------------------------------------------------------------


def cli_batch(base_url: str, shots: list[dict[str, str]], work: Path) -> tuple[float, int]:
    """The command line's batch over the same inputs: wall time from spawn to exit, and its peak RSS."""
    (work / "cli_results").mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps([{"video": shot["movie"], "audio": shot["line"],
                                     "output": str(work / "cli_results" / f"shot{index:03d}.mp4")}
                                    for index, shot in enumerate(shots)]))
    command = [sys.executable, "-m", "newport_api", "--base-url", base_url, "--state-dir", str(work / "cli_state"),
               "batch", str(manifest), "--parallel", str(CLI_PARALLEL)]
    remember(f"python -m newport_api --base-url $SANDBOX --state-dir $TMP/cli_state batch $TMP/manifest.json "
             f"--parallel {CLI_PARALLEL}")
    settle_disk()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=str(REPO_ROOT), env=child_env(NEWPORT_API_KEY=API_KEY))
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"the command line's batch failed:\n{output[-2000:]}")
    return seconds, usage.ru_maxrss * 1024


def measure(work: Path, count: int = SHOTS) -> list[Row]:
    from newport_api.sandbox import Sandbox

    shots = make_media(work / "batch_media", count)
    with (Sandbox(processing_seconds=0, storage_dir=work / "batch_storage") as sandbox,
          Child("batch_scale", "batch_scale.py", sandbox.base_url) as child):
        settle_disk()
        ours = child.request("batch", shots=shots)
        our_submits = sandbox.count("submit")
        cli_seconds, cli_peak = cli_batch(sandbox.base_url, shots, work)
        cli_submits = sandbox.count("submit") - our_submits
    say(f"batch: ours {ours['seconds']:.1f} s ({our_submits} submits), the CLI {cli_seconds:.1f} s "
        f"({cli_submits} submits)")
    return rows(count, ours, our_submits, cli_seconds, cli_submits, cli_peak)


def rows(count: int, ours: dict[str, Any], our_submits: int, cli_seconds: float, cli_submits: int,
         cli_peak: int) -> list[Row]:
    exact = our_submits == count and cli_submits == count and ours["placed"] == count and not ours["error"]
    per_shot = ours["seconds"] / count * 1000
    time_row = Row(
        f"6. {count}-shot batch: talking_face_batch in background mode, press to every shot placed",
        f"{ours['seconds']:.1f} s ({per_shot:.0f} ms a shot, one at a time); {our_submits} submits, "
        f"{ours['placed']} placed{'; ' + ours['error'][:120] if ours['error'] else ''}",
        f"python -m newport_api batch, {CLI_PARALLEL} at a time: {cli_seconds:.1f} s; {cli_submits} submits",
        ratio_text(ours["seconds"] / cli_seconds), f"exactly {count} submits each, every shot placed", exact)
    blender_share = ours["movie_strip_bytes"] * ours["placed"]
    memory_row = Row(
        f"6. memory growth, {count}-shot batch",
        f"+{ours['growth'] / MB:.0f} MB (peak VmHWM over VmRSS before the batch), of which Blender's own "
        f"{blender_share / MB:.0f} MB ({ours['movie_strip_bytes'] / MB:.1f} MB per movie strip, measured on "
        f"{FLOOR_STRIPS} added alone) and the rest, {(ours['growth'] - blender_share) / MB:.0f} MB, the extension's",
        f"the CLI's whole process: {cli_peak / MB:.0f} MB peak", "—", "info", None)
    return [time_row, memory_row]


if __name__ == "__main__":
    sys.exit(main())
