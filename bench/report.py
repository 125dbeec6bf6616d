"""The table and BENCHMARKS.md: rows from this run, the date, the machine and the commands.

Everything written here comes from the run that calls it (rows, versions, machine
facts read from /proc and the tools themselves); nothing is typed in by hand.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import COMMANDS, REPO_ROOT, Row

HEADER = ("what", "ours", "reference", "ratio", "goal", "met?")
MODULES = ("tick_cost.py", "transfer.py", "prepare_cut.py", "end_to_end.py", "polling.py",
           "batch_scale.py")  # rows 1 to 6


def first_line(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def git_state() -> str:
    commit = first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return f"{commit}{' with uncommitted changes' if dirty else ''}"


@dataclass(frozen=True)
class RunInfo:
    started: float  # time.time()
    seconds: float
    load_before: float
    load_after: float
    blender: str
    command: str
    fixture_commands: list[str]

    def machine(self) -> str:
        return (f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.1f} GiB memory, "
                f"{platform.system()} {platform.release()}; load average {self.load_before:.2f} "
                f"at the start, {self.load_after:.2f} at the end")

    def software(self) -> str:
        curl = first_line(["curl", "--version"]).split(" (")[0]
        ffmpeg = " ".join(first_line(["ffmpeg", "-version"]).split()[:3])
        return (f"Python {platform.python_version()}, Blender {self.blender} (bpy), {curl}, {ffmpeg}; "
                f"repo at {git_state()}")


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        parts = (row.what, row.ours, row.reference, row.ratio, row.goal, row.verdict)
        lines.append("| " + " | ".join(cell(part) for part in parts) + " |")
    return "\n".join(lines)


INTRO = ("Every number below comes from that run; run it again rather than editing this file. "
         "Timings move from run to run on a shared machine: compare the ratios, measured side by side "
         "in the same run.")
OURS = ("- Ours is the extension's own code: the `newport_api` client for the transfers, the extension "
        "installed from its zip into a throw-away Blender user folder for the rest.")
PLACEHOLDERS = ("($CACHE is bench/.cache, $TMP a temporary folder, $STORAGE_HOST and $OBJECT_URL the "
                "sandbox's storage host and a stored object's signed URL, $KEY and the other capitals "
                "the policy's fields)")


def document(rows: Sequence[Row], info: RunInfo) -> str:
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.started))
    minutes, seconds = divmod(round(info.seconds), 60)
    met = sum(1 for row in rows if row.met)
    missed = [row.what for row in rows if row.met is False]
    how = [f"- Row {number}: `bench/{module}` (its docstring says what and how)."
           for number, module in enumerate(MODULES, start=1)]
    parts = [
        "# Benchmarks", "",
        f"Written by `{info.command}` on {date}, in {minutes} min {seconds} s. {INTRO}", "",
        f"- Machine: {info.machine()}",
        f"- Software: {info.software()}",
        f"- Goals: {met} met, {len(missed)} missed" + (f" ({'; '.join(missed)})" if missed else ""), "",
        table(rows), "",
        "## How each row is measured", "",
        *how, OURS, "",
        "## Commands", "",
        f"The benchmark: `{info.command}`. The reference commands, as they ran {PLACEHOLDERS}:", "",
        *[f"    {command}" for command in COMMANDS], "",
        "The cached inputs are made once with:", "",
        *[f"    {command}" for command in info.fixture_commands], "",
    ]
    return "\n".join(parts)


def write(rows: Sequence[Row], info: RunInfo, path: Path) -> None:
    path.write_text(document(rows, info), encoding="utf-8")


def blender_version() -> str:
    done = subprocess.run([sys.executable, "-c", "import bpy; print(bpy.app.version_string)"],
                          capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else "unknown"
