"""What an artist sees when installing the built zip (Install from Disk).

Runs inside real Blender (a bpy venv).  The zip must validate with Blender's own
tool, hold the extension and nothing else, enable on install, and survive a
disable/enable round trip without errors, leaks or writes into its install folder.
The extension is left enabled at the end: other test files rely on ``extension``.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from types import ModuleType

import bpy
import pytest

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
REQUIRED_FILES = ("blender_manifest.toml", "__init__.py")
REQUIRED_PACKAGES = ("newport_api", "operators", "ui")
FORBIDDEN_TOP_LEVEL = ("tests", "tools", ".ci", "bench", "dist", "build", "pyproject.toml", ".venvs")
OUTPUT_ALARMS = ("Traceback", "Error", "Exception")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def addon_utils() -> ModuleType:
    """Blender's ``addon_utils``: importable only after bpy (which matters when run as a script)."""
    import addon_utils

    return addon_utils


def zip_names(zip_path: pathlib.Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def install_dir(extension: ModuleType) -> pathlib.Path:
    return pathlib.Path(extension.__file__).resolve().parent


def tree_state(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` with its size and modification time."""
    return {
        path.relative_to(root).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def all_subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def registered_extension_classes() -> set[str]:
    """Classes defined by the extension that Blender currently has registered."""
    return {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in all_subclasses(bpy.types.bpy_struct)
        if cls.__module__.startswith(EXTENSION_MODULE) and cls.is_registered
    }


def blender_state() -> dict[str, object]:
    """What an add-on can add to Blender: RNA types and properties, operators, handlers, keymaps."""
    rna = {
        name: frozenset(cls.bl_rna.properties.keys())
        for name in dir(bpy.types)
        if hasattr(cls := getattr(bpy.types, name), "bl_rna")
    }
    operators = {f"{category}.{op}" for category in dir(bpy.ops) for op in dir(getattr(bpy.ops, category))}
    handlers = {
        name: len(handler_list)
        for name in dir(bpy.app.handlers)
        if isinstance(handler_list := getattr(bpy.app.handlers, name), list)
    }
    addon_keyconfig = bpy.context.window_manager.keyconfigs.addon
    keymaps = sorted(
        (keymap.name, item.idname)
        for keymap in (addon_keyconfig.keymaps if addon_keyconfig else ())
        for item in keymap.keymap_items
    )
    return {"rna": rna, "operators": operators, "handlers": handlers, "keymaps": keymaps}


def state_difference(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """Human-readable changes from ``before`` to ``after`` (empty when Blender looks the same)."""
    problems = []
    rna_before, rna_after = before["rna"], after["rna"]
    for name in sorted(rna_before.keys() ^ rna_after.keys()):
        problems.append(f"bpy.types.{name} {'added' if name in rna_after else 'removed'}")
    for name in sorted(rna_before.keys() & rna_after.keys()):
        if added := sorted(rna_after[name] - rna_before[name]):
            problems.append(f"bpy.types.{name} gained properties {added}")
        if removed := sorted(rna_before[name] - rna_after[name]):
            problems.append(f"bpy.types.{name} lost properties {removed}")
    for op in sorted(before["operators"] ^ after["operators"]):
        problems.append(f"operator bpy.ops.{op} {'added' if op in after['operators'] else 'removed'}")
    for name, count in sorted(after["handlers"].items()):
        if count != before["handlers"].get(name):
            problems.append(f"bpy.app.handlers.{name}: {before['handlers'].get(name)} -> {count} functions")
    if before["keymaps"] != after["keymaps"]:
        problems.append(f"add-on keymap items: {before['keymaps']} -> {after['keymaps']}")
    return problems


def assert_quiet(output: str, action: str) -> None:
    alarming = [line for line in output.splitlines() if any(word in line for word in OUTPUT_ALARMS)]
    assert not alarming, f"{action} printed errors:\n{output}"


# -- the zip -------------------------------------------------------------------------------------------


def test_zip_passes_blenders_own_validation(extension_zip: pathlib.Path, blender_ext: pathlib.Path) -> None:
    done = subprocess.run([sys.executable, str(blender_ext), "validate", str(extension_zip)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_zip_holds_the_extension(extension_zip: pathlib.Path) -> None:
    names = zip_names(extension_zip)
    for required in REQUIRED_FILES:
        assert required in names
    for package in REQUIRED_PACKAGES:
        assert f"{package}/__init__.py" in names, f"{package}/ missing from {extension_zip.name}"


def test_zip_holds_nothing_but_the_extension(extension_zip: pathlib.Path) -> None:
    names = zip_names(extension_zip)
    stray = [
        name for name in names
        if name.split("/")[0] in FORBIDDEN_TOP_LEVEL
        or "__pycache__" in name.split("/")
        or name.endswith(".pyc")
        or any(part.startswith(".") for part in name.split("/"))
    ]
    assert not stray, f"not part of the extension: {stray}"


DEV_ONLY = ("newport_api/sandbox/", "newport_api/cli.py", "newport_api/cli_checks.py", "newport_api/cli_batch.py",
            "newport_api/__main__.py")


def test_zip_has_no_sandbox_and_no_command_line(extension_zip: pathlib.Path) -> None:
    """The local fake service (listeners, fault injection) and the CLI run from the source tree only."""
    names = zip_names(extension_zip)
    assert not [name for name in names if name.startswith(DEV_ONLY)]
    assert (REPO_ROOT / "newport_api" / "sandbox" / "__init__.py").is_file()  # the check looks in the right place


def test_zip_holds_only_what_the_extension_runs(extension_zip: pathlib.Path) -> None:
    """Code, the manifest and the README: no screenshots, test data or build leftovers for artists."""
    extras = [name for name in zip_names(extension_zip)
              if not name.endswith((".py", "/")) and name not in ("blender_manifest.toml", "README.md")]
    assert extras == []


def test_every_relative_import_in_the_zip_finds_its_module(extension_zip: pathlib.Path) -> None:
    """Nothing shipped imports what the zip leaves out (the sandbox, the CLI)."""
    names = set(zip_names(extension_zip))
    left_out = {entry.rstrip("/").removesuffix(".py") for entry in DEV_ONLY}
    missing = []
    with zipfile.ZipFile(extension_zip) as archive:
        for name in sorted(name for name in names if name.endswith(".py")):
            package = name.split("/")[:-1]
            for node in ast.walk(ast.parse(archive.read(name), name)):
                if not isinstance(node, ast.ImportFrom) or node.level == 0:
                    continue
                base = package[:len(package) - (node.level - 1)]
                if node.module:  # from .module import name: the module must be shipped
                    stem = "/".join(base + node.module.split("."))
                    if f"{stem}.py" not in names and f"{stem}/__init__.py" not in names:
                        missing.append(f"{name}:{node.lineno}: {stem}")
                else:  # from . import name: a name of the package, or one of its modules
                    missing += [f"{name}:{node.lineno}: {stem}" for alias in node.names
                                if (stem := "/".join([*base, alias.name])) in left_out]
    assert not missing, f"imports of modules the zip does not hold: {missing}"


def test_zip_manifest_is_the_one_blender_expects(extension_zip: pathlib.Path) -> None:
    with zipfile.ZipFile(extension_zip) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert manifest["id"] == "talking_face"
    assert manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) >= {"network", "files"}
    assert all(reason.strip() for reason in manifest["permissions"].values())


def test_zip_python_compiles(extension_zip: pathlib.Path) -> None:
    with zipfile.ZipFile(extension_zip) as archive:
        for name in archive.namelist():
            if name.endswith(".py"):
                compile(archive.read(name), name, "exec", dont_inherit=True)


# -- installing -------------------------------------------------------------------------------------


def test_install_enables_the_extension(extension: ModuleType) -> None:
    assert EXTENSION_MODULE in bpy.context.preferences.addons
    assert addon_utils().check(EXTENSION_MODULE) == (True, True)
    user_extensions = pathlib.Path(bpy.utils.user_resource("EXTENSIONS")).resolve()
    assert install_dir(extension) == user_extensions / "user_default" / "talking_face"


def test_installed_folder_is_exactly_the_zip(extension: ModuleType, extension_zip: pathlib.Path) -> None:
    """Extracting and enabling writes nothing but the zip's own files (no caches, no settings)."""
    in_zip = {name.rstrip("/") for name in zip_names(extension_zip)}
    installed = {path for path in tree_state(install_dir(extension))
                 if not (install_dir(extension) / path).is_dir()}
    assert installed == in_zip


def test_extension_code_is_loaded_from_its_install_folder(extension: ModuleType) -> None:
    """No module of the extension may come from the repo checkout (which is on sys.path in tests)."""
    root = install_dir(extension)
    loaded = {name: module for name, module in sys.modules.items()
              if name.startswith(EXTENSION_MODULE) and getattr(module, "__file__", None)}
    outside = [f"{name}: {module.__file__}" for name, module in loaded.items()
               if not pathlib.Path(module.__file__).resolve().is_relative_to(root)]
    assert not outside


def test_extension_imports_itself_relatively(extension: ModuleType) -> None:
    """``from newport_api import x`` works from the repo root and breaks for every user: use ``from ..``."""
    root = install_dir(extension)
    own_names = {path.stem if path.suffix == ".py" else path.name
                 for path in root.iterdir()
                 if path.suffix == ".py" or (path / "__init__.py").is_file()} - {"__init__"}
    forbidden = own_names | {"talking_face", "bl_ext"}
    absolute = []
    for source in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            absolute += [f"{source.relative_to(root)}:{node.lineno}: {name}"
                         for name in targets if name.split(".")[0] in forbidden]
    assert not absolute, f"absolute imports of the extension's own modules: {absolute}"


# -- disabling and enabling again --------------------------------------------------------------------


@pytest.fixture
def left_enabled(extension: ModuleType) -> Iterator[ModuleType]:
    """Whatever happens in the test, leave the extension enabled for the test files that follow."""
    yield extension
    if EXTENSION_MODULE not in bpy.context.preferences.addons:
        addon_utils().enable(EXTENSION_MODULE, default_set=True)


def disable(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert bpy.ops.preferences.addon_disable(module=EXTENSION_MODULE) == {"FINISHED"}
    assert_quiet("".join(capfd.readouterr()), "disabling")
    assert EXTENSION_MODULE not in bpy.context.preferences.addons
    assert not registered_extension_classes(), "classes left registered after disabling"


def enable(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert bpy.ops.preferences.addon_enable(module=EXTENSION_MODULE) == {"FINISHED"}
    assert_quiet("".join(capfd.readouterr()), "enabling")
    assert EXTENSION_MODULE in bpy.context.preferences.addons
    assert addon_utils().check(EXTENSION_MODULE) == (True, True)


def test_disabling_leaves_blender_as_it_was(extension_zip: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """In a fresh Blender: install, enable and disable, then compare with before the install."""
    done = subprocess.run([sys.executable, __file__, str(extension_zip)], capture_output=True, text=True,
                          env={**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path)}, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_quiet(done.stdout + done.stderr, "installing, enabling and disabling in a fresh Blender")
    assert json.loads(done.stdout.splitlines()[-1]) == [], "disabling left these behind"


def test_disable_and_enable_again_cleanly(left_enabled: ModuleType, capfd: pytest.CaptureFixture[str]) -> None:
    folder = install_dir(left_enabled)
    files_before = tree_state(folder)
    enabled_state = blender_state()
    enabled_classes = registered_extension_classes()

    disable(capfd)
    disabled_state = blender_state()
    enable(capfd)
    assert state_difference(enabled_state, blender_state()) == []
    assert {name.rsplit(".", 1)[-1] for name in registered_extension_classes()} == {
        name.rsplit(".", 1)[-1] for name in enabled_classes}

    disable(capfd)
    assert state_difference(disabled_state, blender_state()) == [], "a second disable left a trace"
    enable(capfd)

    assert tree_state(folder) == files_before, "enabling wrote into the extension's install folder"


def leftovers_after_round_trip(zip_path: pathlib.Path) -> list[str]:
    """What installing, enabling and disabling leaves behind in this (fresh) Blender."""
    pristine = blender_state()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"} and EXTENSION_MODULE in bpy.context.preferences.addons, result
    assert bpy.ops.preferences.addon_disable(module=EXTENSION_MODULE) == {"FINISHED"}
    return state_difference(pristine, blender_state())


if __name__ == "__main__":
    # Run by test_disabling_leaves_blender_as_it_was, with BLENDER_USER_RESOURCES set to a temp folder.
    # os._exit: a Blender left half-unregistered by a failure can hang in its own exit handlers.
    try:
        print(json.dumps(leftovers_after_round_trip(pathlib.Path(sys.argv[1]))), flush=True)
    except BaseException:  # noqa: BLE001 -- reported below; exit code 1 tells the test
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)
