"""Make sure the reference tools exist: curl, and ffmpeg with ffprobe (Debian's packages).

Missing ones are installed with ``apt-get install -y`` (as root), after an
``apt-get update`` when apt does not know a candidate for them yet.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from common import BenchError, say

PACKAGES = {"curl": "curl", "ffmpeg": "ffmpeg", "ffprobe": "ffmpeg"}  # program -> Debian package


def missing_packages() -> list[str]:
    return sorted({package for program, package in PACKAGES.items() if shutil.which(program) is None})


def has_candidate(package: str) -> bool:
    done = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False)
    return "Candidate:" in done.stdout and "Candidate: (none)" not in done.stdout


def apt_get(*arguments: str) -> None:
    say(f"$ apt-get {' '.join(arguments)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", *arguments], env=env, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise BenchError(f"apt-get {' '.join(arguments)} failed (exit {done.returncode})")


def ensure_tools() -> None:
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BenchError(f"the benchmark needs {', '.join(missing)}: install them (as root: "
                         f"apt-get install -y {' '.join(missing)}), then run it again")
    if not all(has_candidate(package) for package in missing):
        apt_get("update")
    apt_get("install", "-y", *missing)
    if missing_packages():
        raise BenchError(f"{', '.join(missing_packages())} still missing after apt-get install")
