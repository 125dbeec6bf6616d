"""Row 1: the main-thread cost of one ``JobController.tick()`` with 1, 20 and 100 jobs receiving events.

Runs inside a bpy venv with the extension installed from the built zip.  The jobs
are real: the controller's ``JobWorker`` runs one thread per job with the real
``JobRunner``, which emits the real ``JobEvent``s (a snapshot of the whole record
at each save, queued for the tick, and between saves at most one progress event per
job, without a snapshot, every ``RunnerSettings.progress_interval``, which the
controller sets to its tick period; the worker keeps each job's latest one for the
sidebar to read).  "Events/tick" counts both: the snapshots queued and the progress
events published since the previous tick.
Only the network is scripted: each job's client "uploads" in 1 MiB steps,
``CHUNKS_PER_SECOND`` a second, waiting between steps the way a socket write does,
for as long as the measurement lasts.  That is the busiest a job gets: every job
emits events at the runner's maximum rate.  The main thread calls ``tick()`` every
``TICK_SECONDS`` (the modal timer's period) and times ``tick()`` alone, in wall time
and in the main thread's own CPU time (the difference is time lost to other threads).
Beside the ticks, in the same process and under the same load, a reference: a
pure-Python loop calibrated to the tick's median CPU time, timed the same way half
a period after each tick.  On a virtual machine the wall time of any main-thread
work has a tail that is not its own (the hypervisor takes the CPU away: "steal" in
``/proc/stat``, also measured); the loop shows that tail, and the goal is judged on
the tick's own main-thread CPU time, its wall time shown beside the loop's.
Memory growth is the process's peak resident size (``VmHWM``, reset first) over
its resident size just before the jobs start: the job threads, the events queued
between ticks and whatever the controller keeps.

A second measurement times the tick that imports a finished result (a 1080p movie
with its sound placed on the timeline; ``MAX_IMPORTS_PER_TICK`` allows one per
tick), in a scene at the result's 25 fps and in one at 24 fps (the result is then
stretched to play in real time, as placement does for any other rate).
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from common import FRAME_BUDGET_MS, Child, Row, median, memory_kib, percentile, reset_peak, serve_requests

JOB_COUNTS = (1, 20, 100)
SECONDS_PER_COUNT = 30.0
WARMUP_TICKS = 10  # not recorded: they calibrate the reference loop
CHUNKS_PER_SECOND = 20  # 1 MiB steps: a 20 MiB/s upload per job; events are capped by the runner anyway
IMPORTS = 5
IMPORT_FPS = (25, 24)
GOAL_P99_MS = 1.0
GOAL_GROWTH_MB = 50.0
MB = 1000 * 1000


# -- inside Blender ----------------------------------------------------------------------------------


class ScriptedClient:
    """Stands in for ``NewportClient.upload_file``: progress paced by waits instead of a socket."""

    def __init__(self, cancel: Any) -> None:
        self.cancel = cancel

    def upload_file(self, path: str, *, on_progress: Any = None) -> None:
        size = 1 << 40  # never finishes: the job stays in its busiest phase until cancelled
        sent = 0
        while True:
            self.cancel.sleep(1 / CHUNKS_PER_SECOND)  # raises CancelledError when the job is cancelled
            sent += 1 << 20
            if on_progress:
                on_progress(sent, size)

    def close(self) -> None:
        pass


class ScriptedCredentials:
    """What ``JobController.start`` needs from credentials: a client factory."""

    @staticmethod
    def make_client(cancel: Any = None) -> ScriptedClient:
        return ScriptedClient(cancel)


class TickBench:
    def __init__(self) -> None:
        from in_blender import part, start_blender

        self.bpy, extension, _ = start_blender()
        self.controller_module = part(extension, "operators.controller")
        self.jobs_ops = part(extension, "operators.jobs_ops")
        self.compat = part(extension, "operators.compat")
        self.newport: ModuleType = part(extension, "newport_api")
        self.work = Path(tempfile.mkdtemp(prefix="talking_face_bench_tick_"))
        self.inputs = [self.work / name for name in ("take.mp4", "line.wav")]
        for path in self.inputs:
            path.write_bytes(b"\0" * 4096)
        self.scene = self.bpy.data.scenes.new("Tick bench")
        self.compat.ensure_editor(self.scene)

    def controller(self, name: str) -> Any:
        return self.controller_module.JobController(self.newport.JobStore(self.work / name))

    def record(self, index: int, **changes: Any) -> Any:
        record = self.newport.JobRecord(video=str(self.inputs[0]), audio=str(self.inputs[1]),
                                        output_path=str(self.work / f"result_{index}.mp4"),
                                        label=f"bench job {index}")
        record.owner = {"blend_file": self.bpy.data.filepath, "scene": self.scene.name}
        for name, value in changes.items():
            setattr(record, name, value)
        return record

    def ticks(self, jobs: list[int], seconds: float) -> dict[str, Any]:
        return {str(count): self.tick_while_busy(count, seconds) for count in jobs}

    def tick_while_busy(self, count: int, seconds: float) -> dict[str, Any]:
        controller = self.controller(f"jobs_{count}")
        reset_peak()
        before_kib = memory_kib("VmRSS")
        for index in range(count):
            controller.start(self.record(index), ScriptedCredentials())
        steal_before = cpu_jiffies()
        timings = self._tick_for(controller, seconds)
        steal = steal_share(steal_before, cpu_jiffies())
        growth = (memory_kib("VmHWM") - before_kib) * 1024
        running = len(controller.worker.running_ids())
        for job_id in list(controller.views):
            controller.cancel(job_id)
        for job_id in list(controller.views):
            controller.worker.join(job_id, timeout=5)
        controller.tick()
        durations = timings["ms"]
        print(f"[bench] tick: {count} jobs, {len(durations)} ticks, median {median(durations):.3f} ms, "
              f"p99 {percentile(durations, 99):.3f} ms (CPU p99 {percentile(timings['cpu_ms'], 99):.3f} ms; "
              f"the loop's wall p99 {percentile(timings['loop_ms'], 99):.3f} ms), "
              f"{median(timings['events']):.0f} events/tick, memory +{growth / MB:.1f} MB", flush=True)
        return {**timings, "running": running, "growth": growth, "steal": steal}

    def _tick_for(self, controller: Any, seconds: float) -> dict[str, list[float]]:
        """Tick every period and run the reference loop half a period later; a warm-up calibrates the loop."""
        period = self.jobs_ops.TICK_SECONDS
        next_tick = time.monotonic() + period
        last_stamp = controller.worker.progress_stamp

        def one_period(loop_length: int) -> tuple[float, ...]:
            """``(events, tick ms, tick CPU ms, loop ms, loop CPU ms)`` of the next period."""
            nonlocal next_tick, last_stamp
            time.sleep(max(0.0, next_tick - time.monotonic()))
            stamp = controller.worker.progress_stamp
            events = controller.worker.events.qsize() + stamp - last_stamp
            last_stamp = stamp
            tick = timed(controller.tick)
            time.sleep(max(0.0, next_tick + period / 2 - time.monotonic()))
            loop = timed(functools.partial(python_loop, loop_length))
            next_tick += period
            return (events, *tick, *loop)

        trial_length = 1000
        warm_up = [one_period(trial_length) for _ in range(WARMUP_TICKS)]
        loop_length = round(trial_length * median([cpu for _, _, cpu, _, _ in warm_up])
                            / median([cpu for _, _, _, _, cpu in warm_up]))
        end = next_tick + seconds
        measured = []
        while next_tick < end:
            measured.append(one_period(loop_length))
        names = ("events", "ms", "cpu_ms", "loop_ms", "loop_cpu_ms")
        return {name: [values[index] for values in measured] for index, name in enumerate(names)}

    def imports(self, movie: str, sound: str, count: int, fps: int) -> dict[str, Any]:
        """Time ticks that each place one downloaded result next to a source strip."""
        self.scene = self.bpy.data.scenes.new(f"Import bench {fps} fps")
        self.compat.set_scene_fps(self.scene, fps)
        self.compat.ensure_editor(self.scene)
        self.compat.new_movie(self.scene, "take", movie, channel=1, frame_start=1)
        controller = self.controller(f"imports_{fps}")
        durations = []
        for index in range(count):
            record = self.record(index, phase=self.newport.Phase.DOWNLOADED, output_path=movie)
            record.owner.update(source_strip="take", source_strips=["take"], audio_path=sound,
                                result_name=f"take TF {index}", mute_sources=True)
            controller.views[record.job_id] = record  # as _drain_events leaves a downloaded job
            started = time.perf_counter_ns()
            controller.tick()
            durations.append((time.perf_counter_ns() - started) / 1e6)
            if controller.views[record.job_id].phase != self.newport.Phase.DONE:
                raise RuntimeError(f"the import failed: {controller.views[record.job_id].error}")
        print(f"[bench] tick with an import at {fps} fps: median {median(durations):.1f} ms", flush=True)
        return {"ms": durations}

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def timed(work: Any) -> tuple[float, float]:
    """``(wall ms, this thread's CPU ms)`` of ``work()``."""
    started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
    work()
    return (time.perf_counter_ns() - started) / 1e6, (time.thread_time_ns() - started_cpu) / 1e6


def python_loop(length: int) -> int:
    total = 0
    for number in range(length):
        total += number
    return total


def cpu_jiffies() -> list[int]:
    """The machine's CPU time by kind (``/proc/stat``); empty where there is none."""
    try:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:]]
    except OSError:
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """The share of the machine's CPU time the hypervisor took (steal) between two readings."""
    if len(before) < 8 or len(after) < 8:
        return None
    spent = [later - earlier for earlier, later in zip(before, after)]
    return spent[7] / max(1, sum(spent[:8]))


