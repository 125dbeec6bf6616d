"""Length choices end to end: what reaches the service when the audio and the shot last differently.

The shot shows source frames 5..24 (20 frames, 0.8 s at 25 fps) of a ``testsrc2`` clip made
by ffmpeg (moving, textured: every frame differs). The oracles are outside the code under
test: the files the sandbox stored (read back by ffprobe and ffmpeg), the request log,
and the strips on the timeline. Expected counts are worked out by hand in each test.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips
from sample_media import Footage

from newport_api.sandbox import Sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-lengths-5e1f0a9c"
CLIP = Footage("lengths_320x240_25", (320, 240), "25", 40)
FIRST_SHOWN, END_SHOWN = 5, 25  # the strip hides 5 frames at its start and 15 at its end
SHOT_SECONDS = 0.8
RATE = 48_000
LONG_SECONDS = 1.3  # 32.5 frames at 25 fps: the picture needs 33
SHORT_SECONDS = 0.5


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return sample_media.make_footage(CLIP, tmp_path_factory.mktemp("lengths_clip"))


@pytest.fixture(scope="module")
def source_frames(clip_path: pathlib.Path) -> list:
    return decode_all(clip_path)


@pytest.fixture
def sandbox(extension: ModuleType, tmp_path: pathlib.Path):
    with Sandbox(processing_seconds=0.1, queued_seconds=0.02, storage_dir=tmp_path / "storage") as server:
        yield server


@pytest.fixture
def scene(extension: ModuleType, compat: ModuleType, sandbox: Sandbox, clip_path: pathlib.Path,
          tmp_path: pathlib.Path):
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    window = bpy.context.window
    previous = window.scene
    scene = bpy.data.scenes.new("lengths")
    compat.set_scene_fps(scene, 25)
    window.scene = scene
    compat.ensure_editor(scene)
    strip = compat.new_movie(scene, "Shot", str(clip_path), channel=2, frame_start=11)
    strip.frame_offset_start, strip.frame_offset_end = FIRST_SHOWN, CLIP.frames - END_SHOWN
    scene.talking_face.video_strip = "Shot"
    scene.talking_face.audio_source = "FILE"
    scene.talking_face.regenerate = True  # each test pays for its own job
    yield scene
    window.scene = previous  # kept: see conftest.KEEP_SCENES_NOTE
    preferences.api_key = ""


def speech(tmp_path: pathlib.Path, seconds: float, rate: int = RATE) -> pathlib.Path:
    return sample_media.write_sine_wav(tmp_path / f"speech_{seconds}.wav", seconds=seconds, rate=rate)


def decode_all(path: pathlib.Path) -> list:
    """Every frame of the movie as an RGB array, decoded by ffmpeg."""
    import numpy

    probe = sample_media.probe_video(path)
    width, height = probe["width"], probe["height"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return list(numpy.frombuffer(raw, dtype=numpy.uint8).reshape(-1, height, width, 3))


def best_source_frame(frame, source_frames: list) -> int:
    """The index of the source frame this one shows: the one it resembles most."""
    return max(range(len(source_frames)), key=lambda index: sample_media.psnr(frame, source_frames[index]))


def uploads(sandbox: Sandbox, storage: pathlib.Path) -> dict[str, pathlib.Path]:
    """What the sandbox stored, by kind ("video"/"audio"), as ffprobe sees each file."""
    found = {}
    for entry in sandbox.requests:
        key = (entry.body or {}).get("key") if entry.phase == "storage" else None
        if not key:
            continue
        stored = storage / "objects" / hashlib.sha256(key.encode()).hexdigest()
        kinds = ffprobe(stored, "stream=codec_type")
        found["video" if any(s["codec_type"] == "video" for s in kinds) else "audio"] = stored
    return found


def ffprobe(path: pathlib.Path, entries: str) -> list[dict]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["streams"]


def audio_samples(path: pathlib.Path) -> tuple[int, int]:
    """(samples, rate) of the first audio stream, by ffprobe."""
    (stream,) = ffprobe(path, "stream=duration_ts,sample_rate")
    return int(stream["duration_ts"]), int(stream["sample_rate"])


def video_frames(path: pathlib.Path) -> int:
    return int(sample_media.probe_video(path)["nb_read_frames"])


def generate(extension: ModuleType, scene) -> tuple[object, object]:
    """Generate with the panel's settings; (the estimate shown before, the finished job)."""
    shown = extension.operators.job_setup.estimate(bpy.context)
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    controller = extension.operators.controller.get_controller()
    record = max(controller.views.values(), key=lambda job: job.created_at)
    assert record.phase.value == "done", record.error
    return shown, record


def placed_movie(compat: ModuleType, scene, job_id: str):
    (movie,) = [strip for strip in compat.all_strips(scene)
                if strip.get("talking_face_job") == job_id and compat.is_movie(strip)]
    return movie


