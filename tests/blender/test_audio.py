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
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

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
