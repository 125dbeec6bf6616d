"""Row 3: preparing a trimmed range, ``operators.media.prepare_video`` against the ffmpeg command line.

Inside a bpy venv with the extension installed from the zip, a movie strip of the
cached 90 s 1920×1080 clip is trimmed to show 10 s, then 60 s, starting at source
frame ``FIRST`` (not on a keyframe), and ``prepare_video`` cuts it (in this process:
what background mode does; a window's Generate runs the same cut in a background
Blender, which adds Blender's start-up, measured separately as a fresh ``import bpy``).
The reference re-encodes the same range: ``ffmpeg -ss … -frames:v N -c:v libx264
-preset medium -crf 18``.  The 10 s cut runs three times each, alternating (ffmpeg,
ours, ours, ffmpeg, ffmpeg, ours), and medians count; the 60 s cut runs once each.  Each
side's CPU time (user + system, all threads) is shown too: on a shared machine it
moves much less than wall time.

Checks, untimed, with ffprobe/ffmpeg: each output's frame count, and which source
frames its first and last frames are (the closest of the expected frame and its two
neighbours, on 320×180 grey thumbnails: every frame of the clip differs from the
next); for the 10 s cuts, the PSNR against the source range in RGB, each file decoded
per its own colour tags.  Finally an untrimmed .mp4 strip must cost no encode at all:
``prepare_video`` hands back the source file itself, byte for byte.

Where the PSNR gap goes (``gap_rows``): ffmpeg itself, at the same -crf 18, is made to
take the path Blender's sequencer takes — decode to 8-bit RGB and encode from it — first
keeping the source's colour matrix (untagged, read as BT.601), then encoding and tagging
BT.709 as Blender 4.5+ does. Measured on a 1080p testsrc2+noise clip (50 frames): direct
46.7 dB; RGB round trip 42.4 dB (-4.2: chroma up- and down-sampling and 8-bit rounding);
round trip to BT.709 40.8 dB (-1.6 more); even a lossless encode after the round trip
only reaches 44.9 / 42.6 dB. Blender's cut: 40.9 dB at crf 20 ("HIGH"), 42.0 dB at
crf 17 ("PERC_LOSSLESS", now used). Within 0.5 dB of ffmpeg needs a cut that never
leaves YUV (copying whole GOPs and re-encoding only the edges), which Blender's
render pipeline cannot do.
"""

from __future__ import annotations

import hashlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    Child,
    Row,
    display_command,
    listed,
    median,
    ratio_text,
    run_timed,
    say,
    seconds_text,
)
from fixtures import FPS

FIRST = 512  # source frame index where both trimmed ranges start (20.48 s)
CUTS = (("10 s", 250), ("60 s", 1500))
THUMB = (320, 180)
GOAL_RATIO = 1.0
STARTUP_RUNS = 3


# -- inside Blender ----------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system time of this process, all its threads (the encoder's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CutBench:
    def __init__(self) -> None:
        from in_blender import part, start_blender

        self.bpy, extension, _ = start_blender()
        self.compat = part(extension, "operators.compat")
        self.media = part(extension, "operators.media")
        self.scene = self.bpy.data.scenes.new("Cut bench")
        self.compat.set_scene_fps(self.scene, FPS)
        self.compat.ensure_editor(self.scene)
        self.channel = 0

    def strip(self, movie: str) -> Any:
        self.channel += 1
        return self.compat.new_movie(self.scene, f"take {self.channel}", movie, channel=self.channel,
                                     frame_start=1)

    def prepare(self, strip: Any, work_dir: str) -> dict[str, Any]:
        started, cpu = time.monotonic(), cpu_seconds()
        prepared = self.media.prepare_video(strip, self.scene, work_dir)
        seconds, cpu = time.monotonic() - started, cpu_seconds() - cpu
        print(f"[bench] prepare_video: {prepared.frames} frames in {seconds:.2f} s", flush=True)
        return {"seconds": seconds, "cpu": cpu, "path": prepared.path, "frames": prepared.frames,
                "is_source_file": prepared.is_source_file, "sha256": prepared.sha256}

    def cut(self, movie: str, first: int, frames: int, work_dir: str) -> dict[str, Any]:
        strip = self.strip(movie)
        strip.frame_offset_start = first
        strip.frame_offset_end = strip.frame_duration - first - frames
        return self.prepare(strip, work_dir)

    def untrimmed(self, movie: str, work_dir: str) -> dict[str, Any]:
        return self.prepare(self.strip(movie), work_dir)


