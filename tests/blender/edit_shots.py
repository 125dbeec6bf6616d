"""Issue 11's edit as plain data: twelve shots of mixed sizes and rates, and their dialogue lengths.

bpy-free, so both the bpy tests (``batch_edit.py``) and the GUI lane (which makes the same
shots with Debian's ffmpeg) build the same edit from it.
"""

from __future__ import annotations

SCENE_FPS = 25
SHOT_GAP = 80  # frames between shot starts: more than any shot lasts at any rate
DIALOGUE_CHANNEL = 1
SHOT_CHANNEL = 2
# (name, (width, height), rate as ffmpeg takes it, frames): landscape, portrait, square and broadcast
# sizes, NTSC rates too, each about 0.8 s.
SHOTS = (
    ("shot00_640x360_25", (640, 360), "25", 20),
    ("shot01_1280x720_2997", (1280, 720), "30000/1001", 24),
    ("shot02_1080x1920_30", (1080, 1920), "30", 24),
    ("shot03_1920x1080_23976", (1920, 1080), "24000/1001", 19),
    ("shot04_320x240_24", (320, 240), "24", 19),
    ("shot05_480x270_50", (480, 270), "50", 40),
    ("shot06_360x640_25", (360, 640), "25", 20),
    ("shot07_854x480_5994", (854, 480), "60000/1001", 48),
    ("shot08_400x400_15", (400, 400), "15", 12),
    ("shot09_720x576_25", (720, 576), "25", 20),
    ("shot10_256x144_48", (256, 144), "48", 38),
    ("shot11_1024x576_12", (1024, 576), "12", 10),
)


def shot_name(index: int) -> str:
    return f"Shot {index:02d}"


def line_name(index: int) -> str:
    return f"Line {index:02d}"


def dialogue_seconds(index: int) -> float:
    # Each its own length, in whole frames at 25 fps: sound strips without Audaspace (the bpy 4.2
    # wheel) end on a frame.
    return round(0.24 + 0.04 * index, 2)


def shot_start(index: int) -> int:
    return 1 + index * SHOT_GAP
