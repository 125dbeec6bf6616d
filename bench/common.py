"""Shared plumbing of the benchmark: result rows, statistics, timed commands and Blender children.

Nothing here measures anything by itself. ``Row`` is one line of the final table;
``run_timed`` runs a reference tool (curl, ffmpeg) and returns its wall time and peak
memory from ``os.wait4``; ``Child`` drives a measurement script in another process
(a Blender one, usually) through JSON lines on stdin and ``BENCH_RESULT`` lines on
stdout, so that the orchestrator can run a reference tool between two of its steps.

Every number in BENCHMARKS.md flows through these types; none is typed by hand.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
CACHE_DIR = BENCH_DIR / ".cache"
LOG_DIR = CACHE_DIR / "logs"
RESULT_PREFIX = "BENCH_RESULT "
SAY_PREFIX = "[bench]"
API_KEY = "sk-bench-0123456789abcdef"
MIB = 1024 * 1024
GIB = 1024 * MIB
FRAME_BUDGET_MS = 1000.0 / 60.0
LOOPBACK_ONLY = {"NO_PROXY": "*", "no_proxy": "*"}  # nothing here may leave 127.0.0.1


class BenchError(Exception):
    """A measurement could not be made; the message says which and why."""


def say(message: str) -> None:
    print(f"{SAY_PREFIX} {message}", flush=True)


# -- rows and statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: what was measured, ours, the reference, their ratio and the goal."""

    what: str
    ours: str
    reference: str
    ratio: str
    goal: str
    met: bool | None  # None: informational, no goal

    @property
    def verdict(self) -> str:
        return "—" if self.met is None else ("met" if self.met else "MISSED")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..100): a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio_text(value: float) -> str:
    return f"{value:.2f}×"


def seconds_text(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def listed(seconds: Sequence[float], digits: int = 2) -> str:
    """Every run's time, e.g. ``1.02, 0.98 s``."""
    return ", ".join(f"{value:.{digits}f}" for value in seconds) + " s"


def rate_text(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:.0f} MiB/s"


# -- commands -------------------------------------------------------------------------------------

COMMANDS: list[str] = []  # every reference command as it ran, for BENCHMARKS.md


def display_command(command: Sequence[str]) -> str:
    """The command line with the long temporary and cache paths shortened to $TMP and $CACHE."""
    text = " ".join(part if part.startswith("$") else shlex.quote(part) for part in map(str, command))
    for path, name in ((str(CACHE_DIR), "$CACHE"), (tempfile.gettempdir(), "$TMP"), (str(REPO_ROOT), ".")):
        text = text.replace(path, name)
    return text


def remember(command: str) -> None:
    if command not in COMMANDS:
        COMMANDS.append(command)


@dataclass(frozen=True)
class Timed:
    seconds: float
    cpu_seconds: float  # user + system time of the command and its threads (os.wait4)
    output: str


def run_timed(command: Sequence[str], *, record: bool = True, label: str = "") -> Timed:
    """Run a reference tool; its wall time from spawn to exit, and the CPU time it used.

    ``label`` is how BENCHMARKS.md shows the command (default: the command, shortened).
    """
    if record:
        remember(label or display_command(command))
    started = time.monotonic()
    process = subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    if process.returncode != 0:
        raise BenchError(f"{display_command(command)} failed (exit {process.returncode}):\n{output[-2000:]}")
    return Timed(seconds, usage.ru_utime + usage.ru_stime, output)


def settle_disk() -> None:
    """Flush dirty pages before a measurement, so it does not pay for the previous one's writes."""
    os.sync()
    time.sleep(0.5)


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **LOOPBACK_ONLY, "PYTHONUNBUFFERED": "1", **extra}


# -- child processes ------------------------------------------------------------------------------


def memory_kib(field: str) -> int:
    """``VmRSS``/``VmHWM`` of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Make ``VmHWM`` start again from the current resident size (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def emit_result(data: dict[str, Any]) -> None:
    """In a child: hand one answer to the orchestrator."""
    print(RESULT_PREFIX + json.dumps(data), flush=True)


def serve_requests(handlers: dict[str, Any]) -> None:
    """In a child: answer JSON requests from stdin, one ``BENCH_RESULT`` line each, until EOF."""
    emit_result({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        action = request.pop("action")
        if action == "quit":
            break
        emit_result(handlers[action](**request))


class Child:
    """A measurement script in another process, driven one request at a time.

    Its stdout is logged to ``bench/.cache/logs/<name>.log``; its ``[bench]`` lines are
    echoed.  Blender writes plenty to stdout, so answers are the ``BENCH_RESULT`` lines.
    """

    def __init__(self, name: str, script: str, *args: str, python: str = sys.executable) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        command = [python, str(BENCH_DIR / script), *args]
        self._log.write(f"$ {display_command(command)}\n")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(), text=True, bufsize=1,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.ready_seconds = 0.0
        self.answer()  # the child says it is ready
        self.ready_seconds = time.monotonic() - self.started

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, action: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"action": action, **arguments}) + "\n")
        self.process.stdin.flush()
        return self.answer()

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            if line.startswith(RESULT_PREFIX):
                self._log.flush()
                return json.loads(line[len(RESULT_PREFIX):])
            if line.startswith(SAY_PREFIX):
                print(line, end="", flush=True)
        self._log.flush()
        tail = "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise BenchError(f"{self.name} ended without an answer (exit {self.process.wait()}); "
                         f"end of {self.log_path}:\n{tail}")

    def close(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.write(json.dumps({"action": "quit"}) + "\n")
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by its handle
                self.process.wait()
        if self.process.stdout is not None:
            for line in self.process.stdout:
                self._log.write(line)
        self._log.close()