def main() -> int:
    bench = TickBench()
    try:
        serve_requests({"ticks": bench.ticks, "imports": bench.imports})
    finally:
        bench.close()
    return 0


# -- in the orchestrator -----------------------------------------------------------------------------


def measure(movie: Path, sound: Path) -> list[Row]:
    with Child("tick_cost", "tick_cost.py") as child:
        busy = child.request("ticks", jobs=list(JOB_COUNTS), seconds=SECONDS_PER_COUNT)
        imported = {fps: child.request("imports", movie=str(movie), sound=str(sound), count=IMPORTS, fps=fps)
                    for fps in IMPORT_FPS}
    rows = [busy_row(count, busy[str(count)]) for count in JOB_COUNTS]
    rows.append(growth_row(max(JOB_COUNTS), busy[str(max(JOB_COUNTS))]))
    return [*rows, *(import_row(fps, imported[fps]["ms"]) for fps in IMPORT_FPS)]


def busy_row(count: int, data: dict[str, Any]) -> Row:
    ms, cpu, events = data["ms"], data["cpu_ms"], data["events"]
    cpu_p99, loop_wall_p99 = percentile(cpu, 99), percentile(data["loop_ms"], 99)
    steal = "" if data["steal"] is None else f"; the hypervisor took {data['steal']:.1%} of the CPUs (steal)"
    ours = (f"main-thread CPU median {median(cpu):.3f} ms, p99 {cpu_p99:.3f} ms; wall median "
            f"{median(ms):.3f} ms, p99 {percentile(ms, 99):.3f} ms, max {max(ms):.3f} ms ({len(ms)} ticks, "
            f"{median(events):.0f} events/tick, {data['running']} job thread{'s' if count > 1 else ''})")
    reference = (f"a Python loop of the tick's median CPU, between the ticks: CPU p99 "
                 f"{percentile(data['loop_cpu_ms'], 99):.3f} ms, wall p99 {loop_wall_p99:.3f} ms{steal}")
    ratio = (f"wall p99 {percentile(ms, 99) / loop_wall_p99:.2f}× the loop's; "
             f"CPU p99 = {cpu_p99 / FRAME_BUDGET_MS:.1%} of a 60 Hz frame")
    return Row(f"1. tick, {count} job{'s' if count > 1 else ''} receiving events", ours, reference, ratio,
               f"CPU p99 < {GOAL_P99_MS:g} ms", cpu_p99 < GOAL_P99_MS)


def growth_row(count: int, data: dict[str, Any]) -> Row:
    growth = data["growth"] / MB
    return Row(f"1. memory growth, {count} jobs receiving events for {SECONDS_PER_COUNT:g} s",
               f"+{growth:.1f} MB (peak VmHWM over VmRSS before the jobs started)", "— (an absolute goal)", "—",
               f"< {GOAL_GROWTH_MB:g} MB", growth < GOAL_GROWTH_MB)


def import_row(fps: int, ms: list[float]) -> Row:
    worst = max(ms)
    return Row(f"1. tick that imports one 25 fps result (1080p, with sound) into a {fps} fps scene",
               f"median {median(ms):.1f} ms, max {worst:.1f} ms ({len(ms)} imports)",
               f"60 Hz frame: {FRAME_BUDGET_MS:.1f} ms", f"max = {worst / FRAME_BUDGET_MS:.1f} frames",
               "info (one per tick)", None)


if __name__ == "__main__":
    sys.exit(main())
