"""The main-thread side of running jobs: one controller per Blender session.

Threading rules:

* Everything here runs on Blender's main thread and may use ``bpy``.
* Network work happens in ``newport_api.JobWorker`` threads, which never touch
  ``bpy``.  They report through ``worker.events`` (plain ``JobEvent`` data);
  ``tick()`` drains that queue, keeps ``views`` (the latest record of each job)
  up to date, places finished results on the timeline and asks the sidebar to
  redraw.  A tick does bounded work and never waits on the network.  Snapshots
  (phase changes, stops) replace a job's view, the main thread's own object,
  never shared with a worker.  Progress, the frequent kind of news, costs a tick
  nothing per job: the worker keeps each job's latest, the sidebar reads it for
  the rows it draws (``progress_of``), and the tick only notices that some job
  moved (``JobWorker.progress_stamp``) and asks for a redraw.
* Checks that read other processes' owner files run every ``WATCH_SECONDS`` (or
  when nothing runs here), never once per job on every tick.
* In background mode (``blender -b``, the ``bpy`` module) nothing ticks, so
  ``run_sync`` runs a job in the caller's thread from start to import.

Jobs are stored as JSON under the extension's user folder, so they outlive a
crash or a quit; ``resume`` picks them up again.

Several Blenders share that folder (two open the same .blend, or two unsaved
sessions).  A job is run, written and imported only by the process that holds its
claim (``JobStore.claim``): ``start``, ``run_sync``, ``resume``, ``place`` and
``cancel`` claim first and re-read the record after claiming, since another
process may have moved it on.  The others show ``owned_elsewhere`` and take the
job over once its owner is gone (``take_over_abandoned``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import bpy

from ..newport_api import JobEvent, JobRecord, JobRunner, JobStore, JobWorker, Phase, RunnerSettings
from ..newport_api.batches import BatchSummary, summarize
from ..newport_api.errors import NewportError
from ..newport_api.http import check_base_url
from ..newport_api.ownership import HOST, OwnerInfo
from ..newport_api.sockets import sigpipe_blocked
from . import compat, media, placement, takes
from .addon import Credentials, credentials, preferred_parallel_jobs, user_folder
from .job_inputs import apply_prepared
from .preparation import PreparationPlan, PreparationTask, PreparedInputs, carry_out

TICK_SECONDS = 0.2  # the monitor's period (jobs_ops), and so the most often a job's progress can show
MAX_EVENTS_PER_TICK = 500
MAX_IMPORTS_PER_TICK = 1
OWNER_CACHE_SECONDS = 1.0  # the panel asks on every redraw; owners change far less often
WATCH_SECONDS = 2.0  # how often the monitor checks whether another Blender left a job behind
QUIET_POLL_SECONDS = 0.05  # run_sync, waiting for the jobs' threads before placing a result (placement.PlacementDeferred)
WAITING_MESSAGE = "Waiting in the queue"
PAUSED_KEY = "queue_paused"  # in a record's owner data: held by Pause until Resume (saved: survives a reopen)
PAUSED_MESSAGE = "Waiting: the queue is paused"
# Owner key of a placed result: the .blend whose save held its strips ("" until a save did). A result
# placed by a session that ended before saving (killed, closed without saving) is missing from the file
# while its record says done; one that a save held and that is missing now was removed by the artist.
PLACEMENT_SAVED = "placement_saved"


class JobController:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        # Progress more often than the monitor looks would be overwritten unseen (JobWorker.progress).
        self.worker = JobWorker(store=store, settings=RunnerSettings(progress_interval=TICK_SECONDS))
        self._owner_updates: dict[str, dict] = {}  # owner changes waiting for a running job to stop
        self._key_check: threading.Thread | None = None
        self._preparations: dict[str, PreparationTask] = {}  # jobs whose inputs are being prepared
        self._waiting: dict[str, Credentials] = {}  # jobs admitted but not started: no slot was free
        self.max_parallel_jobs: Callable[[], int] = preferred_parallel_jobs
        self.key_status = ""
        self._key_status_shown = ""
        self.views: dict[str, JobRecord] = {record.job_id: record for record in store.load_all()}
        # Jobs stopped because online access was switched off; they go on once it is back.
        self.paused_offline: set[str] = set()
        self._credentials: dict[str, Credentials] = {}  # what each job of this session was started with
        self._owners: dict[str, tuple[float, OwnerInfo | None]] = {}  # job id → (read at, owner)
        self._watched: set[str] = set()  # jobs seen running in another Blender
        self._stored_stamps: dict[str, tuple[int, int, int]] = {}  # watched job id → its file when last read
        self._refused: dict[str, float] = {}  # job id → when a claim on it last failed
        self._last_watch = 0.0  # when the monitor last looked for jobs another Blender left behind
        self._placed_unsaved: dict[str, str] = {}  # job id → the .blend it was placed in, until that is saved
        # Downloaded results that wait for the jobs' threads to end before they are placed (placement.PlacementDeferred).
        self._awaiting_quiet: set[str] = set()
        self.on_redraw: Callable[[], None] = tag_sidebar_redraw
        self._progress_shown = 0  # the worker's progress stamp at the last redraw
        self._open_batches: set[str] = set()  # batches with jobs queued or running here: announced when they end
        self._batch_check_due = False  # a job ended outside the events (a cancel): look at open batches
        self.on_batch_end: Callable[[str, BatchSummary], None] = announce_batch_end

    # -- starting work -----------------------------------------------------------

    def start(self, record: JobRecord, credentials: Credentials) -> bool:
        """Hand a copy of ``record`` to a worker thread; returns at once.

        False, with nothing written, when another Blender owns the job.
        """
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return False
        self.store.save(record)
        self.views[record.job_id] = record
        self._credentials[record.job_id] = credentials
        self._open_batch(record)
        return self.worker.start(JobRecord.from_dict(record.to_dict()), credentials.make_client)

    def run_sync(self, record: JobRecord, credentials: Credentials,
                 log: Callable[[str], None] = print) -> JobRecord:
        """Run a job to the end in this thread (background mode), then place its result.

        A job another Blender owns is left alone: its record comes back unchanged.
        """
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return record
        try:
            return self._run_claimed(record, credentials, log)
        finally:
            self._release_unless_placed_unsaved(record.job_id)

    def _run_claimed(self, record: JobRecord, credentials: Credentials,
                     log: Callable[[str], None]) -> JobRecord:
        self.store.save(record)
        self.views[record.job_id] = record
        last_phase = [""]

        def report(event: JobEvent) -> None:
            if event.phase != last_phase[0]:
                last_phase[0] = event.phase
                log(f"Talking Face: {record.label or record.job_id[:8]}: {Phase(event.phase).label}"
                    + (f" — {record.error}" if event.phase == Phase.FAILED.value else ""))

        with credentials.make_client() as client, sigpipe_blocked():
            JobRunner(client, record, save=self.store.save, emit=report).run()
        if record.phase == Phase.DOWNLOADED:
            self.place(record)
            while record.job_id in self._awaiting_quiet:  # other jobs' threads run: synchronous means wait
                time.sleep(QUIET_POLL_SECONDS)
                self.tick()
            report(JobEvent(record.job_id, record.phase.value, record.message, None, record.to_dict()))
        return record

    def launch(self, record: JobRecord, credentials: Credentials, *, sync: bool = False,
               log: Callable[[str], None] = print, queued: bool = True) -> JobRecord:
        """Run a planned job, unless an identical one was already paid for (then reuse its result).

        Without ``sync`` it joins the queue (``queued=False``: it already holds a slot, its preparation's).
        """
        earlier = None if record.owner.get("regenerate") else self.reusable_result(record.owner["fingerprint"])
        if earlier is not None:
            return self.place_reused(record, earlier)
        self.reuse_uploads(record)
        if sync:
            return self.run_sync(record, credentials, log)
        if queued or self._held(record):  # prepared while the queue was paused: it waits for Resume
            self._start_or_wait(record, credentials)
        else:
            self.start(record, credentials)
        return record

    # -- the queue -------------------------------------------------------------------

    def _start_or_wait(self, record: JobRecord, credentials: Credentials) -> None:
        """The one place that decides "start now or wait": at most ``max_parallel_jobs`` at once.

        A job that must wait stays pending (claimed, so no other Blender takes it); ``tick``
        starts waiting jobs in timeline order as slots free up.
        """
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return
        # Only the message: a retried job's phase says where its runner goes on (e.g. polling its task).
        record.set_phase(record.phase, PAUSED_MESSAGE if self._held(record) else WAITING_MESSAGE)
        self.store.save(record)
        self.views[record.job_id] = record
        self._waiting[record.job_id] = credentials
        self._open_batch(record)
        self._start_waiting()

    def running_count(self) -> int:
        """Network jobs this Blender runs now: preparations and worker threads (the queue's slots)."""
        return len(self._preparations) + len(self.worker.running_ids())

    def is_waiting(self, job_id: str) -> bool:
        return job_id in self._waiting

    def _start_waiting(self) -> bool:
        """Start waiting jobs, earliest on the timeline first, while slots are free (held ones stay)."""
        if not self._waiting or not bpy.app.online_access:  # offline: they start once it is back
            return False
        if self._awaiting_quiet:  # no new job threads until the result waiting for them to end is placed
            return False
        free = max(1, self.max_parallel_jobs()) - self.running_count()
        if free <= 0:
            return False
        ready = sorted((job_id for job_id in self._waiting if not self._held(self.views[job_id])),
                       key=self._timeline_position)[:free]
        for job_id in ready:
            credentials = self._waiting.pop(job_id)
            record = self.views[job_id]
            if "prepare" in record.owner or not record.video:
                self._begin_preparation(record, credentials)
            else:
                self.start(record, credentials)
        return bool(ready)

    # -- pausing the queue -------------------------------------------------------------

    @staticmethod
    def _held(record: JobRecord) -> bool:
        """Paused and not yet submitted: it may not start. A job with a task always goes on (it is paid for)."""
        return bool(record.owner.get(PAUSED_KEY)) and not record.task_id and not record.submit_started_at

    def queue_members(self, batch: str = "") -> list[JobRecord]:
        """Unfinished jobs of the open file (of ``batch`` only, when given) that no other Blender runs."""
        return [record for record in self.jobs_for_file() if not record.phase.finished
                and (not batch or record.owner.get("batch") == batch) and not self.owned_elsewhere(record)]

    def pause_queue(self, batch: str = "") -> list[JobRecord]:
        """Hold the jobs of the file (or of ``batch``) that have not started yet; returns them.

        Jobs already running here go on — uploading, submitting, waiting for their task or
        downloading — so no paid task is ever dropped. The hold is saved in each record.
        """
        held = []
        for record in self.queue_members(batch):
            if (self.worker.is_running(record.job_id) or record.job_id in self.paused_offline
                    or record.task_id or record.submit_started_at):
                continue  # started or paid for: it goes on (a submit in flight gets its task id, saved)
            if self._set_paused(record, True):
                held.append(self.views[record.job_id])
        return held

    def resume_queue(self, batch: str = "") -> list[JobRecord]:
        """Let the held jobs of the file (or of ``batch``) start again, in timeline order; returns them."""
        released = [self.views[record.job_id] for record in self.queue_members(batch)
                    if record.owner.get(PAUSED_KEY) and self._set_paused(record, False)]
        self._start_waiting()
        return released

    def _set_paused(self, record: JobRecord, paused: bool) -> bool:
        """Write the hold into the job's record (claimed for the write when nothing here holds it)."""
        job_id = record.job_id
        if self.worker.is_running(job_id):  # its runner writes the record: the change joins its snapshots
            record.owner[PAUSED_KEY] = paused
            self._owner_updates.setdefault(job_id, {})[PAUSED_KEY] = paused
            return True
        ours = self.store.holds(job_id)  # waiting or preparing here: this Blender writes its record
        if not ours:
            record = self._claim_latest(record)
            if record is None:
                return False
        record.owner[PAUSED_KEY] = paused
        if job_id in self._waiting:
            record.set_phase(record.phase, PAUSED_MESSAGE if self._held(record) else WAITING_MESSAGE)
        self.store.save(record)
        self.views[job_id] = record
        if not ours:
            self.store.release(job_id)
        return True

    def is_paused(self, record: JobRecord) -> bool:
        return not record.phase.finished and bool(record.owner.get(PAUSED_KEY))

    # -- announcing the end of a batch ------------------------------------------------------

    def _open_batch(self, record: JobRecord) -> None:
        batch = record.owner.get("batch")
        if batch:
            self._open_batches.add(batch)

    def _announce_ended_batches(self) -> None:
        """Each batch run here whose last job just finished: its summary, once (``on_batch_end``).

        With a window the summary is an operator's report under a context override, which waits
        for the jobs' threads to end like a placement (``compat.overridden_operator_must_wait``).
        """
        if not bpy.app.background and compat.overridden_operator_must_wait():
            self._batch_check_due = True  # looked at again on the next tick, cheaply
            return
        self._batch_check_due = False
        members: dict[str, list[JobRecord]] = {batch: [] for batch in self._open_batches}
        moving: set[str] = set()  # one pass, no sorting: this runs on ticks while a batch is open
        for record in self.views.values():
            batch = record.owner.get("batch", "")
            found = members.get(batch)
            if found is not None:
                found.append(record)
                if not record.phase.finished:
                    moving.add(batch)
        for batch, records in members.items():
            if batch in moving:
                continue
            self._open_batches.discard(batch)
            if records:
                self.on_batch_end(batch, summarize(records))

    def _timeline_position(self, job_id: str) -> tuple:
        record = self.views[job_id]
        return (*record.owner.get("timeline", (float("inf"), 0)), record.created_at)

    # -- preparing inputs off the main thread ---------------------------------------

    def prepare(self, record: JobRecord, credentials: Credentials) -> None:
        """Carry out ``owner["prepare"]`` in a preparation thread; ``tick`` launches the job after.

        Claimed first, like a running job: another Blender on the same file must not cut it again.
        """
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return
        self._start_or_wait(record, credentials)

    def _begin_preparation(self, record: JobRecord, credentials: Credentials) -> None:
        record.set_phase(Phase.PENDING, "Preparing the clip")
        self.store.save(record)
        self.views[record.job_id] = record
        self._preparations[record.job_id] = PreparationTask(record.job_id, _plan_of(record), credentials)

    def _advance_preparations(self) -> bool:
        changed = False
        for job_id, task in list(self._preparations.items()):
            record = self.views[job_id]
            for _ in range(MAX_EVENTS_PER_TICK):
                try:
                    kind, value = task.messages.get_nowait()
                except queue.Empty:
                    break
                changed = True
                if kind == "progress":
                    record.progress = value
                    continue
                del self._preparations[job_id]
                self._finish_preparation(record, task.credentials, value if kind == "done" else None,
                                         failure=value if kind == "failed" else "")
                break
        return changed

    def _finish_preparation(self, record: JobRecord, credentials: Credentials, prepared: PreparedInputs | None,
                            *, failure: str = "", sync: bool = False, log: Callable[[str], None] = print) -> None:
        if prepared is not None:
            try:
                apply_prepared(record, prepared)
            except media.MediaError as error:  # what was prepared cannot be sent (the preflight's sentence)
                failure = str(error)
        if failure:
            record.fail(NewportError(failure))
            self.store.save(record)
            self.store.release(record.job_id)
            return
        record.progress = None
        self.launch(record, credentials, sync=sync, log=log, queued=False)  # keeps its preparation's slot

    def _prepare_now(self, record: JobRecord, credentials: Credentials, log: Callable[[str], None]) -> None:
        """Background mode: the preparation in this thread, then the job to the end."""
        try:
            prepared = carry_out(_plan_of(record))
        except (media.MediaError, OSError) as error:
            self._finish_preparation(record, credentials, None, failure=str(error))
            return
        self._finish_preparation(record, credentials, prepared, sync=True, log=log)

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
        changed = self._follow_online_access()
        changed = self._watch_other_blenders() or changed
        changed = self._advance_preparations() or changed
        changed = self._drain_events() or changed
        changed = self._progress_moved() or changed
        changed = self._start_waiting() or changed
        imports = 0
        to_place = [record for record in self.views.values() if self._to_place(record)]
        self._awaiting_quiet &= {record.job_id for record in to_place}
        still_busy = bool(self._awaiting_quiet) and compat.overridden_operator_must_wait()
        for record in to_place:
            if imports >= MAX_IMPORTS_PER_TICK:
                break
            if record.job_id in self._awaiting_quiet and still_busy:
                continue
            self.place(record)
            imports += 1
            changed = True
        if self._open_batches and (changed or self._batch_check_due):
            self._announce_ended_batches()
        if self.key_status != self._key_status_shown:
            self._key_status_shown = self.key_status
            tag_redraw("PREFERENCES", "WINDOW")  # the Check Key answer lives in the preferences
        if changed:
            self.on_redraw()
        return self.has_active_jobs()

    def _drain_events(self) -> bool:
        """Take up to ``MAX_EVENTS_PER_TICK`` snapshots; only each job's latest one is decoded."""
        latest: dict[str, JobEvent] = {}
        for _ in range(MAX_EVENTS_PER_TICK):
            try:
                event = self.worker.events.get_nowait()
            except queue.Empty:
                break
            latest[event.job_id] = event
        for job_id, event in latest.items():
            self._take_snapshot(job_id, event)
        return bool(latest)

    def _progress_moved(self) -> bool:
        """True when a job reported progress since the last look: the sidebar shows it (``progress_of``)."""
        stamp = self.worker.progress_stamp
        moved, self._progress_shown = stamp != self._progress_shown, stamp
        return moved

    def progress_of(self, record: JobRecord) -> tuple[float | None, str]:
        """``(fraction, message)`` to show for a job's view: its latest progress, when it runs here."""
        return self.worker.progress_of(record)

    def _take_snapshot(self, job_id: str, event: JobEvent) -> None:
        assert event.record is not None
        record = JobRecord.from_dict(event.record)
        owner_update = self._owner_updates.get(job_id)
        if owner_update:
            record.owner.update(owner_update)
            if event.stopped:
                del self._owner_updates[job_id]
                self.store.save(record)  # the runner no longer writes it
        self.views[job_id] = record

    def _follow_online_access(self) -> bool:
        """Online access switched off pauses every network job at once; switched on, they go on."""
        if not bpy.app.online_access:
            paused = {job_id for job_id in self.worker.running_ids() if self.worker.pause(job_id)}
            self.paused_offline |= paused
            return bool(paused)
        if not self.paused_offline or any(self.worker.is_running(job_id) for job_id in self.paused_offline):
            return False  # paused jobs still winding down: start them once their threads are gone
        paused, self.paused_offline = self.paused_offline, set()
        for job_id in paused:
            record = self.store.load(job_id) or self.views.get(job_id)
            if record is not None and not record.phase.finished:
                self.start(record, self._credentials.get(job_id) or credentials())
        return True

    def _watch_other_blenders(self) -> bool:
        """Every few seconds, take over the jobs of this file whose owning Blender has gone."""
        now = time.monotonic()
        if now - self._last_watch < WATCH_SECONDS:
            return False
        self._last_watch = now  # also when nobody is watched: the scan below reads owner files
        # Already watching: take_over_abandoned reads every owner file itself, no need to read them twice.
        if not (self._watched or self.jobs_owned_elsewhere()) or not bpy.app.online_access:
            return False
        return bool(self.take_over_abandoned(credentials()))

    def has_active_jobs(self) -> bool:
        """True while the monitor has work; asked on every tick, so the cheap answers come first."""
        if (self.paused_offline or self._watched or self._preparations or self._waiting
                or self.worker.any_running()):
            return True  # paused for online access, watching another Blender, or running here
        if self._key_check is not None and self._key_check.is_alive():
            return True
        if any(self._to_place(record) for record in self.views.values()):
            return True
        return self.watching_other_blenders()  # nothing runs here: the monitor stops unless another Blender runs one

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
            with credentials.make_client() as client, sigpipe_blocked():
                balance = client.balance()
        except NewportError as error:
            self.key_status = str(error)
            return
        if not balance.confirmed:  # e.g. a 404: nobody looked at the key
            self.key_status = ("Not checked: this server does not offer the balance check, "
                               "so the key is tested by the first job.")
        elif balance.credits is None:
            self.key_status = "Key accepted (the service did not report a balance)."
        else:
            self.key_status = f"Key accepted — {balance.credits:g} credits left."

    def pause_reason(self, record: JobRecord) -> str:
        """Why an unfinished job of this file is not moving here ('' when it is running, here or elsewhere)."""
        if record.phase.finished or self.is_running(record.job_id) or self.owned_elsewhere(record) or (
                record.phase == Phase.DOWNLOADED and record.job_id not in self.paused_offline):
            return ""
        if record.job_id in self.paused_offline or not bpy.app.online_access:
            return "Paused while online access is off — allow it in Preferences ▸ System ▸ Network."
        return "Paused: it stopped when Blender closed or the extension was turned off — press Resume."

    def is_running(self, job_id: str) -> bool:
        """Running or waiting in this Blender's queue (either way: not paused, not to resume)."""
        return job_id in self._preparations or job_id in self._waiting or self.worker.is_running(job_id)

    # -- placing results ---------------------------------------------------------

    def place(self, record: JobRecord) -> None:
        """Put a downloaded result on the timeline (exactly once) and mark the job done.

        Only the job's owner places it: a result another Blender owns, or one it
        placed already, is left alone here (the view shows the stored record).
        """
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return
        stored = self.store.load(record.job_id)
        if stored is not None and stored.phase != Phase.DOWNLOADED:  # placed or moved on elsewhere
            self.views[record.job_id] = stored
            self.store.release(record.job_id)
            return
        self._place_claimed(record)
        self._release_unless_placed_unsaved(record.job_id)

    def _place_claimed(self, record: JobRecord) -> None:
        owner = record.owner
        scene = bpy.data.scenes.get(owner.get("scene", ""))
        try:
            if scene is None:
                raise NewportError(f"The scene '{owner.get('scene')}' is gone; the result is saved at "
                                   f"{record.output_path} — add it from the file browser.")
            names = takes.place_take(scene, record)  # the source's next take, above the earlier ones
        except placement.PlacementDeferred as reason:
            self._awaiting_quiet.add(record.job_id)
            record.message = f"Downloaded — {reason}"
            self.views[record.job_id] = record
            return
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
            self._awaiting_quiet.discard(record.job_id)
            record.owner["imported_strips"] = names
            record.owner[PLACEMENT_SAVED] = ""
            self._placed_unsaved[record.job_id] = bpy.data.filepath
            record.set_phase(Phase.DONE, "Placed on the timeline")
        self.store.save(record)
        self.views[record.job_id] = record

    def placements_saved(self, old_path: str, new_path: str) -> None:
        """After a save: the results placed in the file since its last save are in ``new_path`` now."""
        placed, self._placed_unsaved = self._placed_unsaved, {}  # others were placed in a file closed unsaved
        for job_id, placed_in in placed.items():
            record = self.views.get(job_id)
            if placed_in == old_path and record is not None and record.phase == Phase.DONE:
                record.owner[PLACEMENT_SAVED] = new_path
                self.store.save(record)
            self.store.release(job_id)

    def forget_unsaved_placements(self) -> None:
        """Another file was opened: what was placed since the last save is gone with the closed one."""
        placed, self._placed_unsaved = self._placed_unsaved, {}
        for job_id in placed:
            self.store.release(job_id)

    def lost_placements(self, blend_file: str | None = None) -> list[JobRecord]:
        """Done jobs of the open (saved) file whose strips no save held and that are missing from it.

        Placed by a session that ended before saving the file (e.g. killed mid-batch): placed again by
        ``resume``.  A result removed by the artist after a save held it is not lost, nor is one this
        session placed (the artist may have removed it since), nor one whose scene or sources are gone.
        """
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        if not blend_file:
            return []  # an unsaved session's results were never in a file
        return [record for record in self.views.values()
                if record.phase == Phase.DONE and record.owner.get("blend_file", "") == blend_file
                and PLACEMENT_SAVED in record.owner and record.owner[PLACEMENT_SAVED] != blend_file
                and record.job_id not in self._placed_unsaved and os.path.isfile(record.output_path)
                and _missing_with_its_sources_present(record)]

    def place_lost(self, job_id: str = "") -> list[JobRecord]:
        """Place again the results ``lost_placements`` finds (or just ``job_id``'s), each once."""
        placed = []
        for candidate in self.lost_placements():
            if job_id and candidate.job_id != job_id:
                continue
            record = self._claim_latest(candidate)
            if record is None:
                continue  # another Blender holds it
            if record.phase == Phase.DONE and _missing_with_its_sources_present(record):
                self._place_claimed(record)
                placed.append(record)
            self._release_unless_placed_unsaved(record.job_id)
        return placed

    def _release_unless_placed_unsaved(self, job_id: str) -> None:
        """Give up a job once placing it ended — but hold a result placed here until a save keeps it.

        While this session holds it, another Blender on the same file does not take the result for
        a lost placement (its copy of the file lacks the strips only because this one is unsaved);
        if this session dies before saving, the OS lets the claim go and a reopen places it again.
        """
        if job_id not in self._placed_unsaved:
            self.store.release(job_id)

    def _to_place(self, record: JobRecord) -> bool:
        """Downloaded, of the open file: this Blender places it (``tick``)."""
        return record.phase is Phase.DOWNLOADED and self._belongs_to_open_file(record)

    def _belongs_to_open_file(self, record: JobRecord) -> bool:
        return record.owner.get("blend_file", "") == bpy.data.filepath

    # -- artist actions ----------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        self._batch_check_due = True  # a waiting job cancelled sends no event; its batch may have ended
        if self.worker.cancel(job_id):
            return True
        self._waiting.pop(job_id, None)  # then cancelled below like any job not running
        task = self._preparations.pop(job_id, None)
        if task is not None:
            task.stop()
            if task.plan.cut_command:
                Path(task.plan.video).unlink(missing_ok=True)
        record = self.views.get(job_id)
        if record is None or record.phase.finished:
            return False
        # Not running in this session (e.g. waiting to be resumed): cancel its record directly —
        # unless another Blender runs it: only that one may write its record.
        if not self.store.claim(job_id):
            self._show_stored(job_id)
            return False
        record = self.store.load(job_id) or record
        self.views[job_id] = record
        if not record.phase.finished:
            record.part_path.unlink(missing_ok=True)
            record.set_phase(Phase.CANCELLED, "Cancelled")
            self.store.save(record)
        self.store.release(job_id)
        return record.phase == Phase.CANCELLED

    def retry(self, job_id: str, credentials: Credentials, *, sync: bool = False,
              log: Callable[[str], None] = print) -> JobRecord | None:
        record = self.views.get(job_id)
        if record is None or self.is_running(job_id) or not record.phase.finished:
            return None
        record.prepare_retry()
        if sync:
            return self.run_sync(record, credentials, log)
        self._start_or_wait(record, credentials)
        return record

    def unfinished_jobs(self, blend_file: str | None = None) -> list[JobRecord]:
        """Jobs of the file that nothing runs: neither this Blender nor another one."""
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        return [record for record in self.views.values()
                if not record.phase.finished and not self.is_running(record.job_id)
                and record.owner.get("blend_file", "") == blend_file and self.owned_elsewhere(record) is None]

    def resume(self, credentials: Credentials, *, sync: bool = False, job_id: str = "",
               log: Callable[[str], None] = print) -> list[JobRecord]:
        """Continue every unfinished job of the open file (or just ``job_id``) from its recorded phase."""
        self.reload()
        resumed = self.place_lost(job_id)
        given = credentials
        for candidate in self.unfinished_jobs():
            if job_id and candidate.job_id != job_id:
                continue
            record = self._claim_latest(candidate)
            if record is None:
                continue  # another Blender took it first
            if record.phase.finished:
                self.store.release(record.job_id)
                continue
            if sync and self._held(record):  # paused: it waits for the queue's Resume, here too
                self.store.release(record.job_id)
                continue
            credentials = _service_of(record, given)
            if record.phase == Phase.DOWNLOADED:
                self.place(record)
            elif not record.video:  # stopped while its inputs were being prepared: prepare them again
                if sync:
                    self._prepare_now(record, credentials, log)
                else:
                    self.prepare(record, credentials)
            elif sync:
                self.run_sync(record, credentials, log)
            else:  # through the queue: a reopened file's jobs also run at most max_parallel_jobs at once
                self._start_or_wait(record, credentials)
            resumed.append(record)
        return resumed

    def dismiss(self, job_id: str) -> None:
        record = self.views.get(job_id)
        if record is not None and record.phase.finished:
            del self.views[job_id]
            self.store.delete(job_id)

    def reload(self) -> None:
        """Re-read records from disk, keeping the in-memory view of jobs running here."""
        self._owners.clear()
        self._stored_stamps.clear()
        for record in self.store.load_all():
            if not self.is_running(record.job_id):
                self.views[record.job_id] = record
                if record.phase.finished:  # e.g. a cut that failed: nothing left to own
                    self._release_unless_placed_unsaved(record.job_id)

    # -- ownership across Blender processes --------------------------------------------

    def _claim_latest(self, record: JobRecord) -> JobRecord | None:
        """Claim a job and return its stored record (another process may have moved it on); None if owned."""
        if not self.store.claim(record.job_id):
            self._show_stored(record.job_id)
            return None
        stored = self.store.load(record.job_id)
        if stored is not None:
            self.views[record.job_id] = stored
        return stored or record

    def _show_stored(self, job_id: str) -> None:
        """The view of a job another process owns follows what that process writes."""
        self._owners.pop(job_id, None)
        self._stored_stamps.pop(job_id, None)
        self._refused[job_id] = time.monotonic()
        stored = self.store.load(job_id)
        if stored is not None:
            self.views[job_id] = stored

    def owner_of(self, job_id: str, *, max_age: float = OWNER_CACHE_SECONDS) -> OwnerInfo | None:
        """Who claimed the job (``alive`` judged when read), cached for ``max_age`` seconds."""
        now = time.monotonic()
        cached = self._owners.get(job_id)
        if cached is None or now - cached[0] > max_age:
            cached = (now, self.store.owner_of(job_id))
            self._owners[job_id] = cached
        return cached[1]

    def owned_elsewhere(self, record: JobRecord) -> str | None:
        """For the panel: "Running in another Blender (pid N) …" while another live process owns the job."""
        if record.phase.finished or self.is_running(record.job_id) or self.store.holds(record.job_id):
            return None
        owner = self.owner_of(record.job_id)
        if (owner is None or not owner.alive) and self._claim_refused_lately(record.job_id):
            # The lock says someone owns it: its owner file may not name it yet (a claim just made).
            owner = self.owner_of(record.job_id, max_age=0.0)
            if owner is None or not owner.alive:
                return "Running in another Blender; it continues here if that Blender closes."
        if owner is None or not owner.alive or owner.is_this_process:
            return None
        where = "another Blender" if owner.host == HOST else f"a Blender on {owner.host}"
        return f"Running in {where} (pid {owner.pid}); it continues here if that Blender closes."

    def _claim_refused_lately(self, job_id: str) -> bool:
        return time.monotonic() - self._refused.get(job_id, -OWNER_CACHE_SECONDS) < OWNER_CACHE_SECONDS

    def jobs_owned_elsewhere(self, blend_file: str | None = None) -> list[JobRecord]:
        """Unfinished jobs of the file that another live Blender runs; ``take_over_abandoned`` watches them."""
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        held_here = set(self.store.claimed_ids())  # owned_elsewhere says None for these; asked once, not per job
        records = [record for record in self.views.values()
                   if record.job_id not in held_here and record.owner.get("blend_file", "") == blend_file
                   and self.owned_elsewhere(record)]
        self._watched.update(record.job_id for record in records)
        return records

    def watching_other_blenders(self) -> bool:
        """True while a job of the file runs in another Blender: keep calling ``take_over_abandoned``.

        Reads the owner file of each such job (cached for ``OWNER_CACHE_SECONDS``).
        """
        return bool(self.jobs_owned_elsewhere() or self._watched)

    def take_over_abandoned(self, credentials: Credentials) -> list[JobRecord]:
        """Resume the watched jobs whose owning Blender is gone (crashed, killed, quit).

        Cheap while every owner still runs (a few small file reads); call it every few
        seconds from the monitor while ``watching_other_blenders()``.
        """
        if not self._watched:
            return []
        self._owners.clear()  # decide on what the owner files say now
        watched, self._watched = self._watched, set()
        still_owned = {record.job_id for record in self.jobs_owned_elsewhere()}
        if not watched - still_owned:
            for job_id in still_owned:  # the panel follows the phases the owner saves
                self._follow_stored(job_id)
            return []
        return self.resume(credentials)

    def _follow_stored(self, job_id: str) -> None:
        """Re-read a job another Blender runs, only when its file changed (a stat instead of a JSON read)."""
        try:
            stat = self.store.path_for(job_id).stat()
        except OSError:
            return
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # saves replace the file: a new inode
        if self._stored_stamps.get(job_id) == stamp and job_id in self.views:
            return
        stored = self.store.load(job_id)
        if stored is not None:
            self.views[job_id] = stored
            self._stored_stamps[job_id] = stamp

    def adopt_saved_file(self, old_path: str, new_path: str) -> None:
        """A file saved for the first time (or saved as) takes its unfinished jobs along."""
        for record in self.views.values():
            if (record.owner.get("blend_file", "") != old_path or record.phase.finished
                    or self.owned_elsewhere(record)):  # another unsaved session's job stays with it
                continue
            record.owner["blend_file"] = new_path
            if self.is_running(record.job_id):
                self._owner_updates.setdefault(record.job_id, {})["blend_file"] = new_path
            else:
                self.store.save(record)

    def results_moved(self, moved: dict[str, str]) -> None:
        """Result files moved beside a .blend on its first save: the records follow them."""
        for record in self.views.values():
            new_path = moved.get(os.path.realpath(record.output_path)) if record.output_path else None
            if new_path and not self.is_running(record.job_id):
                record.output_path = new_path
                self.store.save(record)

    def jobs_for_file(self, blend_file: str | None = None) -> list[JobRecord]:
        blend_file = bpy.data.filepath if blend_file is None else blend_file
        records = [record for record in self.views.values() if record.owner.get("blend_file", "") == blend_file]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    def shutdown(self) -> None:
        """Stop worker threads and cuts without cancelling: their jobs resume next time."""
        for task in self._preparations.values():
            task.stop()
        self._preparations.clear()
        self._waiting.clear()  # still pending in their records: resumed next time
        self.worker.shutdown()
        self._drain_events()
        for job_id in self.store.claimed_ids():
            if not self.worker.is_running(job_id):  # a thread that outlived the timeout releases its own
                self.store.release(job_id)


def announce_batch_end(batch: str, summary: BatchSummary) -> None:
    """Tell the artist a batch ended: the terminal, and the Info log and status bar (an operator's report).

    The report reaches the status bar even when the batch ended while Blender was in the background.
    """
    lines = summary.lines()
    print("Talking Face: " + "\n  ".join(lines), flush=True)
    level = "WARNING" if summary.failed or summary.cancelled else "INFO"
    try:
        report_in_blender(f"Talking Face: {summary.text()}", level)
    except (AttributeError, RuntimeError) as error:  # unregistered mid-way: the terminal has it
        print(f"Talking Face: could not report the batch's end in Blender ({error}).", flush=True)


def _missing_with_its_sources_present(record: JobRecord) -> bool:
    """No strip of the job is in its scene, and the scene and source strips to place it above are."""
    owner = record.owner
    scene = bpy.data.scenes.get(owner.get("scene", ""))
    if scene is None or scene.sequence_editor is None or placement.find_imported(scene, record.job_id):
        return False
    strips = compat.all_strips(scene)
    return all(strips.get(name) is not None
               for name in (owner.get("source_strip", ""), *owner.get("source_strips", ())))


def report_in_blender(message: str, level: str) -> None:
    """A report from the monitor's timer (``batch``'s report operator): invoked in the first window, else run
    as it is (headless)."""
    window_manager = bpy.context.window_manager
    window = next(iter(window_manager.windows), None) if window_manager and not bpy.app.background else None
    if window is None:
        bpy.ops.sequencer.talking_face_batch_report(message=message, level=level)
        return
    with compat.periodic_threads_paused(), bpy.context.temp_override(window=window, screen=window.screen):
        bpy.ops.sequencer.talking_face_batch_report("INVOKE_DEFAULT", message=message, level=level)


def _service_of(record: JobRecord, credentials: Credentials) -> Credentials:
    """A job goes on where it was started: its uploads and task id exist on that service only."""
    started_on = record.owner.get("base_url", "")
    if not started_on or started_on == credentials.base_url:
        return credentials
    try:
        check_base_url(started_on)  # never send the key anywhere a base URL may not be
    except NewportError:
        return credentials
    return dataclasses.replace(credentials, base_url=started_on)


def _plan_of(record: JobRecord) -> PreparationPlan:
    """The record's preparation plan; records of 0.1.0 kept only the cut's command and output."""
    if "prepare" in record.owner:
        return PreparationPlan.from_owner(record.owner["prepare"])
    cut = record.owner.get("cut", {})
    return PreparationPlan(cut_command=tuple(cut.get("command", ())), video=cut.get("output", ""))


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


def _heartbeat_paused() -> contextlib.AbstractContextManager[None]:
    """The store's heartbeat wakes every few seconds: asleep around overridden operator calls (``compat``)."""
    return _controller.store.heartbeat_paused() if _controller is not None else contextlib.nullcontext()


compat.pause_around_overridden_operators("job store heartbeat", _heartbeat_paused)


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