def main() -> int:
    from common import serve_requests

    bench = CutBench()
    serve_requests({"cut": bench.cut, "untrimmed": bench.untrimmed})
    return 0


# -- checks with ffprobe and ffmpeg ------------------------------------------------------------------


def frame_count(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def thumbnails(path: Path, indices: list[int]) -> dict[int, bytes]:
    """Grey thumbnails of the frames at ``indices`` (in presentation order), in one decoding pass."""
    wanted = sorted(set(indices))
    select = "+".join(f"eq(n\\,{index})" for index in wanted)
    graph = f"select='{select}',scale={THUMB[0]}:{THUMB[1]},format=gray"
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", graph, "-fps_mode", "passthrough",
                           "-f", "rawvideo", "-"], capture_output=True, check=True)
    size = THUMB[0] * THUMB[1]
    if len(done.stdout) != size * len(wanted):
        raise BenchError(f"could not decode frames {wanted} of {path}")
    return {index: done.stdout[n * size:(n + 1) * size] for n, index in enumerate(wanted)}


def distance(one: bytes, other: bytes) -> float:
    return sum((a - b) ** 2 for a, b in zip(one, other, strict=True)) / len(one)


def closest(frame: bytes, source: dict[int, bytes], expected: int) -> int:
    candidates = [index for index in (expected - 1, expected, expected + 1) if index in source]
    return min(candidates, key=lambda index: distance(frame, source[index]))


def rgb_psnr(path: Path, source: Path, first: int, frames: int) -> float:
    """Average PSNR in RGB against the source range, each decoded per its own colour tags."""
    to_rgb = "setpts=PTS-STARTPTS,scale=in_range=auto:out_range=pc,format=gbrp"
    graph = (f"[1:v]trim=start_frame={first}:end_frame={first + frames},{to_rgb}[ref];"
             f"[0:v]{to_rgb}[cut];[cut][ref]psnr")
    done = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-i", str(source), "-lavfi", graph,
                           "-f", "null", "-"], capture_output=True, text=True, check=True)
    match = re.search(r"PSNR r:[\d.]+ g:[\d.]+ b:[\d.]+ average:([\d.inf]+)", done.stderr)
    if match is None:
        raise BenchError(f"no PSNR for {path}:\n{done.stderr[-500:]}")
    return float(match.group(1))


@dataclass(frozen=True)
class Exactness:
    frames: int
    first: int
    last: int

    def text(self) -> str:
        return f"{self.frames} frames, first = source #{self.first}, last = #{self.last}"


def exactness(path: Path, source_frames: dict[int, bytes], first: int, frames: int) -> Exactness:
    count = frame_count(path)
    own = thumbnails(path, [0, count - 1])
    return Exactness(count, closest(own[0], source_frames, first),
                     closest(own[count - 1], source_frames, first + count - 1))


# -- in the orchestrator -----------------------------------------------------------------------------


@dataclass
class Cut:
    label: str
    frames: int
    ours: list[float]
    ffmpeg: list[float]
    ours_cpu: list[float]
    ffmpeg_cpu: list[float]
    ours_exact: Exactness
    ffmpeg_exact: Exactness
    ours_size: int
    ffmpeg_size: int
    ours_psnr: float | None = None
    ffmpeg_psnr: float | None = None


