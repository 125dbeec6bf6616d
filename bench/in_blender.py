"""Start Blender (the ``bpy`` module) with the extension installed from the built zip.

Used by the measurement scripts that run inside a bpy venv.  As in
tests/blender/conftest.py, the extension is installed the way an artist installs it
(Install from Disk of ``TALKING_FACE_ZIP``) into a throw-away Blender user folder,
which must be set before ``bpy`` is imported and is removed at exit.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

EXTENSION_MODULE = "bl_ext.user_default.talking_face"


def start_blender() -> tuple[Any, ModuleType, float]:
    """``(bpy, the installed extension, seconds it took)``; online access allowed."""
    started = time.monotonic()
    user_resources = tempfile.mkdtemp(prefix="talking_face_bench_user_")
    os.environ["BLENDER_USER_RESOURCES"] = user_resources
    atexit.register(shutil.rmtree, user_resources, ignore_errors=True)  # before bpy's: runs after them
    import bpy  # after BLENDER_USER_RESOURCES: bpy reads it once, on import

    zip_path = os.environ.get("TALKING_FACE_ZIP", "")
    if not os.path.isfile(zip_path):
        sys.exit(f"TALKING_FACE_ZIP={zip_path!r} is not a file: run me through `python3 tools/dev.py bench`")
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"} or EXTENSION_MODULE not in bpy.context.preferences.addons:
        sys.exit(f"installing {zip_path} failed: {result}")
    bpy.context.preferences.system.use_online_access = True
    return bpy, importlib.import_module(EXTENSION_MODULE), time.monotonic() - started


def part(extension: ModuleType, name: str) -> ModuleType:
    """A module of the installed extension, e.g. ``part(extension, "operators.media")``."""
    return importlib.import_module(f"{extension.__name__}.{name}")
