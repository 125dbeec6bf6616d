"""Cutting sound on every build: with Python's ``aud``, without it (Debian's Blender), without Audaspace (4.2 wheel).

Sources are made by ffmpeg in the formats artists have; each cut is checked by ffmpeg
and ffprobe, never by the code under test: the WAV's stream facts from ffprobe, and its
samples against ffmpeg's own decode of the same sample range of the source. The source
is a chirp (its pitch rises all the time) with a different chirp per channel, so a cut
that starts N samples off, or swaps channels, matches ffmpeg's range only N samples
shifted or not at all.

"Without aud" is simulated on wheels that have it: in this process by putting None in
``sys.modules["aud"]`` (``import aud`` then fails, as on Debian), and for the background
command in a child process whose ``sitecustomize`` does the same after bpy is imported.
Only the tests' environment is changed, never the extension.
"""

from __future__ import annotations

import array
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips

SOURCE_SECONDS = 3.0
CUT_START = 0.7013  # not on a sample of any rate used: the cut must round like ffmpeg's oracle below
CUT_SECONDS = 1.3
# A shifted cut is caught: the chirp changes pitch each sample, so only the right shift correlates.
MAX_SHIFT_SEARCHED = 300


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    codec: list[str]
    channels: int
    rate: int
    min_correlation: float = 0.999  # after alignment; lossy decoders differ, and MP3's first frame after a seek
    keeps_preroll: bool = False  # Audaspace does not drop this codec's declared pre-roll

    def __str__(self) -> str:
        return self.name


FORMATS = [
    Format("wav-s16-mono-44k", ".wav", ["-c:a", "pcm_s16le"], 1, 44100),
    Format("wav-s16-stereo-48k", ".wav", ["-c:a", "pcm_s16le"], 2, 48000),
    Format("wav-s24-stereo-48k", ".wav", ["-c:a", "pcm_s24le"], 2, 48000),
    Format("wav-f32-5.1-96k", ".wav", ["-c:a", "pcm_f32le"], 6, 96000),
    Format("flac-mono-48k", ".flac", ["-c:a", "flac"], 1, 48000, 0.99),
    # MP3's first frame after a seek lacks its bit reservoir: a few ms of the cut differ.
    Format("mp3-stereo-44k", ".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"], 2, 44100, 0.98),
    Format("ogg-vorbis-stereo-48k", ".ogg", ["-c:a", "libvorbis", "-q:a", "6"], 2, 48000, 0.99, keeps_preroll=True),
    Format("m4a-aac-stereo-44k", ".m4a", ["-c:a", "aac", "-b:a", "192k"], 2, 44100, 0.99),
    Format("ogg-opus-stereo-48k", ".opus", ["-c:a", "libopus", "-b:a", "160k"], 2, 48000, 0.98),
]


def chirps(channels: int) -> str:
    """An ffmpeg aevalsrc expression: one rising chirp per channel, each from its own pitch."""
    return "|".join(f"0.{6 - channel % 3}*sin(2*PI*({220 + 97 * channel}+{150 + 40 * channel}*t)*t)"
                    for channel in range(channels))


def run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, check=False)
    assert done.returncode == 0, f"{command[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}"
    return done


def make_source(folder: pathlib.Path, fmt: Format) -> pathlib.Path:
    path = folder / f"{fmt.name}{fmt.suffix}"
    if not path.exists():
        run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
             "-i", f"aevalsrc={chirps(fmt.channels)}:s={fmt.rate}:d={SOURCE_SECONDS}",
             *fmt.codec, str(path)])
    return path


def probe(path: pathlib.Path) -> dict:
    """ffprobe's view of the first audio stream."""
    done = run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-count_packets",
                "-show_entries", "stream=codec_name,sample_rate,channels,duration_ts",
                "-of", "json", str(path)])
    return json.loads(done.stdout)["streams"][0]


