"""Shots as plain data, bpy-free: a dict round trip, the content key's inputs and the estimate's arithmetic.

Expected values are worked out by hand in each test (a shot of source frames 10..59 at
25 fps lasts 50 / 25 = 2 s), never computed with the code under test.
"""

from __future__ import annotations

import ast
import importlib
import json
import pathlib
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_shots():
    """``operators.shots`` without running ``operators/__init__`` (which imports bpy): a bare package."""
    package = types.ModuleType("tf_shots_under_test")
    package.__path__ = [str(ROOT)]
    operators = types.ModuleType("tf_shots_under_test.operators")
    operators.__path__ = [str(ROOT / "operators")]
    sys.modules.setdefault(package.__name__, package)
    sys.modules.setdefault(operators.__name__, operators)
    return importlib.import_module("tf_shots_under_test.operators.shots")


shots = _load_shots()


def movie_source(**changes):
    values = {"strip": "Shot A", "kind": "MOVIE", "path": "/media/a.mp4", "first": 10, "end": 60, "fps": 25.0,
              "width": 320, "height": 240, "colorspace": "sRGB", "frame_count": 100,
              "span": shots.Span(content_start=1, content_length=100, visible_start=11, visible_end=61,
                                 hold_start=0, hold_end=0)}
    values.update(changes)
    return shots.Source(**values)


def make_shot(source=None, audio=None, **options):
    return shots.Shot(source=source or movie_source(),
                      audio=audio or shots.Audio("STRIP", "/media/line.wav", strip="Line A", offset=0.5, seconds=2.0),
                      slot=shots.Slot(scene="Edit", channel=2, start=11, length=50, floor_channel=2,
                                      sources=("Shot A", "Line A"), meta="Reel 1"),
                      options=shots.Options(**options))


def test_shots_py_never_imports_bpy():
    tree = ast.parse((ROOT / "operators" / "shots.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert "bpy" not in imported and "bpy" not in sys.modules


def test_a_shot_survives_a_trip_through_json():
    shot = make_shot(source=movie_source(kind="IMAGES", path="/seq/f0001.png", images=("f0001.png", "f0002.png")),
                     audio=shots.Audio("MOVIE", "/media/a.mp4", strip="Shot A", offset=0.4, seconds=None),
                     width=512, enhance=True, fps_mode="ORIGINAL", vocals="/media/vocals.wav",
                     longer_audio="LOOP", new_take=True, kept={"enhance": True, "audio": {"kind": "MOVIE"}})
    again = shots.Shot.from_dict(json.loads(json.dumps(shot.to_dict())))
    assert again == shot
    assert again.source.images == ("f0001.png", "f0002.png") and again.slot.sources == ("Shot A", "Line A")


def test_a_shot_that_cannot_run_keeps_its_reason_and_lacks_its_source():
    shot = shots.Shot(source=None, audio=None, reason="'Title' is not a movie strip — pick one.",
                      slot=shots.Slot("Edit", 3, 1, 10, 3, ("Title",)))
    again = shots.Shot.from_dict(json.loads(json.dumps(shot.to_dict())))
    assert again == shot and again.name == "Title" and shots.estimate(again) is None


def test_a_record_from_a_newer_version_with_more_fields_still_reads():
    data = make_shot().to_dict()
    data["slot"]["channel_names"] = ["Dialogue"]
    data["options"]["something_new"] = 1
    assert shots.Shot.from_dict(data) == make_shot()


def test_the_estimate_bills_the_audio_sent():
    # 50 frames at 25 fps = 2.0 s of picture; 3.0 s of speech sent as it is: 3.0 credits at 25 fps.
    cost = shots.estimate(make_shot(audio=shots.Audio("FILE", "/a.wav", seconds=3.0)))
    assert (cost.video_seconds, cost.audio_seconds, cost.billed_seconds, cost.credits) == (2.0, 3.0, 3.0, 3.0)
    assert cost.durations_differ and cost.length_choice == ""


def test_the_estimate_follows_the_length_choice():
    # Audio 3.0 s cut at the shot's end (2.0 s): 2.0 credits. Source fps 50 billed "original": 50/25 = 2× per s.
    cut = shots.estimate(make_shot(audio=shots.Audio("FILE", "/a.wav", seconds=3.0), longer_audio="CUT_AUDIO"))
    assert (cut.billed_seconds, cut.credits, cut.length_choice) == (2.0, 2.0, "CUT_AUDIO")
    fast = make_shot(source=movie_source(fps=50.0), audio=shots.Audio("FILE", "/a.wav", seconds=0.5),
                     fps_mode="ORIGINAL", shorter_audio="SILENCE")
    # 50 frames at 50 fps = 1.0 s; the 0.5 s speech filled with silence to 1.0 s; 1.0 s × 2 = 2.0 credits.
    cost = shots.estimate(fast)
    assert (cost.video_seconds, cost.billed_seconds, cost.credits, cost.length_choice) == (1.0, 1.0, 2.0, "SILENCE")


def test_an_audio_of_unknown_length_is_billed_by_the_picture():
    cost = shots.estimate(make_shot(audio=shots.Audio("FILE", "/a.mp3", seconds=None)))
    assert (cost.audio_seconds, cost.billed_seconds, cost.credits) == (None, 2.0, 2.0)


def test_the_content_key_inputs_name_the_range_and_the_extension():
    whole = movie_source(first=0, end=100, whole_file=True)
    assert whole.key_inputs() == (["/media/a.mp4"], {"whole_file": True})
    assert whole.key_inputs("HOLD", 120)[1] == {"frames": [0, 100], "fps": 25.0, "size": [320, 240],
                                                "colorspace": "sRGB", "extend": ["HOLD", 120]}
    images = movie_source(kind="IMAGES", path="/seq/f1.png", first=1, end=3, images=("f1.png", "f2.png", "f3.png"))
    assert images.key_inputs() == (["/seq/f2.png", "/seq/f3.png"], {"frames": [1, 3], "fps": 25.0,
                                                                    "size": [320, 240], "colorspace": "sRGB"})


@pytest.mark.parametrize(("audio", "length", "cut"), [
    (("FILE", "/a.wav"), 0.0, False), (("FILE", "/a.wav"), 2.0, True),
    (("STRIP", "/a.wav", "Line", 0.0, 2.0, True), 0.0, False), (("STRIP", "/a.wav", "Line", 0.5, 1.0), 0.0, True),
    (("MOVIE", "/a.mp4", "Shot A", 0.4, 2.0), 0.0, True)])
def test_which_audio_is_cut(audio, length, cut):
    assert shots.Audio(*audio).needs_cut(length) is cut
