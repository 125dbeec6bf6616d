"""Row 4: end-to-end overhead, Generate to strip on the timeline, minus curl's raw transfer time.

The sandbox runs in the orchestrator's process with ``processing_seconds=0``: a task
has succeeded by the time its submit is answered.  A Blender child (bpy venv, the
extension installed from the zip, background mode) holds a scene with an untrimmed
~100 MiB 1080p .mp4 strip and a 10 s WAV as the audio file, and presses Generate:
``bpy.ops.sequencer.talking_face_generate()`` runs synchronously (prepare, upload
both files, submit, poll, download, place the strips) and is timed as a whole.  The
child also stamps every save of the job record (one per phase) to break the time down,
and dismisses the previous run's job first, so that each run is a first Generate.

The reference moves the same bytes with curl against the same sandbox: ``curl -F``
of the video and of the audio to the storage host, then ``curl -o`` of the stored
video.  Runs alternate (curl first, ours first, curl first); dirty pages are flushed
before each.  The overhead is ours minus curl, medians of ``RUNS``.

From the sandbox's request log: the task's success (the submit's arrival; with zero
processing the task is done when created) to the strip's import (the DONE save) must
take less than one poll interval plus the download.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import API_KEY, Child, Row, listed, median, ratio_text, run_timed, say, seconds_text, settle_disk

RUNS = 3
GOAL_OVERHEAD = 2.0
CURL = ("curl", "-sS", "--noproxy", "*")


# -- inside Blender ----------------------------------------------------------------------------------


class GenerateBench:
    def __init__(self, base_url: str, movie: str, audio: str) -> None:
        from in_blender import EXTENSION_MODULE, part, start_blender

        self.bpy, extension, _ = start_blender()
        compat = part(extension, "operators.compat")
        self.newport = part(extension, "newport_api")
        self.controller = part(extension, "operators.controller").get_controller()
        self.bpy.context.preferences.addons[EXTENSION_MODULE].preferences.base_url = base_url
        os.environ["NEWPORT_API_KEY"] = API_KEY
        scene = self.bpy.data.scenes.new("End to end")
        compat.set_scene_fps(scene, 25)
        compat.ensure_editor(scene)
        self.bpy.context.window.scene = scene
        compat.new_movie(scene, "take", movie, channel=1, frame_start=1)
        settings = scene.talking_face
        settings.video_strip = "take"
        settings.audio_source, settings.audio_file = "FILE", audio
        self.phases: list[tuple[str, float]] = []
        self._stamp_saves()

    def _stamp_saves(self) -> None:
        store = self.controller.store
        save = store.save

        def stamped(record: Any) -> None:
            save(record)
            self.phases.append((record.phase.value, time.monotonic()))

        store.save = stamped  # this instance only: the runner gets it from run_sync

    def generate(self) -> dict[str, Any]:
        for job_id in list(self.controller.views):  # a first Generate each time: nothing earlier to reuse
            self.controller.dismiss(job_id)
        self.phases.clear()
        started = time.monotonic()
        result = self.bpy.ops.sequencer.talking_face_generate()
        ended = time.monotonic()
        record = max(self.controller.views.values(), key=lambda job: job.created_at)
        done = result == {"FINISHED"} and record.phase == self.newport.Phase.DONE
        size = os.path.getsize(record.output_path) if done else 0
        Path(record.output_path).unlink(missing_ok=True)  # keep the disk quiet for the next run
        print(f"[bench] generate: {record.phase.value} in {ended - started:.2f} s", flush=True)
        return {"started": started, "ended": ended, "phases": self.phases[:], "done": done, "size": size,
                "error": record.error, "strips": record.owner.get("imported_strips", [])}


def main() -> int:
    from common import serve_requests

    bench = GenerateBench(*sys.argv[1:4])
    serve_requests({"generate": bench.generate})
    return 0


# -- in the orchestrator -----------------------------------------------------------------------------


def curl_reference(base_url: str, movie: Path, audio: Path, work: Path) -> float:
    """Upload the video and the audio, then download the video: the same bytes as a job, with curl."""
    from transfer import curl_upload, stored_url

    settle_disk()
    video, req_id = curl_upload(base_url, movie)
    sound, _ = curl_upload(base_url, audio)
    dest = work / "curl_result.mp4"
    down = run_timed([*CURL, "-o", dest, stored_url(base_url, req_id)],
                     label=f"{' '.join(CURL[:3])} '*' -o $TMP/curl_result.mp4 $OBJECT_URL")
    if dest.stat().st_size != movie.stat().st_size:
        raise RuntimeError("curl downloaded a different size")
    dest.unlink()
    total = video.seconds + sound.seconds + down.seconds
    say(f"e2e: curl up+down {total:.2f} s")
    return total


def ours_run(child: Child, sandbox: Any) -> dict[str, Any]:
    settle_disk()
    run = child.request("generate")
    if not run["done"]:
        raise RuntimeError(f"Generate did not place the result: {run['error']}")
    window = [entry for entry in sandbox.requests if run["started"] <= entry.time <= run["ended"]]
    run["submitted"] = next(entry.time for entry in window if entry.phase == "submit")
    run["polls"] = sum(1 for entry in window if entry.phase == "poll")
    return run


def phase_times(run: dict[str, Any]) -> dict[str, float]:
    """When each phase began (the first save in it); the end is the DONE save."""
    first: dict[str, float] = {}
    for phase, stamp in run["phases"]:
        first.setdefault(phase, stamp)
    return first


def measure(movie: Path, audio: Path, work: Path) -> list[Row]:
    from newport_api import RunnerSettings
    from newport_api.sandbox import Sandbox

    ours: list[dict[str, Any]] = []
    curl: list[float] = []
    with (Sandbox(processing_seconds=0, storage_dir=work / "storage") as sandbox,
          Child("end_to_end", "end_to_end.py", sandbox.base_url, str(movie), str(audio)) as child):
        for run in range(RUNS):
            if run % 2:
                ours.append(ours_run(child, sandbox))
                curl.append(curl_reference(sandbox.base_url, movie, audio, work))
            else:
                curl.append(curl_reference(sandbox.base_url, movie, audio, work))
                ours.append(ours_run(child, sandbox))
    return rows(ours, curl, RunnerSettings().poll_interval, movie.stat().st_size + audio.stat().st_size)


def breakdown(run: dict[str, Any]) -> str:
    times = phase_times(run)
    marks = [("prepare", run["started"]), ("upload", times["uploading"]),
             ("submit+poll", times["submitting"]), ("download", times["downloading"]),
             ("import", times["downloaded"]), ("end", times["done"])]
    spans = itertools.pairwise(marks)
    return ", ".join(f"{name} {seconds_text(end - start)}" for (name, start), (_, end) in spans)


def rows(ours: list[dict[str, Any]], curl: list[float], poll_interval: float, size: int) -> list[Row]:
    totals = [run["ended"] - run["started"] for run in ours]
    typical = sorted(ours, key=lambda run: run["ended"] - run["started"])[len(ours) // 2]
    ours_s, curl_s = median(totals), median(curl)
    overhead = ours_s - curl_s
    success_to_import = [phase_times(run)["done"] - run["submitted"] for run in ours]
    downloads = [phase_times(run)["downloaded"] - phase_times(run)["downloading"] for run in ours]
    budget = poll_interval + median(downloads)
    waited = median(success_to_import)
    return [
        Row(f"4. Generate → strip, {size / 2**20:.0f} MiB up + {typical['size'] / 2**20:.0f} MiB down",
            f"{seconds_text(ours_s)} ({listed(totals)}; median run: {breakdown(typical)})",
            f"curl up+down: {seconds_text(curl_s)} ({listed(curl)})",
            f"{ratio_text(ours_s / curl_s)}; overhead {seconds_text(overhead)}",
            f"overhead < {GOAL_OVERHEAD:g} s", overhead < GOAL_OVERHEAD),
        Row("4. task success → strip imported",
            f"{seconds_text(waited)} ({listed(success_to_import)}; "
            f"{typical['polls']} poll)",
            f"poll interval {poll_interval:g} s + download {seconds_text(median(downloads))}",
            ratio_text(waited / budget), "< one poll interval + the download", waited < budget),
    ]


if __name__ == "__main__":
    sys.exit(main())
