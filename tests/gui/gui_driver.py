"""Runs inside Debian's Blender with a window: steps a scenario through Blender's own event loop.

Blender runs this file (``blender project.blend --python gui_driver.py``); it loads the scenario
named by ``$TF_GUI_SCENARIO`` (a file of ``scenarios/`` that does ``import gui_driver as d``) and
steps its ``scenario()`` generator. Each ``yield`` gives the event loop back to Blender — the window redraws,
modal operators get their TIMER events, handlers fire — exactly as between an artist's clicks:

- ``yield 0.5`` waits half a second;
- ``yield until(condition, timeout)`` waits until ``condition()`` is true (fails after ``timeout``).

Operators are called with ``'INVOKE_DEFAULT'`` under a ``temp_override`` of a Sequencer area, as
a click in the sidebar calls them. A probe timer records every gap in the event loop. When the
generator ends (or raises), the facts it gathered go to ``$TF_GUI_RESULT`` as JSON and Blender
quits the way File ▸ Quit does; the test then checks them from the outside.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

import bpy

EXTENSION = "bl_ext.user_default.talking_face"
STEP_SECONDS = 0.05
PROBE_SECONDS = 0.01
facts: dict[str, Any] = {"gaps_ms": [], "steps": []}


class Until:
    def __init__(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        self.condition, self.deadline, self.what = condition, time.monotonic() + timeout, what


def until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> Until:
    return Until(condition, timeout, what or getattr(condition, "__name__", "a condition"))


def note(step: str) -> None:
    facts["steps"].append(f"{time.monotonic():.3f} {step}")
    print(f"[gui] {step}", flush=True)


def signal(name: str) -> None:
    """Tell the test (outside Blender) that the scenario reached ``name``."""
    folder = os.environ["TF_GUI_SIGNALS"]
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, f"from-blender-{name}"), "w").close()
    note(f"signal {name}")


def received(name: str) -> bool:
    """True once the test said ``name`` (``GuiBlender.signal``)."""
    return os.path.exists(os.path.join(os.environ["TF_GUI_SIGNALS"], name))


# -- the event-loop probe -------------------------------------------------------------------------

_last_probe = [0.0, 0.0]  # when the probe last ran; the driver's own time by then
_driver_seconds = [0.0]  # time spent in the scenario's own steps (screenshots, xdotool): not Blender's


def _probe() -> float:
    now = time.perf_counter()
    if _last_probe[0]:
        own = _driver_seconds[0] - _last_probe[1]
        facts["gaps_ms"].append(round(max(0.0, now - _last_probe[0] - own) * 1000.0, 2))
        facts.setdefault("gap_phases", []).append(_current_phase())
    _last_probe[0], _last_probe[1] = now, _driver_seconds[0]
    return PROBE_SECONDS


def _current_phase() -> str:
    """The newest job's phase, to tell which part of a job a gap fell in."""
    try:
        views = extension().operators.controller._controller
        records = sorted(views.views.values(), key=lambda record: record.created_at) if views else []
    except (ImportError, AttributeError):
        return "no extension"
    return records[-1].phase.value if records else "idle"


# -- the Sequencer and its sidebar ----------------------------------------------------------------

def window() -> bpy.types.Window:
    return bpy.context.window_manager.windows[0]


def sequencer_area() -> bpy.types.Area:
    """The window's Sequencer area: the largest area becomes one, with its sidebar open."""
    areas = window().screen.areas
    area = next((a for a in areas if a.type == "SEQUENCE_EDITOR"), None)
    if area is None:
        area = max(areas, key=lambda a: a.width * a.height)
        area.type = "SEQUENCE_EDITOR"
    space = area.spaces.active
    space.view_type = "SEQUENCER"
    space.show_region_ui = True
    return area


def region(area: bpy.types.Area, kind: str) -> bpy.types.Region:
    return next(r for r in area.regions if r.type == kind)


def override(area: bpy.types.Area | None = None, kind: str = "UI") -> Any:
    area = area or sequencer_area()
    return bpy.context.temp_override(window=window(), screen=window().screen, area=area,
                                     region=region(area, kind))


def invoke(operator: str, **properties: Any) -> tuple[set[str], float]:
    """Call ``sequencer.talking_face_*`` as the sidebar's button does; returns its result and ms taken."""
    category, name = operator.split(".")
    with override():
        started = time.perf_counter()
        result = getattr(getattr(bpy.ops, category), name)("INVOKE_DEFAULT", **properties)
        elapsed = (time.perf_counter() - started) * 1000.0
    note(f"{operator} -> {sorted(result)} in {elapsed:.1f} ms")
    return result, elapsed


