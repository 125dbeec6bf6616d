"""The GUI lane: Debian's Blender 4.3 with a real window under Xvfb, driven through its event loop.

Every test here starts real Blender processes (``chroot`` into the cached Debian root of
``debian_root.py``) on a copy of one user folder where the built zip was installed with a
window, the way an artist installs it. Scenarios run inside Blender (``gui_driver.py``); the
tests check what they did from the outside: the sandbox's request log (it runs here, on
127.0.0.1, and the root shares the loopback), the saved .blend read back by another Blender,
the files, Blender's console and the screenshots.

Run alone: ``python3 tools/dev.py test --gui-only`` (or ``--no-gui`` to leave the lane out).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import debian_root
import pytest

from newport_api.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
API_KEY = "sk-gui-lane-0123456789abcdef"
SCREEN = "-screen 0 1600x1000x24"
MOVIE_FRAMES = 100  # 4 s at 25 fps
TRIM = 10  # frames hidden at each end of the movie strip
SOUND_TRIM = 3  # frames hidden at the start of the sound strip (an MP3: cut by Blender's own mixdown)
ARTEFACTS = Path(os.environ.get("TALKING_FACE_GUI_ARTEFACTS", HERE.parents[1] / "build" / "gui"))
GAPS: dict[str, list[tuple[float, str]]] = {}  # session -> event-loop gaps (ms) with the job's phase then
GOALS: dict[str, float] = {}


@pytest.fixture(scope="session")
def gui_root() -> Path:
    try:
        return debian_root.ensure_root()
    except (debian_root.RootError, OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"the GUI lane cannot run: {error}", pytrace=False)


@pytest.fixture(scope="session")
def extension_zip() -> Path:
    given = os.environ.get("TALKING_FACE_ZIP", "")
    if not given or not Path(given).is_file():
        pytest.fail("TALKING_FACE_ZIP names no built zip: run the lane through `python3 tools/dev.py test`",
                    pytrace=False)
    return Path(given)


@dataclass
class Run:
    """What one Blender session did: the driver's facts and Blender's console."""

    facts: dict[str, Any]
    console: str
    returncode: int

    def check(self) -> Run:
        assert not self.facts.get("error"), f"the scenario failed inside Blender:\n{self.facts['error']}\n" \
                                            f"--- console ---\n{self.console[-4000:]}"
        assert "Traceback" not in self.console, f"a Python traceback in Blender's console:\n{self.console[-4000:]}"
        return self


@dataclass
class GuiBlender:
    """Starts Debian's Blender in the root, with a window, on one test's folder."""

    root: Path
    folder: Path
    sandbox_url: str = ""
    runs: list[Run] = field(default_factory=list)

    @property
    def user(self) -> Path:
        return self.folder / "user"

    @property
    def project(self) -> Path:
        return self.folder / "project" / "project.blend"

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        home = self.folder / "home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home / "tmp"),
                "LANG": "C.UTF-8", "BLENDER_USER_RESOURCES": str(self.user), "NEWPORT_API_KEY": API_KEY,
                "TF_GUI_BASE_URL": self.sandbox_url,
                "TF_GUI_SHOTS": str(self.folder / "shots"), "TF_GUI_SIGNALS": str(self.folder / "signals"),
                **{key: value for key, value in os.environ.items() if key.startswith("TF_GUI_")}, **extra}

    def start(self, scenario: str, *, blend: Path | None = None, factory: bool = False,
              env: dict[str, str] | None = None, name: str = "") -> subprocess.Popen:
        """Start Blender with a window on ``blend`` running ``scenario`` (a file in tests/gui/scenarios)."""
        shutil.copy(HERE / "gui_driver.py", self.folder / "gui_driver.py")
        script = self.folder / scenario
        shutil.copy(HERE / "scenarios" / scenario, script)
        name = name or f"{self.folder.name[:28]}/{Path(scenario).stem}-{len(self.runs)}"
        result = self.folder / f"{name.rpartition('/')[2]}.json"
        result.unlink(missing_ok=True)
        blender = ["blender", *(["--factory-startup"] if factory else []), *([str(blend)] if blend else []),
                   "--python", str(self.folder / "gui_driver.py")]
        command = ["chroot", str(self.root), "/usr/bin/env", "-i",
                   *(f"{key}={value}" for key, value in self.environment(
                       {"TF_GUI_RESULT": str(result), "TF_GUI_SCENARIO": str(script), **(env or {})}).items()),
                   "xvfb-run", "-a", "-s", SCREEN, *blender]
        log = (self.folder / f"{name.rpartition('/')[2]}.console.txt").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        process.result_path, process.console_path, process.name = result, Path(log.name), name  # type: ignore[attr-defined]
        return process

    def finish(self, process: subprocess.Popen, timeout: float = 240.0) -> Run:
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"Blender ({process.name}) did not finish in {timeout:.0f}s:\n"  # type: ignore[attr-defined]
                        f"{process.console_path.read_text(errors='replace')[-3000:]}")  # type: ignore[attr-defined]
        console = process.console_path.read_text(errors="replace")  # type: ignore[attr-defined]
        result_path: Path = process.result_path  # type: ignore[attr-defined]
        facts = json.loads(result_path.read_text()) if result_path.is_file() else {
            "error": f"Blender exited ({code}) without writing its facts"}
        run = Run(facts, console, code)
        self.runs.append(run)
        phases = facts.get("gap_phases", [])
        GAPS.setdefault(process.name, []).extend(zip(facts.get("gaps_ms", []), phases))  # type: ignore[attr-defined]
        keep_screenshots(facts)
        return run

    def run(self, scenario: str, timeout: float = 240.0, **options: Any) -> Run:
        return self.finish(self.start(scenario, **options), timeout)

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the whole session (xvfb-run, Xvfb, Blender): a crash, as far as Blender can tell."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        # A killed session writes no facts: keep the screenshots it took (those of the test so far).
        keep_screenshots({"screenshots": [str(path) for path in sorted((self.folder / "shots").glob("*.png"))]})

    def signal(self, name: str) -> None:
        """Tell the scenario to go on (it waits with ``gui_driver.received(name)``)."""
        (self.folder / "signals").mkdir(exist_ok=True)
        (self.folder / "signals" / name).touch()

    def wait_signal(self, name: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
        """Wait until the scenario in ``process`` says ``gui_driver.signal(name)``."""
        marker = self.folder / "signals" / f"from-blender-{name}"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if process.poll() is not None:
                self.finish(process).check()
                pytest.fail(f"Blender ended before it reached {name!r}")
            if time.monotonic() > deadline:
                pytest.fail(f"Blender never reached {name!r}")
            time.sleep(0.05)

    def inspect(self, blend: Path | None = None) -> dict[str, Any]:
        """The saved .blend as another (background) Blender reads it: every strip with its facts."""
        shutil.copy(HERE / "scenarios" / "inspect_blend.py", self.folder / "inspect_blend.py")
        output = self.folder / "inspected.json"
        done = subprocess.run(["chroot", str(self.root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
                               f"HOME={self.folder / 'home'}", "blender", "-b", "--factory-startup",
                               str(blend or self.project), "--python", str(self.folder / "inspect_blend.py"),
                               "--", str(output)], capture_output=True, text=True, check=False, timeout=120)
        assert output.is_file(), f"could not read {blend or self.project}:\n{done.stdout[-2000:]}{done.stderr}"
        return json.loads(output.read_text())

    def job_records(self) -> list[dict[str, Any]]:
        folder = self.user / "extensions" / ".user" / "user_default" / "talking_face" / "jobs"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]

    def ffprobe_seconds(self, path: str) -> float:
        done = subprocess.run(["chroot", str(self.root), "ffprobe", "-v", "error", "-show_entries",
                               "format=duration", "-of", "csv=p=0", path], capture_output=True, text=True, check=True)
        return float(done.stdout.strip())

    def ffprobe_frames(self, path: str) -> int:
        done = subprocess.run(["chroot", str(self.root), "ffprobe", "-v", "error", "-count_frames",
                               "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames",
                               "-of", "csv=p=0", path], capture_output=True, text=True, check=True)
        return int(done.stdout.strip())


def keep_screenshots(facts: dict[str, Any]) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for path in facts.get("screenshots", []):
        if Path(path).is_file():
            shutil.copy(path, ARTEFACTS / Path(path).name)


def make_media(root: Path, folder: Path) -> None:
    """A moving test pattern with its own sound, and a line of 'speech' — as files artists have."""
    folder.mkdir(parents=True, exist_ok=True)
    ffmpeg = ["chroot", str(root), "ffmpeg", "-v", "error", "-y"]
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={MOVIE_FRAMES / 25}",
                    "-f", "lavfi", "-i", f"sine=frequency=220:duration={MOVIE_FRAMES / 25}:sample_rate=48000",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-shortest",
                    str(folder / "take.mp4")], check=True)
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "sine=frequency=440:duration=2.4:sample_rate=48000",
                    "-c:a", "pcm_s16le", str(folder / "line.wav")], check=True)
    subprocess.run([*ffmpeg, "-i", str(folder / "line.wav"), "-c:a", "libmp3lame", "-b:a", "128k",
                    str(folder / "line.mp3")], check=True)


@pytest.fixture(scope="session")
def installed(gui_root: Path, extension_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Install from Disk with a window, enable, save preferences; make the project. Done once, copied after."""
    template = tmp_path_factory.mktemp("gui-template")
    shutil.copy(extension_zip, template / "talking_face.zip")
    make_media(gui_root, template / "project")
    blender = GuiBlender(gui_root, template)
    run = blender.run("install_and_project.py", factory=True,
                      env={"TF_GUI_ZIP": str(template / "talking_face.zip")}).check()
    run.facts["template"] = str(template)
    return run


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(processing_seconds=3.0, queued_seconds=0.5, api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture
def gui(installed: Run, gui_root: Path, tmp_path: Path, sandbox: Sandbox) -> GuiBlender:
    """A fresh copy of the installed user folder and the project, for one test."""
    template = Path(installed.facts["template"])
    shutil.copytree(template / "user", tmp_path / "user", symlinks=True)
    shutil.copytree(template / "project", tmp_path / "project")
    return GuiBlender(gui_root, tmp_path, sandbox_url=sandbox.base_url)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not GAPS and not GOALS:
        return
    write = terminalreporter.write_line
    load = os.getloadavg()
    terminalreporter.section("GUI lane: Blender's event loop and goals")
    write(f"machine load (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    write(f"{'session':<56} {'ticks':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  (probe every 10 ms)")
    by_phase: dict[str, list[float]] = {}
    for name, gaps in sorted(GAPS.items()):
        values = [gap for gap, _phase in gaps]
        if values:
            write(f"{name:<56} {len(values):>6} {statistics.median(values):>8.1f} "
                  f"{percentile(values, 0.99):>8.1f} {max(values):>8.1f}")
        if "install_and_project" not in name:  # installing is a blocking operator of Blender's own
            for gap, phase in gaps:
                by_phase.setdefault(phase, []).append(gap)
    write("per job phase, every session (goal: no gap over 50 ms):")
    for phase, values in sorted(by_phase.items()):
        over = sum(1 for value in values if value > 50.0)
        write(f"  {phase:<14} {len(values):>6} ticks  p99 {percentile(values, 0.99):>7.1f} ms  "
              f"max {max(values):>7.1f} ms  over 50 ms: {over}")
    for goal, value in sorted(GOALS.items()):
        write(f"{goal}: {value:.1f}")
