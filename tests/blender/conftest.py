"""Run Blender tests inside real Blender: the ``bpy`` wheel of this venv.

The extension is installed the way an artist installs it (Install from Disk of
the built zip) into a throw-away user folder, so no test ever touches the
developer's own Blender configuration.  ``BLENDER_USER_RESOURCES`` must be set
before ``bpy`` is imported, which is why it happens at module level here.

Run these with ``python3 tools/dev.py test`` (one bpy venv per supported
Blender).  Outside a bpy venv the whole folder is skipped with that hint.

Note: pyproject's ``pythonpath = ["."]`` also puts the repo root on ``sys.path``
here, so a plain ``import newport_api`` would load the repo's copy.  Tests of
the extension should reach its code through the ``extension`` fixture (the
installed package) instead.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from types import ModuleType

import pytest

_USER_RESOURCES = tempfile.mkdtemp(prefix="talking_face_user_")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES
# Registered before bpy's own exit handlers, so it runs after them (atexit is LIFO).
atexit.register(shutil.rmtree, _USER_RESOURCES, ignore_errors=True)

# Must follow the environment set-up above: bpy reads it once, on import.
bpy = pytest.importorskip(
    "bpy", reason="needs Blender's bpy: run these through `python3 tools/dev.py test`")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXTENSION_MODULE = "bl_ext.user_default.talking_face"


def blender_ext_cli() -> pathlib.Path:
    """Blender's own extension tool, shipped inside the wheel."""
    local = pathlib.Path(bpy.utils.resource_path("LOCAL"))
    return local / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def build_extension_zip(output_dir: pathlib.Path) -> pathlib.Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(blender_ext_cli()), "build",
         "--source-dir", str(REPO_ROOT), "--output-dir", str(output_dir)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, f"blender_ext.py build failed:\n{done.stdout}{done.stderr}"
    return next(output_dir.glob("talking_face-*.zip"))


@pytest.fixture(scope="session")
def blender_ext() -> pathlib.Path:
    """Path of ``blender_ext.py``, the extension CLI of this Blender version."""
    return blender_ext_cli()


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The zip under test: ``TALKING_FACE_ZIP`` when the runner built one, else a fresh build."""
    given = os.environ.get("TALKING_FACE_ZIP")
    if given:
        path = pathlib.Path(given)
        assert path.is_file(), f"TALKING_FACE_ZIP={given} does not exist"
        return path
    return build_extension_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def extension(extension_zip: pathlib.Path) -> ModuleType:
    """The installed and enabled extension package, with online access allowed."""
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert EXTENSION_MODULE in bpy.context.preferences.addons, "installed but not enabled"
    bpy.context.preferences.system.use_online_access = True
    return importlib.import_module(EXTENSION_MODULE)


# --- Media and placement (test_media.py, test_placement.py) ------------------------------------

KEEP_SCENES_NOTE = """Scenes a test called ``movie_strip_add`` in are not removed: headless, the operator
starts a proxy job that nothing ends, and a removed scene crashes Blender in it or at exit
(seen on bpy 5.0). Placement itself turns that job off (``compat.no_proxy_job_when_headless``;
``test_a_pipeline_that_removes_the_scene_after_placing_exits_cleanly``)."""


def _extension_module(extension: ModuleType, name: str) -> ModuleType:
    return importlib.import_module(f"{extension.__name__}.operators.{name}")


@pytest.fixture(scope="session")
def compat(extension: ModuleType) -> ModuleType:
    """The installed extension's ``operators.compat``."""
    return _extension_module(extension, "compat")


@pytest.fixture(scope="session")
def media(extension: ModuleType) -> ModuleType:
    """The installed extension's ``operators.media``."""
    return _extension_module(extension, "media")


@pytest.fixture(scope="session")
def placement(extension: ModuleType) -> ModuleType:
    """The installed extension's ``operators.placement``."""
    return _extension_module(extension, "placement")


@pytest.fixture
def user_scene(compat: ModuleType):
    """A fresh scene shown in the window, as the artist's; the previous one comes back afterwards."""
    window = bpy.context.window
    previous = window.scene
    scene = bpy.data.scenes.new("Artist scene")
    compat.ensure_editor(scene)
    window.scene = scene
    yield scene
    window.scene = previous
    # Not removed: see KEEP_SCENES_NOTE.