def oracle_samples(source: pathlib.Path, first: int, count: int, channels: int) -> array.array:
    """ffmpeg's decode of samples [first, first + count) of the source, as 16-bit, on ``channels`` channels."""
    done = run(["ffmpeg", "-v", "error", "-i", str(source),
                "-af", f"atrim=start_sample={first}:end_sample={first + count},asetpts=N/SR/TB",
                "-ac", str(channels), "-f", "s16le", "-acodec", "pcm_s16le", "-"])
    return array.array("h", done.stdout)


def decoded_samples(wav: pathlib.Path) -> array.array:
    done = run(["ffmpeg", "-v", "error", "-i", str(wav), "-f", "s16le", "-acodec", "pcm_s16le", "-"])
    return array.array("h", done.stdout)


def correlation(a: array.array, b: array.array, shift: int, channels: int) -> float:
    """Normalised correlation of ``a`` shifted by ``shift`` frames against ``b``, over the frames both have."""
    import numpy

    x = numpy.asarray(a, dtype=numpy.float64).reshape(-1, channels)
    y = numpy.asarray(b, dtype=numpy.float64).reshape(-1, channels)
    if shift >= 0:
        x, y = x[shift:], y[:len(y) - shift]
    else:
        x, y = x[:shift], y[-shift:]
    length = min(len(x), len(y))
    x, y = x[:length].ravel(), y[:length].ravel()
    return float(x @ y / max(1e-9, numpy.sqrt((x @ x) * (y @ y))))


def preroll_samples(source: pathlib.Path, rate: int) -> int:
    """Samples the codec decodes before the file's time 0 (a negative first timestamp), per ffprobe."""
    done = run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-read_intervals", "%+#1",
                "-show_entries", "packet=pts_time", "-of", "csv=p=0", str(source)])
    first = float(done.stdout.decode().split()[0].strip(","))
    return max(0, round(-first * rate))


def best_shift(cut: array.array, oracle: array.array, channels: int) -> tuple[int, float]:
    scores = {shift: correlation(cut, oracle, shift, channels)
              for shift in range(-MAX_SHIFT_SEARCHED, MAX_SHIFT_SEARCHED + 1)}
    best = max(scores, key=scores.get)
    return best, scores[best]


def assert_same_range(cut: array.array, oracle: array.array, channels: int, fmt: Format,
                      source: pathlib.Path) -> None:
    """The cut holds the oracle's samples.

    WAV is decoded by the cut itself: exactly (16-bit), within one step of rounding (24-bit,
    float), in step with ffmpeg's own stereo mix (5.1). Other formats are decoded by
    Blender's Audaspace, which is allowed its known differences from ffmpeg (measured on
    4.5 and 5.0): a seek may land one sample off, and Vorbis's declared pre-roll (ffprobe:
    a negative first timestamp, 128 samples here) is not dropped, so that cut may sit up
    to that many samples off.
    """
    assert len(cut) == len(oracle), (len(cut), len(oracle))
    if fmt.suffix == ".wav" and fmt.channels <= 2:
        worst = max(abs(mine - theirs) for mine, theirs in zip(cut, oracle, strict=True))
        assert worst <= (0 if "s16" in fmt.name else 1), f"samples differ by up to {worst}"
        return
    shift, score = best_shift(cut, oracle, channels)
    allowed = 0 if fmt.suffix == ".wav" else 1 + (preroll_samples(source, fmt.rate) if fmt.keeps_preroll else 0)
    assert abs(shift) <= allowed, f"the cut is {shift} samples off ffmpeg's range (allowed {allowed})"
    assert score >= fmt.min_correlation, f"correlation {score:.4f} with ffmpeg's decode"