# --- Audio longer than the shot ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["HOLD", "LOOP", "PINGPONG"])
def test_longer_audio_extends_the_picture(extension, compat, scene, sandbox, tmp_path, source_frames, mode):
    scene.talking_face.audio_file = str(speech(tmp_path, LONG_SECONDS))
    scene.talking_face.longer_audio = mode
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 33, "1.3 s at 25 fps needs 33 frames"
    assert audio_samples(sent["audio"]) == (62_400, RATE), "the audio goes as it is: 1.3 s at 48 kHz"
    frames = decode_all(sent["video"])
    shows = [best_source_frame(frame, source_frames) for frame in frames]
    expected = {
        "HOLD": list(range(5, 25)) + [24] * 13,
        "LOOP": list(range(5, 25)) + list(range(5, 18)),
        "PINGPONG": list(range(5, 25)) + list(range(23, 10, -1)),  # 23 down to 11: the turn shows 24 once
    }[mode]
    assert shows == expected
    if mode == "HOLD":
        # The extra frames are the last visible one, up to H.264's noise (measured 44-61 dB after
        # a new keyframe), while the footage moves: neighbouring frames differ (about 18 dB).
        assert sample_media.psnr(frames[18], frames[19]) < 25, "the footage moves"
        assert all(sample_media.psnr(frame, frames[19]) > 40 for frame in frames[20:])
    assert shown.credits == pytest.approx(LONG_SECONDS) == record.estimated_credits, "billed by the audio"
    movie = placed_movie(compat, scene, record.job_id)
    source = compat.all_strips(scene)["Shot"]
    assert (movie.frame_final_start, movie.frame_final_duration) == (source.frame_final_start, 33)


def test_longer_audio_cut_at_the_shots_end(extension, compat, scene, sandbox, tmp_path):
    scene.talking_face.audio_file = str(speech(tmp_path, LONG_SECONDS))
    scene.talking_face.longer_audio = "CUT_AUDIO"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 20
    assert audio_samples(sent["audio"]) == (38_400, RATE), "0.8 s at 48 kHz"
    original = sample_media.wav_samples(str(tmp_path / f"speech_{LONG_SECONDS}.wav"))[0]
    assert sample_media.wav_samples(str(sent["audio"]))[0] == original[:38_400], "the start, untouched"
    assert shown.credits == pytest.approx(SHOT_SECONDS) == record.estimated_credits
    movie = placed_movie(compat, scene, record.job_id)
    assert (movie.frame_final_start, movie.frame_final_duration) == (16, 20), "frame 11 + 5 hidden"


def test_longer_audio_as_it_is_sends_both_untouched(extension, scene, sandbox, tmp_path):
    scene.talking_face.audio_file = str(speech(tmp_path, LONG_SECONDS))
    scene.talking_face.longer_audio = "AS_IS"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 20
    assert sent["audio"].read_bytes() == (tmp_path / f"speech_{LONG_SECONDS}.wav").read_bytes()
    assert shown.credits == pytest.approx(LONG_SECONDS) == record.estimated_credits


# --- Audio shorter than the shot ---------------------------------------------------------------------


def test_shorter_audio_filled_with_silence(extension, scene, sandbox, tmp_path):
    scene.talking_face.audio_file = str(speech(tmp_path, SHORT_SECONDS))
    scene.talking_face.shorter_audio = "SILENCE"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 20
    assert audio_samples(sent["audio"]) == (38_400, RATE), "padded to the shot's 0.8 s"
    samples = sample_media.wav_samples(str(sent["audio"]))[0]
    original = sample_media.wav_samples(str(tmp_path / f"speech_{SHORT_SECONDS}.wav"))[0]
    assert samples[:24_000] == original and set(samples[24_000:]) == {0}, "the speech, then 0.3 s of silence"
    assert shown.credits == pytest.approx(SHOT_SECONDS) == record.estimated_credits


def test_shorter_audio_gives_a_shorter_result_by_default(extension, scene, sandbox, tmp_path):
    scene.talking_face.audio_file = str(speech(tmp_path, SHORT_SECONDS))
    scene.talking_face.shorter_audio = "SHORTER"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert sent["audio"].read_bytes() == (tmp_path / f"speech_{SHORT_SECONDS}.wav").read_bytes()
    assert shown.credits == pytest.approx(SHORT_SECONDS) == record.estimated_credits


