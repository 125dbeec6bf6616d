#!/usr/bin/env python3
"""Developer commands for Talking Face for Blender (standard library only).

    python3 tools/dev.py setup [--bpy VER ...]   create .venvs/dev and .venvs/bpy-<VER>
    python3 tools/dev.py build [--bpy VER]       build + validate the extension zip (dist/)
    python3 tools/dev.py repo OUTDIR [--bpy VER] a static extension repository (index.json + zip)
    python3 tools/dev.py test  [--quick] [-k EX] [--no-gui | --gui-only]
                                                 ruff, bpy-free tests, Blender tests per version, GUI lane
    python3 tools/dev.py demo  [ARGS ...]        run tools/demo.py in the newest Blender
    python3 tools/dev.py bench [ARGS ...]        benchmarks vs curl and ffmpeg; writes BENCHMARKS.md

Venvs live in .venvs/ inside the repo: .venvs/dev (pytest, requests, ruff) for lint
and the bpy-free tests, one .venvs/bpy-<VER> (bpy==VER, pytest, requests) per
supported Blender.  The zip is built by Blender's own ``blender_ext.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENVS = REPO_ROOT / ".venvs"
DEFAULT_DIST = REPO_ROOT / "dist"

# The supported Blender versions, oldest first: the one place they are pinned.
BLENDER_VERSIONS: tuple[str, ...] = ("4.2.23", "4.5.15", "5.0.1")
# Blender 4.2 to 5.0 embed Python 3.11; their bpy wheels exist for it alone.
BPY_PYTHON = (3, 11)
DEV_REQUIREMENTS: tuple[str, ...] = ("pytest>=8.1", "requests", "ruff~=0.17.6")
BPY_EXTRA_REQUIREMENTS: tuple[str, ...] = ("pytest>=8.1", "requests")
MARKER_NAME = ".talking-face-setup.json"
BLENDER_EXT_IN_LOCAL = "scripts/addons_core/bl_pkg/cli/blender_ext.py"


class DevError(Exception):
    """A failure with a message for the developer (no traceback needed)."""


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def rel(path: Path) -> str:
    """``path`` relative to the repo root when it is inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def newest(versions: Sequence[str]) -> str:
    return max(versions, key=version_key)


def unique(versions: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(versions))


# -- venvs ---------------------------------------------------------------------------------------------


def venv_dir(name: str) -> Path:
    return VENVS / name


def bpy_venv_name(version: str) -> str:
    return f"bpy-{version}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def bpy_requirements(version: str) -> tuple[str, ...]:
    return (f"bpy=={version}", *BPY_EXTRA_REQUIREMENTS)


def base_python() -> str:
    """A Python 3.11 to create the venvs with: this interpreter, else ``python3.11`` on PATH."""
    if sys.version_info[:2] == BPY_PYTHON:
        return sys.executable
    wanted = "python{}.{}".format(*BPY_PYTHON)
    found = shutil.which(wanted)
    if not found:
        raise DevError(f"the bpy wheels need Python {'.'.join(map(str, BPY_PYTHON))}; "
                       f"this is {sys.version.split()[0]} and no {wanted} is on PATH")
    return found


def marker_content(requirements: Sequence[str], python: str) -> dict[str, object]:
    return {"requirements": list(requirements), "python": os.path.realpath(python)}