def assert_cut_is(output: pathlib.Path, source: pathlib.Path, fmt: Format) -> None:
    channels = min(fmt.channels, 2)
    first, count = round(CUT_START * fmt.rate), round(CUT_SECONDS * fmt.rate)
    facts = probe(output)
    assert (facts["codec_name"], int(facts["sample_rate"]), facts["channels"]) == ("pcm_s16le", fmt.rate, channels)
    assert int(facts["duration_ts"]) == count, "the cut lasts exactly the samples asked for"
    assert_same_range(decoded_samples(output), oracle_samples(source, first, count, channels), channels, fmt,
                      source)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("audio_sources")


@pytest.fixture(scope="module")
def cut_audio(extension: ModuleType) -> ModuleType:
    import importlib

    return importlib.import_module(f"{extension.__name__}.operators.cut_audio")


@pytest.fixture(params=["as built", "without aud"])
def build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, media: ModuleType) -> str:
    """This Blender as it is, and the same with ``import aud`` failing (Debian's Blender)."""
    if request.param == "without aud":
        monkeypatch.setitem(sys.modules, "aud", None)
    media._cached_sound_seconds.cache_clear()  # answers read through aud must not carry over
    yield request.param
    media._cached_sound_seconds.cache_clear()


def decodable(compat: ModuleType, fmt: Format) -> bool:
    """Whether this build can read the format at all: WAV always, the rest with Audaspace."""
    return fmt.suffix == ".wav" or compat.has_audio_support()


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_cut_is_exact_to_the_sample_in_every_format(compat, cut_audio, sources, tmp_path, fmt, build):
    source = make_source(sources, fmt)
    request = cut_audio.CutAudioRequest(source=str(source), output=str(tmp_path / "cut.wav"),
                                        start=CUT_START, seconds=CUT_SECONDS)
    if not decodable(compat, fmt):
        with pytest.raises(cut_audio.CutError, match=r"cannot decode .* convert the audio to WAV"):
            cut_audio.cut_audio(request)
        assert list(tmp_path.iterdir()) == [], "nothing is left behind"
        return

    written = cut_audio.cut_audio(request)

    assert written == round(CUT_SECONDS * fmt.rate)
    assert_cut_is(tmp_path / "cut.wav", source, fmt)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cut.wav"], "no partial or temporary file remains"


def test_blender_mixdown_is_exact_where_aud_is_missing(compat, cut_audio, sources, tmp_path, monkeypatch):
    """The mixdown path alone (Debian's, for all but WAV), fed a 16-bit WAV so that every sample must match."""
    fmt = FORMATS[1]
    source = make_source(sources, fmt)
    read_layout = cut_audio.read_wav_layout
    monkeypatch.setattr(cut_audio, "read_wav_layout", lambda path: None if path == str(source) else read_layout(path))
    monkeypatch.setitem(sys.modules, "aud", None)
    request = cut_audio.CutAudioRequest(source=str(source), output=str(tmp_path / "cut.wav"),
                                        start=CUT_START, seconds=CUT_SECONDS)
    if not compat.has_audio_support():
        with pytest.raises(cut_audio.CutError, match="cannot decode WAV sound"):
            cut_audio.cut_audio(request)
        return

    cut_audio.cut_audio(request)

    assert_cut_is(tmp_path / "cut.wav", source, fmt)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cut.wav"], "the mixdown's file is removed"


# --- Without aud, through the extension's own entry points ------------------------------------------


@pytest.fixture(scope="module")
def talking_movie(sources: pathlib.Path) -> pathlib.Path:
    """4 s of 25 fps test picture with a stereo 48 kHz chirp, as an mp4 with AAC sound (made by ffmpeg)."""
    path = sources / "talking.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=4",
         "-f", "lavfi", "-i", f"aevalsrc={chirps(2)}:s=48000:d=4", "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", str(path)])
    return path


def movie_strip(compat: ModuleType, scene, path: pathlib.Path):
    compat.set_scene_fps(scene, 25)
    strip = compat.new_movie(scene, "Take", str(path), channel=2, frame_start=1)
    strip.frame_offset_start, strip.frame_offset_end = 20, 35  # shows source frames 20-64: 0.8 s to 2.6 s
    return strip