class PrepareBench:
    def __init__(self, child: Child, movie: Path, work: Path) -> None:
        self.child = child
        self.movie = movie
        self.work = work
        needed = [index for _, frames in CUTS for index in (FIRST, FIRST + frames - 1)]
        self.source_frames = thumbnails(movie, [i + d for i in needed for d in (-1, 0, 1)])

    def ffmpeg_cut(self, frames: int, run: int) -> tuple[float, float, Path]:
        output = self.work / f"ffmpeg_{frames}_{run}.mp4"
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{FIRST / FPS:g}", "-i",
                   self.movie, "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "medium",
                   "-crf", "18"]
        timed = run_timed([*command, output], label=display_command([*command, "$TMP/cut.mp4"]))
        say(f"prepare: ffmpeg cut {frames} frames in {timed.seconds:.2f} s")
        return timed.seconds, timed.cpu_seconds, output

    def ours_cut(self, frames: int, run: int) -> tuple[float, float, Path]:
        work_dir = self.work / f"ours_{frames}_{run}"
        answer = self.child.request("cut", movie=str(self.movie), first=FIRST, frames=frames,
                                    work_dir=str(work_dir))
        return answer["seconds"], answer["cpu"], Path(answer["path"])

    def measure_cut(self, label: str, frames: int, alternate: bool) -> Cut:
        ffmpeg_runs = [self.ffmpeg_cut(frames, 0)]
        ours_runs = [self.ours_cut(frames, 0)]
        if alternate:
            ours_runs.append(self.ours_cut(frames, 1))
            ffmpeg_runs += [self.ffmpeg_cut(frames, 1), self.ffmpeg_cut(frames, 2)]
            ours_runs.append(self.ours_cut(frames, 2))
        ours_out, ffmpeg_out = ours_runs[0][2], ffmpeg_runs[0][2]
        cut = Cut(label, frames, [run[0] for run in ours_runs], [run[0] for run in ffmpeg_runs],
                  [run[1] for run in ours_runs], [run[1] for run in ffmpeg_runs],
                  exactness(ours_out, self.source_frames, FIRST, frames),
                  exactness(ffmpeg_out, self.source_frames, FIRST, frames),
                  ours_out.stat().st_size, ffmpeg_out.stat().st_size)
        if alternate:
            cut.ours_psnr = rgb_psnr(ours_out, self.movie, FIRST, frames)
            cut.ffmpeg_psnr = rgb_psnr(ffmpeg_out, self.movie, FIRST, frames)
        return cut

    def untrimmed(self) -> tuple[dict[str, Any], float, bool]:
        answer = self.child.request("untrimmed", movie=str(self.movie), work_dir=str(self.work / "untrimmed"))
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", self.movie, "-c", "copy"]
        remux = run_timed([*command, self.work / "remux.mp4"],
                          label=display_command([*command, "$TMP/remux.mp4"]))
        digest = hashlib.sha256(self.movie.read_bytes()).hexdigest()
        identical = (answer["is_source_file"] and Path(answer["path"]) == self.movie
                     and answer["sha256"] == digest and not any(self.work.glob("untrimmed/*")))
        return answer, remux.seconds, identical


def ffmpeg_round_trip_psnr(movie: Path, work: Path, label: str, to_rgb_and_back: str, tags: list[str]) -> float:
    """ffmpeg's -crf 18 cut of the 10 s range, made through ``to_rgb_and_back``: its RGB PSNR vs the source."""
    output = work / f"round_trip_{label}.mp4"
    frames = CUTS[0][1]
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{FIRST / FPS:g}", "-i", movie,
                    "-frames:v", str(frames), "-an", "-vf", to_rgb_and_back, "-c:v", "libx264", "-preset", "medium",
                    "-crf", "18", *tags, output], check=True)
    return rgb_psnr(output, movie, FIRST, frames)


def gap_rows(movie: Path, work: Path, cut: Cut) -> list[Row]:
    """The reference tool forced through Blender's path: how much of the PSNR gap each step costs."""
    bt709 = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    same_matrix = ffmpeg_round_trip_psnr(movie, work, "same", "format=rgb24,format=yuv420p", [])
    to_709 = ffmpeg_round_trip_psnr(
        movie, work, "bt709", "format=rgb24,scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", bt709)
    direct = cut.ffmpeg_psnr or 0.0
    return [Row(f"3. {cut.label} cut, PSNR gap: ffmpeg through 8-bit RGB (same matrix)", f"{same_matrix:.1f} dB",
                f"ffmpeg direct: {direct:.1f} dB", f"{same_matrix - direct:+.1f} dB", "—", None),
            Row(f"3. {cut.label} cut, PSNR gap: ffmpeg through 8-bit RGB, re-tagged BT.709", f"{to_709:.1f} dB",
                f"ffmpeg direct: {direct:.1f} dB", f"{to_709 - direct:+.1f} dB", "—", None)]