def test_a_sound_strip_is_cut_or_filled_as_a_file_is(extension, compat, scene, sandbox, tmp_path):
    """The strip plays 1.0 s of a 2 s sound; cut at the shot's end it sends 0.8 s of it, from where it plays."""
    ramp = sample_media.write_ramp_wav(tmp_path / "ramp.wav", seconds=2.0)
    sound = sound_strips.add_sound_strip(compat, scene, "Line", ramp, channel=1, frame_start=11)
    sound.frame_offset_start = 5  # plays from 0.2 s (sample 1,600 at 8 kHz)
    sound.frame_final_end = 11 + 5 + 25  # 1.0 s
    scene.talking_face.audio_source = "STRIP"
    scene.talking_face.audio_strip = "Line"
    scene.talking_face.longer_audio = "CUT_AUDIO"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    assert audio_samples(sent["audio"]) == (6_400, sample_media.RAMP_RATE), "0.8 s at 8 kHz"
    assert list(sample_media.wav_samples(str(sent["audio"]))[0]) == list(range(1_600, 8_000))
    assert shown.credits == pytest.approx(SHOT_SECONDS) == record.estimated_credits


# --- Identity: another choice is another job -------------------------------------------------------------


def test_each_choice_is_its_own_job_and_the_same_choice_reuses_it(extension, scene, sandbox, tmp_path):
    # A sound no other test uses (cut at 0.8 s, the others' would be this job): nothing to reuse.
    scene.talking_face.audio_file = str(speech(tmp_path, 1.24, rate=44_100))
    scene.talking_face.regenerate = False
    fingerprints, submits = [], []
    for mode in ("HOLD", "LOOP", "CUT_AUDIO", "AS_IS", "HOLD"):
        scene.talking_face.longer_audio = mode
        _shown, record = generate(extension, scene)
        fingerprints.append(record.owner["fingerprint"])
        submits.append(sandbox.count("submit"))
    assert len(set(fingerprints[:4])) == 4, "every choice sends other inputs"
    assert submits == [1, 2, 3, 4, 4], "each choice is paid once; HOLD again is HOLD's job"
    assert fingerprints[4] == fingerprints[0]


def test_the_cut_scripts_carry_the_choice_on_their_command_line(extension):
    cut_video = extension.operators.cut_video
    cut_audio = extension.operators.cut_audio
    span = cut_video.StripSpan(1, 40, 6, 26)
    request = cut_video.CutRequest(source="/a b.mp4", output="/o.mp4", fps=25.0, width=320, height=240,
                                   span=span, extend="PINGPONG", frames=33)
    assert cut_video.CutRequest.from_args(request.to_args()) == request
    sound = cut_audio.CutAudioRequest(source="/s.wav", output="/o.wav", start=0.2, seconds=1.0, length=0.8)
    assert cut_audio.CutAudioRequest.from_args(sound.to_args()) == sound
    assert sound.samples(8000) == (1_600, 6_400) and sound.length_samples(8000) == 6_400


# --- An image sequence, and a batch ---------------------------------------------------------------------


def test_an_image_sequence_loops_as_a_movie_does(extension, compat, scene, sandbox, tmp_path):
    """Frames 2..9 of a 12-image sequence (8 frames, 0.32 s) looped to 0.5 s: 13 frames."""
    sequence = Footage("lengths_sequence", (160, 120), "25", 12, image_sequence=True)
    first_image = sample_media.make_footage(sequence, tmp_path / "sequence")
    images = sorted(first_image.parent.glob("*.png"))
    strip = compat.strips(scene).new_image(name="Frames", filepath=str(images[0]), channel=3, frame_start=101)
    for image in images[1:]:
        strip.elements.append(image.name)
    strip.frame_offset_start, strip.frame_offset_end = 2, 2
    scene.talking_face.video_strip = "Frames"
    scene.talking_face.audio_file = str(speech(tmp_path, SHORT_SECONDS))
    scene.talking_face.longer_audio = "LOOP"
    shown, record = generate(extension, scene)

    sent = uploads(sandbox, tmp_path / "storage")
    pictures = [decode_all(image)[0] for image in images]
    shows = [best_source_frame(frame, pictures) for frame in decode_all(sent["video"])]
    assert shows == [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6]
    assert shown.credits == pytest.approx(SHORT_SECONDS) == record.estimated_credits


def test_a_batch_takes_its_own_choice_or_else_the_panels(extension, compat, scene, sandbox, tmp_path):
    line = speech(tmp_path, 1.32)  # 33 whole frames: a sound strip ends on a frame
    sound_strips.add_sound_strip(compat, scene, "Line", line, channel=1, frame_start=16)
    for strip in compat.all_strips(scene):
        strip.select = strip.name == "Shot"
    scene.talking_face.longer_audio = "CUT_AUDIO"
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", longer_audio="PINGPONG") == {"FINISHED"}
    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 33 and audio_samples(sent["audio"]) == (63_360, RATE)

    sandbox.reset()
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP") == {"FINISHED"}
    sent = uploads(sandbox, tmp_path / "storage")
    assert video_frames(sent["video"]) == 20 and audio_samples(sent["audio"]) == (38_400, RATE), "the panel's cut"