def test_movie_sound_is_cut_with_or_without_aud(compat, media, user_scene, talking_movie, tmp_path, build):
    strip = movie_strip(compat, user_scene, talking_movie)

    assert media.movie_has_audio(strip), "told from the mp4's tracks, with or without aud"
    if not compat.has_audio_support():
        with pytest.raises(media.MediaError, match=r"^This Blender build cannot decode MP4 sound .* WAV"):
            media.prepare_movie_audio(strip, user_scene, str(tmp_path))
        return
    before = (sorted(bpy.data.scenes.keys()), sorted(bpy.data.sounds.keys()))
    prepared = media.prepare_movie_audio(strip, user_scene, str(tmp_path))

    assert (sorted(bpy.data.scenes.keys()), sorted(bpy.data.sounds.keys())) == before, "no scene or sound left"
    count = round(1.8 * 48000)
    assert probe(pathlib.Path(prepared.path))["duration_ts"] == count and prepared.duration == pytest.approx(1.8)
    oracle = oracle_samples(talking_movie, round(0.8 * 48000), count, 2)
    shift, score = best_shift(decoded_samples(pathlib.Path(prepared.path)), oracle, 2)
    assert abs(shift) <= 1 and score >= 0.99, (shift, score)


def ffprobe_seconds(path: pathlib.Path) -> float:
    done = run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)])
    return float(done.stdout)


# Blender's length of an MP3 includes the encoder's delay and padding (about 50 ms); ffprobe's does not.
LENGTH_TOLERANCE = {".mp3": 0.08}


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_audio_file_length_with_or_without_aud(compat, media, sources, fmt, build):
    source = make_source(sources, fmt)
    expected = ffprobe_seconds(source)
    told_cheaply = fmt.suffix in (".wav", ".m4a") or build == "as built" and compat.has_aud_module()

    cheap = media.audio_file_seconds(str(source))
    measured = media.measure_audio_seconds(str(source))
    prepared = media.prepare_audio_file(str(source))

    assert prepared.is_source_file and prepared.path == str(source)
    if told_cheaply:
        assert cheap == pytest.approx(expected, abs=LENGTH_TOLERANCE.get(fmt.suffix, 0.03))
    else:
        assert cheap is None, "without aud only headers are read in draw()"
    if told_cheaply or compat.has_audio_support():
        assert measured == pytest.approx(expected, abs=LENGTH_TOLERANCE.get(fmt.suffix, 0.03))
        assert prepared.duration == measured
    else:
        assert measured is None and prepared.duration == 0.0, "uploaded as it is, its length unknown"


def test_placed_result_keeps_its_sound_without_aud(compat, placement, user_scene, talking_movie, build):
    compat.set_scene_fps(user_scene, 25)
    source = compat.new_movie(user_scene, "Source", str(talking_movie), channel=1, frame_start=1)

    names = placement.place_result(user_scene, source.name, str(talking_movie), job_id=f"job-{build}",
                                   name="Take TF")

    strips = [compat.all_strips(user_scene)[name] for name in names]
    if not compat.has_audio_support():
        assert [strip.type for strip in strips] == ["MOVIE"], "no sound strip can exist without Audaspace"
        return
    assert [strip.type for strip in strips] == ["MOVIE", "SOUND"]
    assert abs(strips[1].frame_final_duration - 4 * 25) <= 1


# --- The background command, as the controller runs it -------------------------------------------

SITECUSTOMIZE = '''"""Test-only: ``import aud`` fails once bpy is imported, as in Debian's Blender."""
import importlib.abc
import importlib.util
import sys


class BlockAudAfterBpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "bpy":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            sys.modules["aud"] = None  # bpy registers aud itself; None makes importing it fail

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, BlockAudAfterBpy())
'''