def blender_startup() -> float:
    """A fresh process importing bpy: what a background cut pays before its first frame."""
    command = [sys.executable, "-c", "import bpy"]
    return median([run_timed(command, record=False).seconds for _ in range(STARTUP_RUNS)])


def measure(movie: Path) -> list[Row]:
    startup = blender_startup()
    work = Path(tempfile.mkdtemp(prefix="talking_face_bench_cut_"))
    try:
        with Child("prepare_cut", "prepare_cut.py") as child:
            bench = PrepareBench(child, movie, work)
            cuts = [bench.measure_cut(label, frames, alternate=frames <= 250) for label, frames in CUTS]
            untrimmed = bench.untrimmed()
        gaps = gap_rows(movie, work, cuts[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [row for cut in cuts for row in cut_rows(cut)] + gaps
    rows.append(startup_row(cuts[0], startup))
    rows.append(untrimmed_row(*untrimmed))
    return rows


def startup_row(cut: Cut, startup: float) -> Row:
    ours, ffmpeg = startup + median(cut.ours), median(cut.ffmpeg)
    return Row(f"3. {cut.label} cut incl. Blender start-up (a background cut)",
               f"{seconds_text(ours)} (start-up {seconds_text(startup)}, median of {STARTUP_RUNS})",
               f"ffmpeg: {seconds_text(ffmpeg)}", ratio_text(ours / ffmpeg), f"≤ {GOAL_RATIO:.1f}×",
               ours / ffmpeg <= GOAL_RATIO)


def cut_rows(cut: Cut) -> list[Row]:
    ours, ffmpeg = median(cut.ours), median(cut.ffmpeg)
    ours_cpu, ffmpeg_cpu = median(cut.ours_cpu), median(cut.ffmpeg_cpu)
    rows = [Row(f"3. {cut.label} cut at 1080p ({cut.frames} frames), wall time",
                f"{seconds_text(ours)} ({listed(cut.ours, 1)}; CPU {ours_cpu:.1f} s; "
                f"{cut.ours_size / 1e6:.1f} MB)",
                f"ffmpeg -preset medium -crf 18: {seconds_text(ffmpeg)} ({listed(cut.ffmpeg, 1)}; "
                f"CPU {ffmpeg_cpu:.1f} s; {cut.ffmpeg_size / 1e6:.1f} MB)",
                f"{ratio_text(ours / ffmpeg)} (CPU {ratio_text(ours_cpu / ffmpeg_cpu)})",
                f"≤ {GOAL_RATIO:.1f}×", ours / ffmpeg <= GOAL_RATIO)]
    expected = Exactness(cut.frames, FIRST, FIRST + cut.frames - 1)
    rows.append(Row(f"3. {cut.label} cut, frame-exact", cut.ours_exact.text(),
                    f"ffmpeg: {cut.ffmpeg_exact.text()}", "—", f"exact: {expected.text()}",
                    cut.ours_exact == expected))
    if cut.ours_psnr is not None and cut.ffmpeg_psnr is not None:
        rows.append(Row(f"3. {cut.label} cut, quality (RGB PSNR vs source)", f"{cut.ours_psnr:.1f} dB",
                        f"ffmpeg: {cut.ffmpeg_psnr:.1f} dB", f"{cut.ours_psnr - cut.ffmpeg_psnr:+.1f} dB",
                        "≥ ffmpeg's", cut.ours_psnr >= cut.ffmpeg_psnr))
    return rows


def untrimmed_row(answer: dict[str, Any], remux_seconds: float, identical: bool) -> Row:
    verdict = "the source file itself, sha256 equal, nothing written" if identical else "NOT the source file"
    return Row("3. untrimmed .mp4 strip (90 s), no encode", f"{seconds_text(answer['seconds'])}: {verdict}",
               f"ffmpeg -c copy (remux only): {seconds_text(remux_seconds)}",
               ratio_text(answer["seconds"] / remux_seconds), "no encode, byte-identical", identical)


if __name__ == "__main__":
    sys.exit(main())
