"""Footage as artists have it, cut and placed, checked by a decoder that is not Blender's.

Each case is a clip made by ffmpeg (``testsrc2``: moving, coloured, with fine structure,
and the frame number burnt in, so that a crop, zoom, shift, wrong frame or colour shift
shows), put on the timeline of a scene whose rate and size are not the clip's, trimmed
by a few frames at both ends, prepared for upload, then placed back as a result (the
sandbox echoes the upload, so the cut is what comes back). ffprobe/ffmpeg then check:

- frames: the cut holds exactly the visible frames;
- geometry: the cut has the picture's own size (rotation applied as the preview shows it);
- first/middle/last: each matches the source frame at the same index, PSNR ≥ 35 dB at
  the source's own size, both decoded by ffmpeg to RGB (the source through ffmpeg's own
  4:2:0 conversion: an H.264 MP4 for the service is 4:2:0, and RGB or 4:4:4 sources lose
  chroma detail there whoever converts them);
- placed: the placed strip starts at the source's first visible frame and lasts the
  cut's duration in scene frames.

A case Blender cannot send right must be refused before anything is uploaded, in one
sentence; only cases marked ``refusable`` may be. The table of cases × checks is printed
at the end of the run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
from types import ModuleType
from typing import Any

import bpy
import pytest
import sample_media
from sample_media import Footage

TRIM_START = 2  # source frames hidden at the strip's start...
TRIM_END = 3  # ...and at its end
MIN_PSNR = 35.0
STRIP_START = 10
H264_444 = ("-c:v", "libx264", "-pix_fmt", "yuv444p")
# Tags only: testsrc2's YUV is the same, so each tag makes the colours a decoder shows differ.
BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
BT601_TAGS = ("-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
              "-color_range", "tv")


@dataclasses.dataclass(frozen=True)
class Case:
    clip: Footage
    scene_fps: float
    scene_size: tuple[int, int] = (1920, 1080)
    refusable: str = ""  # why this case may be refused on some Blender, else it must work
    min_psnr_42: float = MIN_PSNR  # Blender 4.2's own decoder may be the limit (measured, with the reason)

    @property
    def id(self) -> str:
        return self.clip.name


CASES = [
    Case(Footage("640x360_25_h264", (640, 360), "25", 20), scene_fps=25),
    Case(Footage("1280x720_29.97_h264", (1280, 720), "30000/1001", 16), scene_fps=24),
    Case(Footage("1920x1080_23.976_h264", (1920, 1080), "24000/1001", 12), scene_fps=30,
         scene_size=(1280, 720)),
    Case(Footage("1080x1920_30_vertical", (1080, 1920), "30", 12), scene_fps=25),
    Case(Footage("1279x719_25_odd_mkv", (1279, 719), "25", 12, ".mkv", H264_444), scene_fps=50,
         refusable="an H.264 4:2:0 MP4 has no odd sizes"),
    Case(Footage("1920x1088_50_h264", (1920, 1088), "50", 12), scene_fps=60000 / 1001),
    Case(Footage("720x576_sar16:15_25", (720, 576), "25", 16, sar="16/15"), scene_fps=25),
    Case(Footage("1280x720_29.97_rotated_phone", (1280, 720), "30000/1001", 16, rotate=90), scene_fps=30,
         refusable="a Blender that does not apply rotation metadata shows the clip sideways"),
    Case(Footage("640x360_59.94_hevc", (640, 360), "60000/1001", 20, codec=("-c:v", "libx265", "-pix_fmt",
                                                                           "yuv420p", "-x265-params",
                                                                           "log-level=error")),
         scene_fps=60000 / 1001),
    # 4:2:2 10-bit: any H.264 4:2:0 copy loses chroma detail (ffmpeg's own -crf 18 gets ~36.5 dB here),
    # and Blender 4.2 reads 10-bit ProRes 0.8-1.6 levels too bright in the mid-tones (32.5 dB).
    Case(Footage("640x360_25_prores_mov", (640, 360), "25", 16, ".mov", ("-c:v", "prores_ks", "-profile:v", "2")),
         scene_fps=24, min_psnr_42=32.0),
    Case(Footage("640x360_24_vp9_webm", (640, 360), "24", 16, ".webm",
                 ("-c:v", "libvpx-vp9", "-crf", "20", "-b:v", "0", "-deadline", "realtime")), scene_fps=25),
    Case(Footage("640x360_25_mjpeg_avi", (640, 360), "25", 16, ".avi",
                 ("-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p")), scene_fps=24000 / 1001),
    Case(Footage("640x360_24_png_sequence", (640, 360), "24", 16, image_sequence=True), scene_fps=24),
    Case(Footage("1280x720_24_h264", (1280, 720), "24", 12), scene_fps=60),
    Case(Footage("1280x720_25_bt709_tagged", (1280, 720), "25", 12, codec=("-c:v", "libx264", "-pix_fmt", "yuv420p",
                                                                     *BT709_TAGS)), scene_fps=25),
    Case(Footage("640x360_25_bt601_tagged", (640, 360), "25", 12, codec=("-c:v", "libx264", "-pix_fmt", "yuv420p",
                                                                   *BT601_TAGS)), scene_fps=25),
    Case(Footage("640x360_30_h264_mov", (640, 360), "30", 16, ".mov"), scene_fps=23.976),
    Case(Footage("3840x2160_25_h264", (3840, 2160), "25", 8), scene_fps=25, scene_size=(1920, 1080)),
    # 30 fps with every other frame dropped after the 10th: Blender shows it by time, with repeats.
    Case(Footage("640x360_vfr_h264", (640, 360), "30", 20, vfr=True), scene_fps=30,
         refusable="Blender shows a variable frame rate by time, repeating frames"),
]

CHECKS = ("frames", "geometry", "first", "middle", "last", "placed")
RESULTS: dict[str, dict[str, str]] = {}


class _TablePrinter:
    """Prints the matrix after pytest's own summary (registered once, by the first case)."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not RESULTS:
            return
        width = max(len(name) for name in RESULTS) + 2
        terminalreporter.write_sep("=", f"footage matrix (Blender {bpy.app.version_string})")
        terminalreporter.write_line("case".ljust(width) + "".join(check.ljust(10) for check in CHECKS))
        for name, row in RESULTS.items():
            if "refused" in row:
                terminalreporter.write_line(name.ljust(width) + f"refused: {row['refused']}")
                continue
            terminalreporter.write_line(name.ljust(width) + "".join(row.get(check, "-").ljust(10)
                                                                     for check in CHECKS))