def show_talking_face_tab() -> Generator[Any, None, None]:
    """Bring the sidebar's Talking Face tab to the front as an artist does: Ctrl+Wheel over the tabs."""
    area = sequencer_area()
    sidebar = region(area, "UI")
    yield 0.3
    x = window().x + sidebar.x + sidebar.width // 2
    y = window().height - (sidebar.y + sidebar.height // 2)
    # Escape closes the splash screen a Blender started without a file shows over everything.
    subprocess.run(["xdotool", "mousemove", str(x), str(y), "key", "Escape"], check=False)
    yield 0.3
    for _ in range(12):
        if sidebar.active_panel_category == "Talking Face":
            return
        subprocess.run(["xdotool", "mousemove", str(x), str(y), "keydown", "ctrl", "click", "5", "keyup", "ctrl"],
                       check=False)
        yield 0.25
    raise AssertionError(f"the Talking Face tab did not come up (at {sidebar.active_panel_category!r})")


def screenshot(name: str) -> str:
    """The screen's real pixels (``screen.screenshot`` reads back black under Xvfb)."""
    path = os.path.join(os.environ["TF_GUI_SHOTS"], f"{name}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["import", "-window", "root", path], check=False)
    facts.setdefault("screenshots", []).append(path)
    note(f"screenshot {name}")
    return path


# -- the extension's state ------------------------------------------------------------------------

def extension() -> Any:
    return importlib.import_module(EXTENSION)


def controller() -> Any:
    return extension().operators.controller.get_controller()


def jobs() -> list[Any]:
    return sorted(controller().views.values(), key=lambda record: record.created_at)


def phase_of(job_id: str) -> str:
    record = controller().views.get(job_id)
    return record.phase.value if record else ""


def monitor_running() -> bool:
    return bool(extension().operators.jobs_ops.monitor_is_alive())


def generate(show_tab: bool = True) -> Generator[Any, None, str]:
    """The artist's way to a job: the sidebar's tab, the sound strip, Generate. Returns the job's id."""
    yield until(enabled, 10, "the extension to be enabled")
    use_sandbox()
    if show_tab:
        yield from show_talking_face_tab()
    choose_audio(bpy.context.scene)
    result, elapsed = invoke("sequencer.talking_face_generate")
    facts["generate"] = {"result": sorted(result), "ms": elapsed}
    job_id = jobs()[-1].job_id
    facts["job_id"] = job_id
    return job_id


def finish(job_id: str, what: str = "the job to be done") -> Generator[Any, None, None]:
    """Wait for the result on the timeline, keep the job's record in the facts, save the file."""
    yield until(lambda: phase_of(job_id) == "done", 120, what)
    record_job(job_id)
    bpy.ops.wm.save_mainfile()


def use_sandbox() -> None:
    """Point the preferences at the sandbox the test started (the key comes from NEWPORT_API_KEY)."""
    bpy.context.preferences.addons[EXTENSION].preferences.base_url = os.environ["TF_GUI_BASE_URL"]


def choose_audio(scene: bpy.types.Scene) -> None:
    """The sound strip "Line" (``TF_GUI_AUDIO=FILE``: its file instead, for builds that cannot read strips)."""
    settings = scene.talking_face
    if os.environ.get("TF_GUI_AUDIO") == "FILE":
        settings.audio_source, settings.audio_file = "FILE", "//line.mp3"
    else:
        settings.audio_source, settings.audio_strip = "STRIP", "Line"


def enabled() -> bool:
    return EXTENSION in bpy.context.preferences.addons


def record_job(job_id: str) -> dict[str, Any]:
    record = controller().views[job_id]
    facts.setdefault("jobs", {})[job_id] = record.to_dict()
    return record.to_dict()


# -- running a scenario ---------------------------------------------------------------------------

def _finish(error: str = "") -> None:
    facts["error"] = error
    facts["addons"] = sorted(bpy.context.preferences.addons.keys())
    with open(os.environ["TF_GUI_RESULT"], "w") as out:
        json.dump(facts, out, indent=1)
    if os.environ.get("TF_GUI_KEEP_OPEN"):
        return
    bpy.ops.wm.quit_blender()


def run(scenario: Generator[Any, None, None]) -> None:
    """Step ``scenario`` from a timer until it ends; then write the facts and quit."""
    waiting: list[Any] = [None]

    def step() -> float | None:
        started = time.perf_counter()
        try:
            return advance()
        finally:
            _driver_seconds[0] += time.perf_counter() - started

    def advance() -> float | None:
        current = waiting[0]
        try:
            if isinstance(current, Until) and not current.condition():
                if time.monotonic() > current.deadline:
                    raise TimeoutError(f"timed out waiting for {current.what}")
                return STEP_SECONDS
            waiting[0] = next(scenario)
        except StopIteration:
            _finish()
            return None
        except Exception:  # noqa: BLE001 — the test reads the traceback from the facts
            _finish(traceback.format_exc())
            return None
        return float(waiting[0]) if isinstance(waiting[0], (int, float)) else STEP_SECONDS

    bpy.app.timers.register(_probe, first_interval=PROBE_SECONDS, persistent=True)
    bpy.app.timers.register(step, first_interval=0.5, persistent=True)


def main() -> None:
    """Load the scenario (it imports this module as ``gui_driver``) and step it."""
    sys.modules["gui_driver"] = sys.modules[__name__]
    spec = importlib.util.spec_from_file_location("scenario", os.environ["TF_GUI_SCENARIO"])
    scenario = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenario)
    run(scenario.scenario())


if __name__ == "__main__":
    main()
