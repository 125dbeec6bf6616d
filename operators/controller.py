"""The main-thread side of running jobs: one controller per Blender session.

Threading rules:

* Everything here runs on Blender's main thread and may use ``bpy``.
* Network work happens in ``newport_api.JobWorker`` threads, which never touch
  ``bpy``.  They report through ``worker.events`` (plain ``JobEvent`` data);
  ``tick()`` drains that queue, keeps ``views`` (the latest record of each job)
  up to date, places finished results on the timeline and asks the sidebar to
  redraw.  A tick does bounded work and never waits on the network.
* In background mode (``blender -b``, the ``bpy`` module) nothing ticks, so
  ``run_sync`` runs a job in the caller's thread from start to import.

Jobs are stored as JSON under the extension's user folder, so they outlive a
crash or a quit; ``resume`` picks them up again.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..newport_api import JobEvent, JobRecord, JobRunner, JobStore, JobWorker, NewportClient, Phase
from ..newport_api.cancel import CancelToken
from ..newport_api.errors import NewportError
from ..newport_api.http import Timeouts
from . import media, placement

ADDON_PACKAGE = __package__.rpartition(".")[0]
MAX_EVENTS_PER_TICK = 500
MAX_IMPORTS_PER_TICK = 1


@dataclass(frozen=True)
class Credentials:
    """What a worker needs to talk to the service, read from preferences on the main thread."""

    api_key: str
    base_url: str
    ca_bundle: str = ""

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, api_key=<hidden>)"

    def make_client(self, cancel: CancelToken | None = None) -> NewportClient:
        return NewportClient(self.api_key, self.base_url, ca_bundle=self.ca_bundle or None,
                             cancel=cancel or CancelToken(), timeouts=Timeouts())


def user_folder(*parts: str) -> Path:
    """A folder under the extension's user directory (never inside the extension itself)."""
    return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=os.path.join(*parts), create=True))


