"""Artists install and update the extension from a remote repository made by ``dev.py repo``.

extensions.blender.org does not list extensions that need a key or a payment, so the
project ships a static repository: ``python3 tools/dev.py repo OUTDIR`` writes the zip and
Blender's own ``index.json`` (``blender_ext.py server-generate``).  Here OUTDIR is served
by a loopback http.server thread; a Blender session of its own (``repository_child.py``)
adds it as a remote repository, syncs and installs from it; then a higher version (a copy
of the source tree with a bumped manifest version) is built into the same OUTDIR, and a
new session syncs again and upgrades to it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator

import bpy
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CHILD = pathlib.Path(__file__).with_name("repository_child.py")
DEV = REPO_ROOT / "tools" / "dev.py"
SECONDS = 300.0
NOT_COPIED = (".git", ".venvs", "dist", "build", "demo_output", "__pycache__", ".pytest_cache", ".ruff_cache")


def bpy_version() -> str:
    return ".".join(str(part) for part in bpy.app.version)


def source_version() -> str:
    return tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())["version"]


def bumped(version: str) -> str:
    major, minor, patch = (int(part) for part in version.split("."))
    return f"{major}.{minor}.{patch + 1}"


def write_repository(outdir: pathlib.Path, source: pathlib.Path = REPO_ROOT) -> str:
    done = subprocess.run([sys.executable, str(DEV), "repo", str(outdir), "--bpy", bpy_version(),
                           "--source-dir", str(source)], capture_output=True, text=True, timeout=SECONDS,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def copy_with_version(destination: pathlib.Path, version: str) -> pathlib.Path:
    shutil.copytree(REPO_ROOT, destination, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
    manifest = destination / "blender_manifest.toml"
    text, count = re.subn(r'^version = "[^"]+"', f'version = "{version}"', manifest.read_text(), 
                          flags=re.MULTILINE)
    assert count == 1
    manifest.write_text(text)
    return destination


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder quietly and notes each path asked for (the oracle for "fetched over HTTP")."""

    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path.split("?")[0])


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, str, list[str]]]:
    """An empty repository folder, its URL (served from 127.0.0.1 by a thread) and the paths requested."""
    folder = tmp_path / "repository"
    folder.mkdir()
    requested: list[str] = []
    handler = type("Handler", (RecordingHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="repository-server")
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/index.json", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class BlenderSession:
    """One Blender (``repository_child.py``) with a user folder of its own, kept open between commands."""

    def __init__(self, user_folder: pathlib.Path, logs: pathlib.Path) -> None:
        env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_folder)}
        env.pop("TALKING_FACE_ZIP", None)
        self.stderr_path = logs / "blender.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([sys.executable, "-u", str(CHILD)], env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True)

    def ask(self, command: str) -> dict:
        """Send one command and wait for its ``TF`` answer (the child runs each to the end)."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("TF "):
                return json.loads(line[3:])
        pytest.fail(f"{command}: Blender exited ({self.process.wait()})\n{self.stderr_path.read_text()}")

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def blender(tmp_path: pathlib.Path) -> Iterator[BlenderSession]:
    user_folder = tmp_path / "blender user"
    user_folder.mkdir()
    session = BlenderSession(user_folder, tmp_path)
    yield session
    session.close()


def test_install_from_the_repository_then_update(served, blender: BlenderSession, tmp_path: pathlib.Path) -> None:
    folder, url, requested = served
    first, second = source_version(), bumped(source_version())

    write_repository(folder)
    installed = blender.ask(f"add {url}")
    assert installed["remote_url"] == url
    assert installed["listed_versions"] == [first]
    assert (installed["installed_version"], installed["enabled"]) == (first, True)
    assert {"/index.json", f"/talking_face-{first}.zip"} <= set(requested)

    write_repository(folder, copy_with_version(tmp_path / "next release", second))
    assert sorted(path.name for path in folder.glob("*.zip")) == [f"talking_face-{second}.zip"]
    updated = blender.ask("upgrade")
    assert updated["listed_versions"] == [second], "Blender did not see the new version"
    assert (updated["installed_version"], updated["enabled"]) == (second, True)
    assert f"/talking_face-{second}.zip" in requested