# Stands for the Blender program: runs ``--python SCRIPT -- ARGS`` of a Blender command line in this bpy.
BLENDER_SHIM = '''import os, sys
arguments = sys.argv[1:]
script = arguments[arguments.index("--python") + 1]
os.execv(sys.executable, [sys.executable, script, *arguments[arguments.index("--"):]])
'''


@pytest.fixture(scope="module")
def background_blender(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A stand-in for ``blender -b`` (this venv's bpy) and an environment in which aud cannot be imported."""
    folder = tmp_path_factory.mktemp("no_aud")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    shim = folder / "blender"
    shim.write_text(f"#!{sys.executable}\n{BLENDER_SHIM}")
    shim.chmod(0o755)
    return str(shim), dict(os.environ, PYTHONPATH=str(folder))


def test_the_child_really_has_no_aud(background_blender):
    _, environment = background_blender
    done = subprocess.run([sys.executable, "-c", "import bpy\ntry:\n import aud\nexcept ImportError:\n print('no aud')"],
                          capture_output=True, text=True, env=environment, check=False)
    assert "no aud" in done.stdout.splitlines(), done.stdout + done.stderr


def run_command(command: list[str], environment: dict[str, str]) -> tuple[int, list[str]]:
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    return done.returncode, done.stdout.splitlines()


def test_background_command_cuts_a_sound_strip_exactly(compat, media, user_scene, tmp_path, background_blender,
                                                       sources):
    blender, environment = background_blender
    ramp = sample_media.write_ramp_wav(sources / "command_ramp.wav", seconds=3.0)
    compat.set_scene_fps(user_scene, 25)
    strip = sound_strips.add_sound_strip(compat, user_scene, "Line", ramp, channel=3, frame_start=1)
    strip.frame_offset_start, strip.frame_offset_end = 5, 30  # 0.2 s to 1.8 s of the file

    assert media.audio_needs_cut(strip)
    command, output = media.cut_audio_command(strip, user_scene, str(tmp_path / "work"), blender=blender)
    code, lines = run_command(command, environment)

    assert code == 0, lines
    fractions = [fraction for fraction in map(media.parse_cut_progress, lines) if fraction is not None]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    prepared = media.describe_audio(output, is_source_file=False)
    assert prepared.duration == pytest.approx(1.6) and not prepared.is_source_file
    samples, rate = sample_media.wav_samples(output)
    assert list(samples) == list(range(round(0.2 * rate), round(1.8 * rate)))


def test_background_command_cuts_a_movie_sound_without_aud(compat, media, user_scene, talking_movie, tmp_path,
                                                           background_blender):
    blender, environment = background_blender
    strip = movie_strip(compat, user_scene, talking_movie)

    command, output = media.cut_audio_command(strip, user_scene, str(tmp_path / "work"), blender=blender)
    code, lines = run_command(command, environment)

    if not compat.has_audio_support():
        assert code == 1 and lines[-1].startswith("TALKING_FACE_ERROR This Blender build cannot decode MP4 sound")
        assert not pathlib.Path(output).exists()
        return
    assert code == 0, lines
    assert lines[-1] == f"TALKING_FACE_DONE {round(1.8 * 48000)} {output}"
    oracle = oracle_samples(talking_movie, round(0.8 * 48000), round(1.8 * 48000), 2)
    shift, score = best_shift(decoded_samples(pathlib.Path(output)), oracle, 2)
    assert abs(shift) <= 1 and score >= 0.99, (shift, score)
    assert sorted(path.name for path in pathlib.Path(output).parent.iterdir()) == [pathlib.Path(output).name]


def test_cut_request_survives_the_command_line(cut_audio):
    request = cut_audio.CutAudioRequest(source="/tmp/-odd name.wav", output="/tmp/out.wav",
                                        start=0.1 + 0.2, seconds=1 / 3)
    assert cut_audio.CutAudioRequest.from_args(request.to_args()) == request
