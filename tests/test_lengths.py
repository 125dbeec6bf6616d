"""Length choices, bpy-free: which source frames fill the picture, and how long the sent audio lasts.

Every expected value is worked out by hand in the test (a shot of source frames 3..7 is
``[3, 8)``), never computed with the code under test.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

# operators/__init__ imports bpy: the module is loaded by its path, as the cut scripts load it.
_PATH = pathlib.Path(__file__).resolve().parents[1] / "operators" / "lengths.py"
_SPEC = importlib.util.spec_from_file_location("talking_face_lengths_under_test", _PATH)
lengths = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(lengths)
Run = lengths.Run


# --- Which source frames, in which order -------------------------------------------------------------


def test_hold_plays_the_range_then_keeps_its_last_frame():
    assert lengths.source_order("HOLD", 3, 8, 9) == [3, 4, 5, 6, 7, 7, 7, 7, 7]


def test_loop_starts_the_range_again_and_stops_mid_way():
    assert lengths.source_order("LOOP", 3, 8, 12) == [3, 4, 5, 6, 7, 3, 4, 5, 6, 7, 3, 4]


def test_pingpong_turns_without_showing_the_turning_frames_twice():
    assert lengths.source_order("PINGPONG", 3, 8, 14) == [3, 4, 5, 6, 7, 6, 5, 4, 3, 4, 5, 6, 7, 6]


def test_pingpong_of_two_frames_alternates():
    assert lengths.source_order("PINGPONG", 10, 12, 5) == [10, 11, 10, 11, 10]


@pytest.mark.parametrize("mode", ["HOLD", "LOOP", "PINGPONG"])
def test_a_single_frame_is_held_whatever_the_mode(mode):
    assert lengths.source_order(mode, 4, 5, 4) == [4, 4, 4, 4]


@pytest.mark.parametrize("mode", ["HOLD", "LOOP", "PINGPONG"])
def test_no_more_frames_than_the_range_is_the_range(mode):
    assert lengths.source_order(mode, 0, 3, 3) == [0, 1, 2]
    assert lengths.source_order(mode, 0, 3, 2) == [0, 1]


def test_an_empty_range_or_an_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        lengths.source_order("HOLD", 5, 5, 3)
    with pytest.raises(ValueError):
        lengths.source_order("BOUNCE", 0, 4, 6)


# --- Runs: one strip each in the cut ---------------------------------------------------------------------


def test_hold_is_the_range_then_one_held_run():
    assert lengths.extension_runs("HOLD", 3, 8, 9) == [Run(3, 5, 1), Run(7, 4, 0)]


def test_loop_is_one_ascending_run_per_pass():
    assert lengths.extension_runs("LOOP", 3, 8, 12) == [Run(3, 5, 1), Run(3, 5, 1), Run(3, 2, 1)]


def test_pingpong_runs_alternate_in_direction():
    # 3 4 5 6 7 | 6 5 4 3 | 4 5 6 7 | 6 : greedy runs take the turning frame 3 into the backward run.
    assert lengths.extension_runs("PINGPONG", 3, 8, 14) == [Run(3, 5, 1), Run(6, 4, -1), Run(4, 4, 1),
                                                           Run(6, 1, 0)]


def test_runs_reproduce_any_order():
    order = [9, 9, 2, 3, 4, 8, 7, 0, 5]
    runs = lengths.group_runs(order)
    assert runs == [Run(9, 2, 0), Run(2, 3, 1), Run(8, 2, -1), Run(0, 1, 0), Run(5, 1, 0)]
    assert [frame for run in runs for frame in run.frames] == order
    assert [run.lowest for run in runs] == [9, 2, 7, 0, 5]


def test_no_frames_no_runs():
    assert lengths.group_runs([]) == []


# --- Frames covering the audio, and the audio's samples ---------------------------------------------


def test_the_picture_covers_the_audio_to_the_next_whole_frame():
    assert lengths.frames_to_cover(2.0, 25) == 50
    assert lengths.frames_to_cover(2.01, 25) == 51  # 50.25 frames: one more, never short
    assert lengths.frames_to_cover(0.6, 25) == 15  # 15.000000000000002 in floating point
    assert lengths.frames_to_cover(1.0, 30000 / 1001) == 30  # 29.97 frames


def test_cutting_the_audio_takes_the_first_samples_only():
    # 2 s of 48 kHz sound cut to 1.5 s: 72,000 samples, no silence.
    assert lengths.fitted_samples(96_000, 1.5, 48_000) == (72_000, 0)


def test_filling_with_silence_adds_what_is_missing():
    # 0.5 s of 8 kHz sound in a 1.2 s shot: 4,000 samples and 5,600 of silence.
    assert lengths.fitted_samples(4_000, 1.2, 8_000) == (4_000, 5_600)


def test_a_length_between_samples_rounds_to_the_nearest():
    # 1/3 s at 44.1 kHz is 14,700 samples exactly; 0.04 s at 22,050 Hz is 882.
    assert lengths.fitted_samples(100_000, 1 / 3, 44_100) == (14_700, 0)
    assert lengths.fitted_samples(0, 0.04, 22_050) == (0, 882)


# --- The choice applied to a shot -----------------------------------------------------------------------


def test_equal_lengths_send_everything_as_it_is():
    plan = lengths.plan_lengths(50, 25, 2.03, longer_audio="HOLD", shorter_audio="SILENCE")
    assert (plan.applied, plan.video_frames, plan.audio_length, plan.billed_seconds) == ("", 0, 0.0, 2.03)


@pytest.mark.parametrize("mode", ["HOLD", "LOOP", "PINGPONG"])
def test_longer_audio_extends_the_picture_to_cover_it(mode):
    # A 2 s shot (50 frames at 25 fps) and 3.1 s of audio: 77.5 frames, so 78; billed 3.1 s.
    plan = lengths.plan_lengths(50, 25, 3.1, longer_audio=mode)
    assert (plan.applied, plan.video_frames, plan.audio_length, plan.billed_seconds) == (mode, 78, 0.0, 3.1)
    assert plan.extends_picture


def test_longer_audio_cut_at_the_shots_end_bills_the_shot():
    # 36 frames at 24 fps = 1.5 s.
    plan = lengths.plan_lengths(36, 24, 4.0, longer_audio="CUT_AUDIO")
    assert (plan.applied, plan.video_frames, plan.audio_length, plan.billed_seconds) == ("CUT_AUDIO", 0, 1.5, 1.5)
    assert not plan.extends_picture


def test_longer_audio_as_it_is_bills_the_audio():
    plan = lengths.plan_lengths(36, 24, 4.0, longer_audio="AS_IS", shorter_audio="SILENCE")
    assert (plan.applied, plan.billed_seconds) == ("", 4.0)


def test_shorter_audio_filled_with_silence_bills_the_shot():
    # 60 frames at 30 fps = 2 s; 0.8 s of audio.
    plan = lengths.plan_lengths(60, 30, 0.8, longer_audio="HOLD", shorter_audio="SILENCE")
    assert (plan.applied, plan.video_frames, plan.audio_length, plan.billed_seconds) == ("SILENCE", 0, 2.0, 2.0)


def test_shorter_audio_gives_a_shorter_result_by_default():
    plan = lengths.plan_lengths(60, 30, 0.8, longer_audio="LOOP")
    assert (plan.applied, plan.billed_seconds) == ("", 0.8)


def test_an_audio_of_unknown_length_is_sent_as_it_is_and_billed_by_the_shot():
    plan = lengths.plan_lengths(60, 30, None, longer_audio="HOLD", shorter_audio="SILENCE")
    assert (plan.applied, plan.billed_seconds) == ("", 2.0)


def test_a_difference_within_the_tolerance_is_no_difference():
    # 2 s against 2.04 s and 1.96 s: within 0.05 s; 2.06 s is not.
    assert lengths.plan_lengths(50, 25, 2.04, longer_audio="HOLD").applied == ""
    assert lengths.plan_lengths(50, 25, 1.96, shorter_audio="SILENCE").applied == ""
    assert lengths.plan_lengths(50, 25, 2.06, longer_audio="HOLD").video_frames == 52  # 51.5 frames


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError):
        lengths.plan_lengths(50, 25, 3.0, longer_audio="STRETCH")