class JobController:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.worker = JobWorker(store=store)
        self._owner_updates: dict[str, dict] = {}  # owner changes waiting for a running job to stop
        self._key_check: threading.Thread | None = None
        self._preparations: dict[str, Preparation] = {}  # jobs whose clip a background Blender is cutting
        self.key_status = ""
        self._key_status_shown = ""
        self.views: dict[str, JobRecord] = {record.job_id: record for record in store.load_all()}
        self.on_redraw: Callable[[], None] = tag_sidebar_redraw

    # -- starting work -----------------------------------------------------------

    def start(self, record: JobRecord, credentials: Credentials) -> None:
        """Hand a copy of ``record`` to a worker thread; returns at once."""
        self.store.save(record)
        self.views[record.job_id] = record
        self.worker.start(JobRecord.from_dict(record.to_dict()), credentials.make_client)

    def run_sync(self, record: JobRecord, credentials: Credentials,
                 log: Callable[[str], None] = print) -> JobRecord:
        """Run a job to the end in this thread (background mode), then place its result."""
        self.store.save(record)
        self.views[record.job_id] = record
        last_phase = [""]

        def report(event: JobEvent) -> None:
            if event.phase != last_phase[0]:
                last_phase[0] = event.phase
                log(f"Talking Face: {record.label or record.job_id[:8]}: {Phase(event.phase).label}"
                    + (f" — {event.record.get('error')}" if event.phase == Phase.FAILED.value else ""))

        with credentials.make_client() as client:
            JobRunner(client, record, save=self.store.save, emit=report).run()
        if record.phase == Phase.DOWNLOADED:
            self.place(record)
            report(JobEvent(record.job_id, record.phase.value, record.message, None, record.to_dict()))
        return record

    def launch(self, record: JobRecord, credentials: Credentials, *, sync: bool = False,
               log: Callable[[str], None] = print) -> JobRecord:
        """Run a planned job, unless an identical one was already paid for (then reuse its result)."""
        earlier = None if record.owner.get("regenerate") else self.reusable_result(record.owner["fingerprint"])
        if earlier is not None:
            return self.place_reused(record, earlier)
        self.reuse_uploads(record)
        if sync:
            return self.run_sync(record, credentials, log)
        self.start(record, credentials)
        return record

    # -- cutting the clip in a background Blender ----------------------------------

    def prepare(self, record: JobRecord, credentials: Credentials) -> None:
        """Cut the strip in a background process (``owner["cut"]``), then launch the job from ``tick``."""
        record.set_phase(Phase.PENDING, "Preparing the clip")
        self.store.save(record)
        self.views[record.job_id] = record
        process = subprocess.Popen(record.owner["cut"]["command"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        # A reading thread, so the tick never blocks on the pipe; it only ever queues strings.
        threading.Thread(target=_pump_lines, args=(process, lines), daemon=True,
                         name=f"talking-face-cut-{record.job_id[:8]}").start()
        self._preparations[record.job_id] = Preparation(process, lines, credentials)

    def _advance_preparations(self) -> bool:
        changed = False
        for job_id, preparation in list(self._preparations.items()):
            record = self.views[job_id]
            for _ in range(MAX_EVENTS_PER_TICK):
                try:
                    fraction = media.parse_cut_progress(preparation.lines.get_nowait())
                except queue.Empty:
                    break
                if fraction is not None:
                    record.progress = fraction
                    changed = True
            if preparation.process.poll() is None:
                continue
            del self._preparations[job_id]
            self._finish_preparation(record, preparation)
            changed = True
        return changed

    def _finish_preparation(self, record: JobRecord, preparation: Preparation) -> None:
        if self._finish_preparation_common(record, preparation):
            self.launch(record, preparation.credentials)

    def _finish_preparation_common(self, record: JobRecord, preparation: Preparation) -> bool:
        """Take the cut file into the record; False (and the record failed) when the cut failed."""
        output = record.owner["cut"]["output"]
        try:
            if preparation.process.returncode != 0 or not os.path.isfile(output):
                raise media.MediaError(
                    f"Blender could not cut the clip (it exited with {preparation.process.returncode}) "
                    "— check the movie strip, then Generate again.")
            from . import job_setup  # job_setup builds on this module; imported late to avoid a cycle

            job_setup.add_video(record, media.describe_video(output, is_source_file=False))
        except media.MediaError as error:
            record.fail(NewportError(str(error)))
            self.store.save(record)
            return False
        record.progress = None
        return True

    # -- never paying twice ---------------------------------------------------------

    def reusable_result(self, fingerprint: str) -> JobRecord | None:
        """An earlier job of this computer that was paid for exactly these inputs and parameters."""
        for record in sorted(self.views.values(), key=lambda record: record.created_at, reverse=True):
            if (record.owner.get("fingerprint") == fingerprint and record.phase in (Phase.DONE, Phase.DOWNLOADED)
                    and os.path.isfile(record.output_path)):
                return record
        return None

    def place_reused(self, record: JobRecord, earlier: JobRecord) -> JobRecord:
        """Import an earlier job's result for ``record`` without sending anything."""
        record.output_path = earlier.output_path
        record.owner["reused_from"] = earlier.job_id
        record.set_phase(Phase.DOWNLOADED, "Reusing an identical earlier result")
        self.store.save(record)
        self.views[record.job_id] = record
        self.place(record)
        return record

    def reuse_uploads(self, record: JobRecord, margin: float = 2 * 3600.0) -> None:
        """Copy still-valid upload URLs of inputs with the same content from earlier jobs."""
        hashes = record.owner.get("input_sha256", {})
        for role, source in record.inputs().items():
            digest = hashes.get(role)
            if not digest or role in record.uploads:
                continue
            for earlier in self.views.values():
                upload = earlier.uploads.get(role)
                if (earlier.owner.get("input_sha256", {}).get(role) == digest and upload
                        and earlier.owner.get("base_url") == record.owner.get("base_url")
                        and float(upload.get("expire_at", 0)) > time.time() + margin):
                    stat = os.stat(source)
                    record.uploads[role] = {**upload, "source": source, "size": stat.st_size,
                                            "mtime": stat.st_mtime}
                    break

    # -- the tick ----------------------------------------------------------------

    def tick(self) -> bool:
        """Drain worker events and import finished results.  True while any job is active."""
        changed = self._advance_preparations()
        changed = self._drain_events() or changed
        imports = 0
        for record in list(self.views.values()):
            if imports >= MAX_IMPORTS_PER_TICK:
                break
            if record.phase == Phase.DOWNLOADED and self._belongs_to_open_file(record):
                self.place(record)
                imports += 1
                changed = True
        if self.key_status != self._key_status_shown:
            self._key_status_shown = self.key_status
            tag_redraw("PREFERENCES", "WINDOW")  # the Check Key answer lives in the preferences
        if changed:
            self.on_redraw()
        return self.has_active_jobs()

    def _drain_events(self) -> bool:
        """Take up to ``MAX_EVENTS_PER_TICK`` events; only each job's latest snapshot is decoded."""
        latest: dict[str, JobEvent] = {}
        stopped: set[str] = set()
        for _ in range(MAX_EVENTS_PER_TICK):
            try:
                event = self.worker.events.get_nowait()
            except queue.Empty:
                break
            latest[event.job_id] = event
            if event.stopped:
                stopped.add(event.job_id)
        for job_id, event in latest.items():
            record = JobRecord.from_dict(event.record)
            record.owner.update(self._owner_updates.get(job_id, {}))
            if job_id in stopped and self._owner_updates.pop(job_id, None):
                self.store.save(record)  # the runner no longer writes it
            self.views[job_id] = record
        return bool(latest)

    def has_active_jobs(self) -> bool:
        if self._preparations or (self._key_check is not None and self._key_check.is_alive()):
            return True
        return any(self.is_running(record.job_id)
                   or (record.phase == Phase.DOWNLOADED and self._belongs_to_open_file(record))
                   for record in self.views.values() if not record.phase.finished)

    # -- the key check -----------------------------------------------------------

    def check_key(self, credentials: Credentials, *, sync: bool) -> None:
        """Ask the service about the key; the answer lands in ``key_status`` as one sentence."""
        if self._key_check is not None and self._key_check.is_alive():
            return
        self.key_status = "Checking the key…"
        if sync:
            self._run_key_check(credentials)
            return
        self._key_check = threading.Thread(target=self._run_key_check, args=(credentials,), daemon=True,
                                           name="talking-face-key-check")
        self._key_check.start()

    def _run_key_check(self, credentials: Credentials) -> None:
        # Runs in its own thread: it only ever replaces one string, never touches bpy.
        try:
            with credentials.make_client() as client:
                credits = client.remaining_credits()
        except NewportError as error:
            self.key_status = str(error)
            return
        self.key_status = ("Key accepted (the service did not report a balance)." if credits is None
                           else f"Key accepted — {credits:g} credits left.")

    def is_running(self, job_id: str) -> bool:
        return job_id in self._preparations or self.worker.is_running(job_id)

    # -- placing results ---------------------------------------------------------

    def place(self, record: JobRecord) -> None:
        """Put a downloaded result on the timeline (exactly once) and mark the job done."""
        owner = record.owner
        scene = bpy.data.scenes.get(owner.get("scene", ""))
        try:
            if scene is None:
                raise NewportError(f"The scene '{owner.get('scene')}' is gone; the result is saved at "
                                   f"{record.output_path} — add it from the file browser.")
            names = placement.place_result(
                scene, owner.get("source_strip", ""), record.output_path, job_id=record.job_id,
                name=owner.get("result_name") or record.label or "Talking Face",
                fallback_audio_path=owner.get("audio_path", ""),
                mute_sources=bool(owner.get("mute_sources", True)),
                source_strip_names=tuple(owner.get("source_strips", ())))
        except NewportError as error:
            record.fail(error)
        except placement.PlacementError as error:
            record.fail(NewportError(f"{error} The result is saved at {record.output_path} "
                                     "— add it from the file browser."))
        except Exception as error:  # noqa: BLE001 — keep the file, explain, never crash the tick
            record.fail(NewportError(
                f"The result was downloaded to {record.output_path} but could not be placed on the timeline "
                f"({error}) — add it from the file browser."))
        else:
            record.owner["imported_strips"] = names
            record.set_phase(Phase.DONE, "Placed on the timeline")
        self.store.save(record)
        self.views[record.job_id] = record

    def _belongs_to_open_file(self, record: JobRecord) -> bool:
        return record.owner.get("blend_file", "") == bpy.data.filepath

    # -- artist actions ----------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        if self.worker.cancel(job_id):
            return True
        preparation = self._preparations.pop(job_id, None)
        if preparation is not None:
            preparation.process.kill()
            preparation.process.wait()
            Path(self.views[job_id].owner["cut"]["output"]).unlink(missing_ok=True)
        record = self.views.get(job_id)
        if record is None or record.phase.finished:
            return False
        # Not running in this session (e.g. waiting to be resumed): cancel its record directly.
        record.part_path.unlink(missing_ok=True)
        record.set_phase(Phase.CANCELLED, "Cancelled")
        self.store.save(record)
        return True

    def retry(self, job_id: str, credentials: Credentials, *, sync: bool = False,
              log: Callable[[str], None] = print) -> JobRecord | None:
        record = self.views.get(job_id)
        if record is None or self.is_running(job_id) or not record.phase.finished:
            return None
        record.prepare_retry()
        if sync:
            return self.run_sync(record, credentials, log)
        self.start(record, credentials)
        return record

    def unfinished_jobs(self, blend_file: str | None = None) -> list[JobRecord]:
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        return [record for record in self.views.values()
                if not record.phase.finished and not self.is_running(record.job_id)
                and record.owner.get("blend_file", "") == blend_file]

    def resume(self, credentials: Credentials, *, sync: bool = False,
               log: Callable[[str], None] = print) -> list[JobRecord]:
        """Continue every unfinished job of the open file from its recorded phase."""
        self.reload()
        resumed = []
        for record in self.unfinished_jobs():
            if record.phase == Phase.DOWNLOADED:
                self.place(record)
            elif not record.video:  # stopped while its clip was being cut: cut it again
                self._resume_preparation(record, credentials, sync=sync, log=log)
            elif sync:
                self.run_sync(record, credentials, log)
            else:
                self.start(record, credentials)
            resumed.append(record)
        return resumed

    def _resume_preparation(self, record: JobRecord, credentials: Credentials, *, sync: bool,
                            log: Callable[[str], None]) -> None:
        if not sync:
            self.prepare(record, credentials)
            return
        process = subprocess.run(record.owner["cut"]["command"], capture_output=True, check=False)
        done = Preparation(process, queue.SimpleQueue(), credentials)
        if self._finish_preparation_common(record, done):
            self.launch(record, credentials, sync=True, log=log)

    def dismiss(self, job_id: str) -> None:
        record = self.views.get(job_id)
        if record is not None and record.phase.finished:
            del self.views[job_id]
            self.store.delete(job_id)

    def reload(self) -> None:
        """Re-read records from disk, keeping the in-memory view of jobs running here."""
        for record in self.store.load_all():
            if not self.is_running(record.job_id):
                self.views[record.job_id] = record

    def adopt_saved_file(self, old_path: str, new_path: str) -> None:
        """A file saved for the first time (or saved as) takes its unfinished jobs along."""
        for record in self.views.values():
            if record.owner.get("blend_file", "") != old_path or record.phase.finished:
                continue
            record.owner["blend_file"] = new_path
            if self.is_running(record.job_id):
                self._owner_updates.setdefault(record.job_id, {})["blend_file"] = new_path
            else:
                self.store.save(record)

    def jobs_for_file(self, blend_file: str | None = None) -> list[JobRecord]:
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        records = [record for record in self.views.values() if record.owner.get("blend_file", "") == blend_file]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    def shutdown(self) -> None:
        """Stop worker threads and cuts without cancelling: their jobs resume next time."""
        for preparation in self._preparations.values():
            preparation.process.kill()
        self._preparations.clear()
        self.worker.shutdown()
        self._drain_events()


@dataclass(frozen=True)
class Preparation:
    """A background Blender cutting a job's clip, and the lines it printed so far."""

    process: subprocess.Popen | subprocess.CompletedProcess
    lines: queue.SimpleQueue
    credentials: Credentials


def _pump_lines(process: subprocess.Popen, lines: queue.SimpleQueue) -> None:
    for line in process.stdout:
        lines.put(line)


def fingerprint(record: JobRecord) -> str:
    """What the service is paid for: the inputs' contents and the parameters, nothing else.

    The inputs are keyed by what the artist chose (``input_key``: the source's content and the
    range taken from it), never by the bytes of a cut; records from before keys existed used
    the uploaded files' hashes.
    """
    inputs = record.owner.get("input_key") or record.owner["input_sha256"]
    identity = {"inputs": inputs, "width": record.width, "height": record.height,
                "enhance": record.enhance, "fps_original": record.fps_original}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def tag_sidebar_redraw() -> None:
    tag_redraw("SEQUENCE_EDITOR", "UI")


def tag_redraw(area_type: str, region_type: str) -> None:
    """Redraw only the given region type of the given editors, in every window."""
    window_manager = bpy.context.window_manager
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type == area_type:
                for region in area.regions:
                    if region.type == region_type:
                        region.tag_redraw()


def elapsed_text(record: JobRecord, now: float | None = None) -> str:
    end = record.finished_at or (now or time.time())
    seconds = max(0, int(end - record.created_at))
    return f"{seconds // 60}:{seconds % 60:02d}"


_controller: JobController | None = None


def get_controller() -> JobController:
    global _controller
    if _controller is None:
        _controller = JobController(JobStore(user_folder("jobs")))
    return _controller


def discard_controller() -> None:
    global _controller
    if _controller is not None:
        _controller.shutdown()
    _controller = None