@pytest.fixture(scope="module")
def footage_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> pathlib.Path:
    sample_media.require_ffmpeg()
    request.config.pluginmanager.register(_TablePrinter(), "talking-face-footage-table")
    return tmp_path_factory.mktemp("footage")


def add_source(compat: ModuleType, scene: bpy.types.Scene, clip: Footage, path: pathlib.Path) -> Any:
    """The clip on channel 2 from frame 10, as the artist adds it (fit to the scene), then trimmed."""
    if clip.image_sequence:
        strip = compat.strips(scene).new_image(name=clip.name, filepath=str(path), channel=2,
                                              frame_start=STRIP_START)
        for index in range(2, clip.frames + 1):
            strip.elements.append(f"render_{index:04d}.png")
    else:
        strip = compat.new_movie(scene, clip.name, str(path), channel=2, frame_start=STRIP_START)
    strip.frame_offset_start = TRIM_START
    strip.frame_offset_end = TRIM_END
    return strip


def source_frame(clip: Footage, path: pathlib.Path, index: int) -> Any:
    if clip.image_sequence:
        return sample_media.decoded_frame(path.with_name(f"render_{index + 1:04d}.png"), 0, chroma_420=True)
    return sample_media.decoded_frame(path, index, chroma_420=True)


def record(case: Case, check: str, value: str) -> None:
    RESULTS.setdefault(case.id, {})[check] = value


