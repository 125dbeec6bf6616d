"""One Blender session of the repository test: run by ``test_repository.py`` in a child process.

A child of its own, with its own Blender user folder (``BLENDER_USER_RESOURCES``, set by
the parent), because the test session already has the extension installed from disk:
a second copy from a repository in the same process would register the same classes twice.

It reads commands from stdin, one a line, as an artist works in one open Blender:

    add URL     allow online access, add URL as a remote repository, sync it, install
                talking_face from it (enabled)
    upgrade     sync the repository again and upgrade every extension

and answers each with one ``TF {json}`` line: the installed version (read from the
installed folder's manifest), whether the add-on is enabled and what Blender's copy of
the remote listing holds.  Errors end the process (a non-zero exit).
"""

from __future__ import annotations

import json
import pathlib
import sys
import tomllib

import bpy

REPO_NAME = "Talking Face Studio"
PACKAGE = "talking_face"


def allow_online_access() -> None:
    bpy.context.preferences.system.use_online_access = True
    if not bpy.app.online_access:
        raise SystemExit("online access is still off after allowing it in the preferences")


def our_repo() -> tuple[int, bpy.types.UserExtensionRepo]:
    for index, repo in enumerate(bpy.context.preferences.extensions.repos):
        if repo.name == REPO_NAME:
            return index, repo
    raise SystemExit(f"no repository named {REPO_NAME!r}")


def sync(index: int) -> None:
    result = bpy.ops.extensions.repo_sync(repo_index=index)
    if result != {"FINISHED"}:
        raise SystemExit(f"repo_sync: {result}")


def add(url: str) -> None:
    result = bpy.ops.preferences.extension_repo_add(name=REPO_NAME, remote_url=url, type="REMOTE",
                                                    use_sync_on_startup=False)
    if result != {"FINISHED"}:
        raise SystemExit(f"extension_repo_add: {result}")
    index, _repo = our_repo()
    sync(index)
    result = bpy.ops.extensions.package_install(repo_index=index, pkg_id=PACKAGE, enable_on_install=True)
    if result != {"FINISHED"}:
        raise SystemExit(f"package_install: {result}")


def upgrade() -> None:
    index, _repo = our_repo()
    sync(index)
    result = bpy.ops.extensions.package_upgrade_all(use_active_only=False)
    if result != {"FINISHED"}:
        raise SystemExit(f"package_upgrade_all: {result}")


def report() -> dict:
    _index, repo = our_repo()
    folder = pathlib.Path(repo.directory)
    installed = folder / PACKAGE / "blender_manifest.toml"
    listing = folder / ".blender_ext" / "index.json"  # Blender's own copy of the remote listing
    module = f"bl_ext.{repo.module}.{PACKAGE}"
    return {
        "installed_version": tomllib.loads(installed.read_text())["version"] if installed.is_file() else None,
        "enabled": module in bpy.context.preferences.addons,
        "listed_versions": [item["version"] for item in json.loads(listing.read_text())["data"]
                            if item["id"] == PACKAGE] if listing.is_file() else None,
        "remote_url": repo.remote_url,
        "module": module,
    }


def main() -> int:
    allow_online_access()
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "add":
            add(argument)
        elif command == "upgrade":
            upgrade()
        else:
            raise SystemExit(f"unknown command {line!r}")
        print("TF " + json.dumps(report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
