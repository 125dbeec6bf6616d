"""A Debian 13 root with Debian's own Blender, Xvfb and friends, for the GUI lane.

The machine's Debian 12 ships Blender 3.4 (too old), so the lane debootstraps Debian 13
("trixie": Blender 4.3.2, Python 3.13, no ``aud`` module — the build Linux artists get)
into a cached folder and runs Blender there with ``chroot``. The root shares this
machine's loopback, so a sandbox started outside it is reachable, and ``/tmp`` is
bind-mounted so test files have the same paths inside and out.

Building it needs root (debootstrap, mount, chroot) and the Debian mirror apt already
uses. When that is impossible the lane fails with the reason: it is never skipped.
A finished root is marked, so later runs only check the mounts (seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SUITE = "trixie"
DEFAULT_ROOT = Path(os.environ.get("TALKING_FACE_GUI_ROOT", "/var/cache/talking-face-gui/root"))
PACKAGES = ("blender", "xvfb", "xauth", "xdotool", "imagemagick", "ca-certificates", "python3-requests",
            "libgl1-mesa-dri", "ffmpeg")
MARKER = ".talking-face-gui-ready"
BIND_MOUNTS = ("sys", "dev", "dev/pts", "dev/shm", "tmp")


class RootError(RuntimeError):
    """The Debian root cannot be built or entered; the message says why and what to do."""


def _run(command: Sequence[str], what: str, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise RootError(f"{what} failed (exit {done.returncode}); end of {log}:\n{tail}")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            uri = match.group(1)
            if "security" not in uri and uri.startswith("http"):
                return uri
    return "http://deb.debian.org/debian"


def _mounted_points() -> set[str]:
    with open("/proc/self/mounts") as mounts:
        return {line.split()[1].replace("\\040", " ") for line in mounts}


def ensure_mounts(root: Path) -> None:
    """/proc, /sys, /dev (with pts and shm) and /tmp inside the root, each mounted once."""
    mounted = _mounted_points()
    target = root / "proc"
    if str(target) not in mounted:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True)
    for name in BIND_MOUNTS:
        target = root / name
        if str(target) in mounted or not Path("/", name).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "--bind", f"/{name}", str(target)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RootError(f"could not bind-mount /{name} into {root}: {done.stderr.strip()} "
                            "(the GUI lane needs root and mount rights)")


def unmount(root: Path) -> None:
    """Undo ``ensure_mounts`` (innermost first); the root itself stays cached."""
    for point in sorted((p for p in _mounted_points() if p.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _install_host_tool(tool: str, package: str, log: Path) -> None:
    if shutil.which(tool):
        return
    _run(["apt-get", "update"], "apt-get update", log)
    _run(["apt-get", "install", "-y", "--no-install-recommends", package], f"installing {package}", log)


def ensure_root(root: Path = DEFAULT_ROOT, log: Path | None = None) -> Path:
    """The ready root: built on first use (about two minutes), then only mounted."""
    if os.geteuid() != 0:
        raise RootError("the GUI lane builds a Debian root with debootstrap, mount and chroot, "
                        "which need root: run `python3 tools/dev.py test` as root (CI does)")
    log = log or root.parent / "build.log"
    root.parent.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    wanted = " ".join(PACKAGES)
    if marker.is_file() and marker.read_text().strip() == wanted:
        ensure_mounts(root)
        return root
    if not (root / "usr" / "bin" / "apt-get").is_file():
        _install_host_tool("debootstrap", "debootstrap", log)
        unmount(root)  # never delete through a bind mount: /tmp, /dev and /sys are the host's own
        if any(point.startswith(str(root) + "/") for point in _mounted_points()):
            raise RootError(f"{root} still has file systems mounted in it; unmount them, then run again")
        shutil.rmtree(root, ignore_errors=True)
        _run(["debootstrap", "--variant=minbase", SUITE, str(root), debian_mirror()],
             f"debootstrap {SUITE}", log)
    ensure_mounts(root)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    _run(["chroot", str(root), "apt-get", "update"], "apt-get update in the root", log)
    _run(["chroot", str(root), "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
         "installing Blender and Xvfb in the root", log)
    marker.write_text(wanted + "\n")
    return root


def blender_version(root: Path) -> str:
    done = subprocess.run(["chroot", str(root), "blender", "--version"], capture_output=True, text=True,
                          check=False)
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout else "unknown"


if __name__ == "__main__":  # python3 tests/gui/debian_root.py: build or check the root by hand
    ready = ensure_root()
    print(f"{ready}: {blender_version(ready)}")