def is_one_sentence(message: str) -> bool:
    return bool(message) and "\n" not in message and message.rstrip().endswith(".") and ". " not in message


def psnr_floor(case: Case) -> float:
    return case.min_psnr_42 if bpy.app.version[:2] == (4, 2) else MIN_PSNR


def expected_size(clip: Footage) -> tuple[int, int]:
    width, height = clip.size
    return (height, width) if clip.rotate % 180 == 90 else (width, height)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_footage_is_cut_exactly_and_placed_in_sync(case: Case, compat, media, placement, user_scene,
                                                   footage_dir, tmp_path):
    clip = case.clip
    path = sample_media.make_footage(clip, footage_dir)
    compat.set_scene_fps(user_scene, case.scene_fps)
    user_scene.render.resolution_x, user_scene.render.resolution_y = case.scene_size
    strip = add_source(compat, user_scene, clip, path)
    try:
        prepared = media.prepare_video(strip, user_scene, str(tmp_path / "work"))
    except media.MediaError as error:
        record(case, "refused", str(error))
        assert case.refusable, f"refused a case that must work: {error}"
        assert is_one_sentence(str(error)), repr(str(error))
        assert not list((tmp_path / "work").glob("*.mp4")), "a refused case left a cut behind"
        return
    assert not prepared.is_source_file, "a trimmed strip must be cut"
    cut = pathlib.Path(prepared.path)
    facts = sample_media.probe_video(cut)
    visible = clip.frames - TRIM_START - TRIM_END

    frames = int(facts["nb_read_frames"])
    record(case, "frames", f"{frames}/{visible}")
    assert frames == visible

    size = (facts["width"], facts["height"])
    record(case, "geometry", "ok" if size == expected_size(clip) else f"{size[0]}x{size[1]}")
    assert size == expected_size(clip), f"the cut is {size}, the picture {expected_size(clip)}"

    for check, index in (("first", 0), ("middle", visible // 2), ("last", visible - 1)):
        quality = sample_media.psnr(sample_media.decoded_frame(cut, index),
                                    source_frame(clip, path, TRIM_START + index))
        record(case, check, f"{quality:.1f}dB")
        assert quality >= psnr_floor(case), f"{check} frame: {quality:.1f} dB against source frame {TRIM_START + index}"

    names = placement.place_result(user_scene, strip.name, str(cut), job_id=f"footage-{case.id}",
                                   name=f"{clip.name} result", mute_sources=False)
    result = compat.all_strips(user_scene)[names[0]]
    length = round(frames / clip.fps * compat.scene_fps(user_scene))
    placed = (result.frame_final_start, result.frame_final_duration)
    record(case, "placed", "ok" if placed == (strip.frame_final_start, length) else f"{placed}")
    assert placed == (strip.frame_final_start, length), "start and length in scene frames"


def test_an_image_sequence_is_cut_the_same_in_a_background_process(compat, media, user_scene, footage_dir, tmp_path):
    """The command a window's Generate runs (the bpy module stands in for the Blender program)."""
    clip = next(case.clip for case in CASES if case.clip.image_sequence)
    path = sample_media.make_footage(clip, footage_dir)
    strip = add_source(compat, user_scene, clip, path)
    command, output = media.cut_video_command(strip, user_scene, str(tmp_path), blender="blender")
    script = command[command.index("--python") + 1]
    done = subprocess.run([sys.executable, script, *command[command.index("--"):]], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    visible = clip.frames - TRIM_START - TRIM_END
    assert int(sample_media.probe_video(pathlib.Path(output))["nb_read_frames"]) == visible
    for index in (0, visible - 1):
        quality = sample_media.psnr(sample_media.decoded_frame(pathlib.Path(output), index),
                                    source_frame(clip, path, TRIM_START + index))
        assert quality >= MIN_PSNR, f"frame {index}: {quality:.1f} dB"