def read_marker(venv: Path) -> dict[str, object] | None:
    try:
        return json.loads((venv / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def venv_is_ready(venv: Path, wanted: dict[str, object]) -> bool:
    return venv_python(venv).is_file() and read_marker(venv) == wanted


def create_venv(name: str, requirements: Sequence[str], python: str) -> str:
    """Create (or bring up to date) ``.venvs/<name>``; returns a one-line report.  Logs to .venvs/<name>.log."""
    venv = venv_dir(name)
    wanted = marker_content(requirements, python)
    if venv_is_ready(venv, wanted):
        return f"{rel(venv)}: up to date"
    log_path = VENVS / f"{name}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        steps = []
        marker = read_marker(venv)
        if not venv_python(venv).is_file() or (marker and marker.get("python") != wanted["python"]):
            steps.append([python, "-m", "venv", "--clear", str(venv)])
        steps.append([str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
                      *requirements])
        for command in steps:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  check=False)
            if done.returncode != 0:
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
                raise DevError(f"setting up {rel(venv)} failed (exit {done.returncode}); "
                               f"end of {rel(log_path)}:\n{tail}")
    (venv / MARKER_NAME).write_text(json.dumps(wanted, indent=1) + "\n")
    return f"{rel(venv)}: installed {' '.join(requirements)} in {time.monotonic() - started:.0f}s"


def setup(bpy_versions: Sequence[str], *, dev: bool = True) -> None:
    """Create the dev venv and one venv per Blender version, in parallel; fast when already done."""
    python = base_python()
    wanted: dict[str, tuple[str, ...]] = {"dev": DEV_REQUIREMENTS} if dev else {}
    wanted |= {bpy_venv_name(version): bpy_requirements(version) for version in bpy_versions}
    VENVS.mkdir(exist_ok=True)
    todo = {name: reqs for name, reqs in wanted.items()
            if not venv_is_ready(venv_dir(name), marker_content(reqs, python))}
    if not todo:
        say(f"setup: venvs up to date ({', '.join(wanted)})")
        return
    for name, reqs in todo.items():
        say(f"setup: {rel(venv_dir(name))} <- {' '.join(reqs)} (log: {rel(VENVS / (name + '.log'))})")
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        futures = [pool.submit(create_venv, name, reqs, python) for name, reqs in todo.items()]
        errors = []
        for future in futures:
            try:
                say(f"setup: {future.result()}")
            except DevError as error:
                errors.append(str(error))
    if errors:
        raise DevError("\n".join(errors))


# -- build ---------------------------------------------------------------------------------------------


def blender_ext_cli(bpy_version: str) -> Path:
    """``blender_ext.py`` as shipped in the bpy wheel of that venv (asked of bpy itself)."""
    python = venv_python(venv_dir(bpy_venv_name(bpy_version)))
    probe = ("import pathlib, bpy; "
             "print(pathlib.Path(bpy.utils.resource_path('LOCAL')), flush=True)")
    with tempfile.TemporaryDirectory(prefix="talking_face_probe_") as user_resources:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                              env={**os.environ, "BLENDER_USER_RESOURCES": user_resources},
                              stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise DevError(f"could not import bpy {bpy_version}:\n{done.stdout}{done.stderr}")
    cli = Path(done.stdout.strip().splitlines()[-1]) / BLENDER_EXT_IN_LOCAL
    if not cli.is_file():
        raise DevError(f"bpy {bpy_version} has no {BLENDER_EXT_IN_LOCAL}")
    return cli


def read_manifest(source_dir: Path = REPO_ROOT) -> dict:
    return tomllib.loads((source_dir / "blender_manifest.toml").read_text(encoding="utf-8"))


def expected_zip_name(source_dir: Path = REPO_ROOT) -> str:
    manifest = read_manifest(source_dir)
    return f"{manifest['id']}-{manifest['version']}.zip"


def build(bpy_version: str, output_dir: Path, source_dir: Path = REPO_ROOT) -> Path:
    """Build the zip with Blender's own tool, validate it with the same tool, return its path."""
    python = str(venv_python(venv_dir(bpy_venv_name(bpy_version))))
    cli = str(blender_ext_cli(bpy_version))
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / expected_zip_name(source_dir)
    say(f"build: blender_ext.py build (Blender {bpy_version}) -> {rel(output_dir)}")
    run_checked([python, cli, "build", "--source-dir", str(source_dir), "--output-dir", str(output_dir)],
                "blender_ext.py build")
    if not zip_path.is_file():
        raise DevError(f"blender_ext.py build made no {zip_path}")
    say(f"build: blender_ext.py validate {rel(zip_path)}")
    run_checked([python, cli, "validate", str(zip_path)], "blender_ext.py validate")
    with zipfile.ZipFile(zip_path) as archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
    say(f"build: {rel(zip_path)}: {len(files)} files, {zip_path.stat().st_size / 1024:.0f} KiB "
        f"({sum(info.file_size for info in files) / 1024:.0f} KiB unpacked)")
    return zip_path


def repo(bpy_version: str, repo_dir: Path, source_dir: Path = REPO_ROOT) -> Path:
    """A static remote extension repository in ``repo_dir``: the zip and Blender's own index.json.

    Older builds of the same extension are removed first, so the index lists one
    version; any other extension's zips in the folder stay listed.  Serve the
    folder with any static web server and add ``<its URL>/index.json`` in Blender.
    """
    manifest = read_manifest(source_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    for old in repo_dir.glob(f"{manifest['id']}-*.zip"):
        say(f"repo: removing the older build {old.name}")
        old.unlink()
    zip_path = build(bpy_version, repo_dir, source_dir)
    python = str(venv_python(venv_dir(bpy_venv_name(bpy_version))))
    say(f"repo: blender_ext.py server-generate --repo-dir {rel(repo_dir)}")
    run_checked([python, str(blender_ext_cli(bpy_version)), "server-generate", "--repo-dir", str(repo_dir),
                 "--html"], "blender_ext.py server-generate")
    index = repo_dir / "index.json"
    listed = [(item["id"], item["version"]) for item in json.loads(index.read_text())["data"]]
    say(f"repo: {rel(index)} lists {', '.join(f'{name} {version}' for name, version in listed)}; "
        f"serve {rel(repo_dir)}/ and add <URL>/index.json as a remote repository in Blender")
    return zip_path


def run_checked(command: Sequence[str], what: str) -> None:
    done = subprocess.run(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise DevError(f"{what} failed (exit {done.returncode})")


# -- test ----------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PYTEST_CLOSING = re.compile(r"^=*\s*(?P<counts>.*?)\s+in [\d.]+s(?: \([\d:]+\))?\s*=*$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)")


@dataclass
class Suite:
    """One step of ``test``: ruff, or a pytest run in one venv."""

    name: str
    exit_code: int | None = None  # None: did not run
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    is_pytest: bool = True
    all_deselected: bool = False  # exit 5 because -k deselected every test: not a failure
    log: str = field(default="", repr=False)  # the output of a run that was not echoed live

    @property
    def passed(self) -> int:
        return self.counts.get("passed", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("error", 0) + self.counts.get("errors", 0)

    @property
    def skipped(self) -> int:
        return self.counts.get("skipped", 0)

    @property
    def ok(self) -> bool:
        if self.all_deselected:
            return True
        return self.exit_code == 0 and (not self.is_pytest or self.passed + self.skipped > 0)

    def describe(self) -> str:
        if self.exit_code is None:
            result = "not run"
        elif self.is_pytest:
            result = f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"
        else:
            result = "clean" if self.exit_code == 0 else f"exit {self.exit_code}"
        verdict = "ok" if self.ok else "FAILED"
        note = f" ({self.note})" if self.note else ""
        return f"{self.name:<30} {result:<36} {verdict}{note}  [{self.seconds:.0f}s]"


def parse_pytest_counts(output: str) -> dict[str, int] | None:
    """Counts from pytest's closing line (``3 passed, 1 skipped in 0.4s``), or None if there is none."""
    for line in reversed(ANSI.sub("", output).splitlines()):
        match = PYTEST_CLOSING.match(line.strip())
        if match and ("no tests ran" in line or PYTEST_COUNT.search(match["counts"])):
            return {kind: int(number) for number, kind in PYTEST_COUNT.findall(match["counts"])}
    return None


def shown(command: Sequence[str]) -> str:
    return " ".join(rel(Path(part)) if part.startswith(str(REPO_ROOT)) else part for part in command)


def stream(command: Sequence[str], env: dict[str, str] | None = None, *, echo: bool = True) -> tuple[int, str]:
    """Run ``command`` in the repo root, echoing its output live unless not ``echo``; returns exit code and output."""
    if echo:
        say("$ " + shown(command))
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    chunks = []
    while chunk := os.read(process.stdout.fileno(), 65536):
        if echo:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        chunks.append(chunk)
    return process.wait(), b"".join(chunks).decode(errors="replace")


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TALKING_FACE_ZIP"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_ruff() -> Suite:
    suite = Suite("ruff check", is_pytest=False)
    started = time.monotonic()
    suite.exit_code, _ = stream([str(venv_python(venv_dir("dev"))), "-m", "ruff", "check", "."],
                                env=child_env())
    suite.seconds = time.monotonic() - started
    return suite


def run_pytest(name: str, venv: Path, args: Sequence[str], keyword: str | None,
               env: dict[str, str], *, echo: bool = True) -> Suite:
    """One pytest run; exit 5 (no tests collected) is a failure unless ``-k`` deselected them all.

    Without ``echo`` (runs side by side) its output is kept in ``Suite.log`` for the caller to print.
    """
    suite = Suite(name)
    command = [str(venv_python(venv)), "-m", "pytest", *args, "-q", "-rs",
               f"--confcutdir={REPO_ROOT / 'tests'}"]
    if keyword:
        command += ["-k", keyword]
    if sys.stdout.isatty():
        command.append("--color=yes")
    started = time.monotonic()
    suite.exit_code, output = stream(command, env=env, echo=echo)
    suite.seconds = time.monotonic() - started
    if not echo:
        suite.log = f"[dev] {name}: $ {shown(command)}  [{suite.seconds:.0f}s]\n{output}"
    counts = parse_pytest_counts(output)
    if counts is None:
        suite.note = "no pytest summary line found"
        suite.exit_code = suite.exit_code or 1
        return suite
    suite.counts = counts
    if suite.exit_code == 5:
        if keyword and counts.get("deselected"):
            suite.all_deselected, suite.note = True, f"all deselected by -k {keyword!r}"
        else:
            suite.note = "collected no tests"
    return suite


def run_readme_demo() -> Suite:
    """The README's first command, exactly as written there: it must keep working."""
    suite = Suite("README: python3 tools/dev.py demo", is_pytest=False)
    started = time.monotonic()
    suite.exit_code, _ = stream([sys.executable, str(REPO_ROOT / "tools" / "dev.py"), "demo"], env=child_env())
    suite.seconds = time.monotonic() - started
    return suite


def print_summary(suites: Sequence[Suite], seconds: float) -> None:
    """One line per suite, then the aggregate line, which is the very last line printed."""
    pytest_suites = [suite for suite in suites if suite.is_pytest]
    print("\n" + "=" * 32 + " summary " + "=" * 32, flush=True)
    for suite in suites:
        print(suite.describe())
    verdict = "all passed" if all(suite.ok for suite in suites) else "FAILED"
    print(f"dev.py test: {verdict} in {seconds:.0f}s")
    passed = sum(suite.passed for suite in pytest_suites)
    failed = sum(suite.failed for suite in pytest_suites)
    skipped = sum(suite.skipped for suite in pytest_suites)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)


def build_for_tests(bpy_version: str) -> tuple[Suite, Path | None]:
    step = Suite(f"build zip (Blender {bpy_version})", is_pytest=False)
    started = time.monotonic()
    zip_path = None
    try:
        zip_path = build(bpy_version, DEFAULT_DIST)
        step.exit_code, step.note = 0, rel(zip_path)
    except DevError as error:
        print(error, flush=True)
        step.exit_code = 1
    step.seconds = time.monotonic() - started
    return step, zip_path


GUI_SUITE = "tests/gui (Debian's Blender 4.3, window)"


def ensure_ffmpeg() -> Suite:
    """ffmpeg and ffprobe, which make and check the tests' media (installed as the bench does)."""
    step = Suite("ffmpeg for the tests' media", is_pytest=False)
    started = time.monotonic()
    step.exit_code = subprocess.run([sys.executable, "-c", "import setup_tools; setup_tools.ensure_tools()"],
                                    cwd=REPO_ROOT / "bench", stdin=subprocess.DEVNULL, check=False).returncode
    step.seconds = time.monotonic() - started
    return step


def blender_suites(bpy_versions: Sequence[str], keyword: str | None, gui: bool) -> list[Suite]:
    """Build the zip once, then run tests/blender against it in every bpy venv at once, then the GUI lane.

    The bpy lanes run side by side: each waits on Blender children and sandboxes most of the time
    (about half a core each), which keeps the whole of ``.ci/run`` within 30 minutes on 2 cores.
    Each has its own pytest temporary folder; their outputs are printed one after the other.
    The GUI lane runs alone: it measures gaps in a real Blender's event loop.
    """
    step, zip_path = build_for_tests(newest(bpy_versions or BLENDER_VERSIONS))
    suites = [step]
    names = [(f"tests/blender (bpy {version})", version) for version in bpy_versions]
    if zip_path is None:
        not_built = [name for name, _ in names] + ([GUI_SUITE] if gui else [])
        return suites + [Suite(name, note="zip did not build") for name in not_built]
    env = child_env(TALKING_FACE_ZIP=str(zip_path))
    with tempfile.TemporaryDirectory(prefix="talking-face-lanes-") as temporary:
        def lane(name: str, version: str) -> Suite:
            basetemp = Path(temporary) / version
            return run_pytest(name, venv_dir(bpy_venv_name(version)), ["tests/blender", f"--basetemp={basetemp}"],
                              keyword, env, echo=len(names) == 1)
        if names:
            say(f"tests/blender in {len(names)} bpy venvs side by side: " + ", ".join(bpy_versions))
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                lanes = list(pool.map(lane, *zip(*names)))
            for suite in lanes:
                print(suite.log, end="" if suite.log.endswith("\n") else "\n", flush=True)
            suites += lanes
    if gui:
        suites.append(run_pytest(GUI_SUITE, venv_dir("dev"), ["tests/gui"], keyword, env))
    return suites


def test(bpy_versions: Sequence[str], keyword: str | None, quick: bool, gui: str = "with") -> int:
    """Lint, bpy-free tests, build once, Blender tests in each bpy venv and the GUI lane; 0 only if all passed.

    ``gui``: "with" (the default), "without" (leave the GUI lane out) or "only" (just the lane).
    """
    started = time.monotonic()
    bpy_versions = () if quick or gui == "only" else bpy_versions
    setup(bpy_versions or ([newest(BLENDER_VERSIONS)] if gui == "only" else []))
    suites = [ensure_ffmpeg()] + ([] if gui == "only" else [
        run_ruff(),
        run_pytest("tests (no Blender)", venv_dir("dev"), ["tests", "--ignore=tests/blender", "--ignore=tests/gui"],
                   keyword, child_env())])
    if bpy_versions or gui == "only":
        suites += blender_suites(bpy_versions, keyword, gui=gui != "without" and not quick)
    if newest(BLENDER_VERSIONS) in bpy_versions and not keyword:
        suites.append(run_readme_demo())
    if keyword and not any(suite.passed + suite.failed + suite.skipped for suite in suites):
        suites.append(Suite(f"-k {keyword!r}", exit_code=1, note="selected no test at all", is_pytest=False))
    print_summary(suites, time.monotonic() - started)
    return 0 if all(suite.ok for suite in suites) else 1


# -- demo ----------------------------------------------------------------------------------------------


def demo(bpy_version: str, args: Sequence[str]) -> int:
    """Run tools/demo.py in the bpy venv, with ``TALKING_FACE_ZIP`` set to a fresh build."""
    script = REPO_ROOT / "tools" / "demo.py"
    if not script.is_file():
        print(f"{rel(script)} does not exist yet: there is no demo to run.", file=sys.stderr)
        return 1
    setup([bpy_version], dev=False)
    zip_path = build(bpy_version, DEFAULT_DIST)
    command = [str(venv_python(venv_dir(bpy_venv_name(bpy_version)))), str(script), *args]
    say(f"demo: {' '.join(command)}")
    env = child_env(TALKING_FACE_ZIP=str(zip_path))
    return subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode


# -- bench ---------------------------------------------------------------------------------------------


def bench(bpy_version: str, args: Sequence[str]) -> int:
    """Run bench/run.py in the bpy venv, with ``TALKING_FACE_ZIP`` set to a fresh build."""
    setup([bpy_version], dev=False)
    zip_path = build(bpy_version, DEFAULT_DIST)
    python = venv_python(venv_dir(bpy_venv_name(bpy_version)))
    args = args[1:] if args[:1] == ["--"] else args  # `dev.py bench -- --only tick`
    command = [str(python), str(REPO_ROOT / "bench" / "run.py"), *args]
    say(f"bench: {' '.join(command)}")
    env = child_env(TALKING_FACE_ZIP=str(zip_path))
    return subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode


# -- command line --------------------------------------------------------------------------------------


def known_version(value: str) -> str:
    if value not in BLENDER_VERSIONS:
        raise argparse.ArgumentTypeError(f"{value} is not one of {', '.join(BLENDER_VERSIONS)}")
    return value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python3 tools/dev.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Supported Blender (bpy) versions: {', '.join(BLENDER_VERSIONS)}.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bpy_many = {"type": known_version, "action": "extend", "nargs": "+", "metavar": "VER",
                "help": f"Blender versions (repeatable; default: all of {', '.join(BLENDER_VERSIONS)})"}

    setup_cmd = commands.add_parser("setup", help="create/update the venvs in .venvs/ (idempotent)",
                                    description="Create .venvs/dev and .venvs/bpy-<VER>, in parallel. "
                                                "A marker file in each venv records its requirements, "
                                                "so a second run does nothing.")
    setup_cmd.add_argument("--bpy", **bpy_many)

    build_cmd = commands.add_parser("build", help="build and validate the extension zip",
                                    description="Build the zip with blender_ext.py build from a bpy venv, "
                                                "then blender_ext.py validate it; prints its path.")
    build_cmd.add_argument("--bpy", type=known_version, default=newest(BLENDER_VERSIONS), metavar="VER",
                           help="Blender whose blender_ext.py builds it (default: %(default)s)")
    build_cmd.add_argument("--output-dir", type=Path, default=DEFAULT_DIST,
                           help=f"where the zip goes (default: {rel(DEFAULT_DIST)}/)")

    repo_cmd = commands.add_parser(
        "repo", help="write a static remote extension repository (index.json + zip) to OUTDIR",
        description="Build the zip into OUTDIR (replacing older builds of it) and write Blender's index.json "
                    "(and index.html) there with blender_ext.py server-generate. Serve OUTDIR with any static "
                    "web server; artists add <URL>/index.json under Preferences > Get Extensions > "
                    "Repositories > + > Add Remote Repository.")
    repo_cmd.add_argument("outdir", type=Path, metavar="OUTDIR", help="the repository folder")
    repo_cmd.add_argument("--bpy", type=known_version, default=newest(BLENDER_VERSIONS), metavar="VER",
                          help="Blender whose blender_ext.py builds it (default: %(default)s)")
    repo_cmd.add_argument("--source-dir", type=Path, default=REPO_ROOT,
                          help="the extension's source tree (default: this checkout)")

    test_cmd = commands.add_parser(
        "test", help="ruff, bpy-free tests, build, Blender tests per version",
        description="setup; ruff check .; pytest tests --ignore=tests/blender (dev venv); build the zip "
                    "once; pytest tests/blender in each bpy venv with TALKING_FACE_ZIP set; then the GUI "
                    "lane (tests/gui: Debian's Blender in a cached debootstrap root, under Xvfb). Ends with "
                    "one line 'N passed, N failed, N skipped' summed over all pytest runs; exits non-zero "
                    "if ruff or any run failed or collected no tests (unless -k deselected them all).")
    test_cmd.add_argument("--bpy", **bpy_many)
    test_cmd.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression for every run")
    test_cmd.add_argument("--quick", action="store_true",
                          help="only ruff and the bpy-free tests (no bpy venvs, no build)")
    lane = test_cmd.add_mutually_exclusive_group()
    lane.add_argument("--no-gui", dest="gui", action="store_const", const="without", default="with",
                      help="leave out the GUI lane (Debian's Blender with a window under Xvfb; needs root)")
    lane.add_argument("--gui-only", dest="gui", action="store_const", const="only",
                      help="only build the zip and run the GUI lane")

    demo_cmd = commands.add_parser("demo", help="run tools/demo.py in the newest Blender",
                                   description="setup the newest bpy venv, build the zip, then run "
                                               "tools/demo.py there with TALKING_FACE_ZIP set.")
    demo_cmd.add_argument("--bpy", type=known_version, default=newest(BLENDER_VERSIONS), metavar="VER",
                          help="Blender to run it in (default: %(default)s)")
    demo_cmd.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed on to demo.py")

    bench_cmd = commands.add_parser("bench", help="benchmarks side by side with curl and ffmpeg",
                                    description="setup the newest bpy venv, build the zip, then run bench/run.py "
                                                "there: installs curl and ffmpeg if missing, prints one table "
                                                "and writes BENCHMARKS.md (not a test: nothing fails on a timing).")
    bench_cmd.add_argument("--bpy", type=known_version, default=newest(BLENDER_VERSIONS), metavar="VER",
                           help="Blender to run it in (default: %(default)s)")
    bench_cmd.add_argument("args", nargs=argparse.REMAINDER,
                           help="arguments passed on to bench/run.py, after -- (e.g. -- --only tick,poll)")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "setup":
            setup(unique(args.bpy or BLENDER_VERSIONS))
            code = 0
        elif args.command == "build":
            setup([args.bpy], dev=False)
            print(build(args.bpy, args.output_dir.resolve()), flush=True)
            code = 0
        elif args.command == "repo":
            setup([args.bpy], dev=False)
            print(repo(args.bpy, args.outdir.resolve(), args.source_dir.resolve()), flush=True)
            code = 0
        elif args.command == "test":
            code = test(unique(args.bpy or BLENDER_VERSIONS), args.keyword, args.quick, args.gui)
        elif args.command == "bench":
            code = bench(args.bpy, args.args)
        else:
            code = demo(args.bpy, args.args)
    except DevError as error:
        print(f"[dev] error: {error}", file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    if args.command != "test":  # test ends on its summary line, which must stay the last one
        say(f"{args.command}: {'done' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
