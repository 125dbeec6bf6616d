"""The job runner, store and worker against the sandbox: phases, resume, cancel, never paying twice."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import queue
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import API_KEY, FAST_RETRY, write_bytes

from newport_api import (
    CancelToken,
    JobRecord,
    JobRunner,
    JobStore,
    JobWorker,
    NewportClient,
    Phase,
    RunnerSettings,
    StopReason,
    errors,
)
from newport_api.http import Timeouts
from newport_api.sandbox import Sandbox

FAST = RunnerSettings(poll_interval=0.05, max_poll_interval=0.2, progress_interval=0.0)


def make_client(sandbox, cancel: CancelToken | None = None) -> NewportClient:
    return NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(5, 5), cancel=cancel)


def make_record(video: Path, audio: Path, tmp_path: Path, **fields) -> JobRecord:
    return JobRecord(video=str(video), audio=str(audio), output_path=str(tmp_path / "result.mp4"), **fields)


def run(sandbox, record: JobRecord, store: JobStore | None = None, events: list | None = None) -> JobRecord:
    with make_client(sandbox) as client:
        return JobRunner(client, record, save=store.save if store else None,
                         emit=(events.append if events is not None else None), settings=FAST).run()


def test_a_job_runs_through_every_phase_to_a_complete_file(sandbox, video_file, audio_file, tmp_path):
    events = []
    store = JobStore(tmp_path / "jobs")
    record = run(sandbox, make_record(video_file, audio_file, tmp_path), store, events)
    assert record.phase == Phase.DOWNLOADED, record.error
    assert Path(record.output_path).read_bytes() == video_file.read_bytes()
    phases = [e.phase for e in events]
    for phase in ("uploading", "submitting", "queued", "processing", "downloading", "downloaded"):
        assert phase in phases
    assert events[-1].stopped
    assert sandbox.count("submit") == 1
    assert store.load(record.job_id).phase == Phase.DOWNLOADED


def test_the_store_never_holds_the_key_and_survives_a_reload(sandbox, video_file, audio_file, tmp_path):
    store = JobStore(tmp_path / "jobs")
    record = run(sandbox, make_record(video_file, audio_file, tmp_path, label="take 3"), store)
    for path in (tmp_path / "jobs").iterdir():
        assert API_KEY not in path.read_text()
    [loaded] = store.load_all()
    assert loaded == record
    assert json.loads((tmp_path / "jobs" / f"{record.job_id}.json").read_text())["label"] == "take 3"


def test_a_host_that_drains_only_snapshots_still_shows_the_runners_progress_at_every_event(
        sandbox, video_file, audio_file, tmp_path):
    """The worker queues snapshots and keeps only each job's latest progress event (as the Blender
    controller reads it): at every event, the host's copy and ``progress_of`` say what the runner's
    own record says, whether the host drained the queue just now or is a snapshot behind."""
    record = make_record(video_file, audio_file, tmp_path)
    worker = JobWorker()
    host: dict[str, JobRecord] = {}
    seen: list[tuple[str, bool]] = []  # (phase, had a snapshot) of every event
    out_of_step: list[str] = []

    def receive(event) -> None:
        worker.publish(event)
        seen.append((event.phase, event.record is not None))
        with contextlib.suppress(queue.Empty):
            while True:
                latest = JobRecord.from_dict(worker.events.get_nowait().record)
                if "view" in host and host["view"].phase != latest.phase:
                    host["behind"] = host["view"]  # what a host a phase behind still holds
                host["view"] = latest
        view, truth = host["view"], runner.record  # the runner's record at the moment it reports
        if event.record is not None and (view.phase, view.updated_at) != (truth.phase, truth.updated_at):
            out_of_step.append(f"{event}: view {view.phase} at {view.updated_at}")
        if (view.phase, *worker.progress_of(view)) != (truth.phase, truth.progress, truth.message):
            out_of_step.append(f"{event}: shown {view.phase} {worker.progress_of(view)}")
        behind = host.get("behind")
        if behind is not None and worker.progress_of(behind) != (behind.progress, behind.message):
            out_of_step.append(f"{event}: a view of {behind.phase} shows progress of {event.phase}")

    with make_client(sandbox) as client:
        runner = JobRunner(client, record, emit=receive, settings=FAST)
        runner.run()
    assert record.phase == Phase.DOWNLOADED, record.error
    assert out_of_step == []
    assert host["view"] == record  # the last event (stopped) is a full snapshot
    assert worker.progress == {}, "the last snapshot leaves no progress behind"
    progress_phases = {phase for phase, snapshot in seen if not snapshot}
    assert {"uploading", "downloading"} <= progress_phases, seen
    assert all(snapshot for (before, _), (phase, snapshot) in itertools.pairwise(seen) if phase != before), \
        "every phase change carries a snapshot"
    assert seen[0][1] and seen[-1][1]


def test_progress_does_not_queue_however_often_jobs_report(sandbox, video_file, audio_file, tmp_path):
    """A host that looks rarely (or never: the batch CLI) finds one progress event per job, not a backlog."""
    worker = JobWorker(lambda token: make_client(sandbox, token), JobStore(tmp_path / "jobs"), settings=FAST)
    sandbox.inject("storage", "slow", bytes_per_second=2 * 1024 * 1024)
    video = write_bytes(tmp_path / "video.mp4", 4 * 1024 * 1024)
    records = [JobRecord(video=str(video), audio=str(audio_file), output_path=str(tmp_path / f"result {n}.mp4"))
               for n in range(3)]
    stamps = [worker.progress_stamp]
    for record in records:
        worker.start(record)
    assert all(worker.join(record.job_id, timeout=60) for record in records)
    stamps.append(worker.progress_stamp)
    snapshots = []
    with contextlib.suppress(queue.Empty):
        while True:
            snapshots.append(worker.events.get_nowait())
    assert all(event.record is not None for event in snapshots), "only snapshots queue"
    assert stamps[1] - stamps[0] > 3 * len(records), "the jobs reported progress many times while uploading"
    assert worker.progress == {}, "each job's last snapshot took its progress away"
    assert {event.job_id for event in snapshots if event.stopped} == {record.job_id for record in records}


def test_a_job_resumed_after_a_crash_while_processing_polls_instead_of_resubmitting(
        sandbox, video_file, audio_file, tmp_path):
    store = JobStore(tmp_path / "jobs")
    record = make_record(video_file, audio_file, tmp_path)
    with make_client(sandbox) as client:
        # Run until the task is submitted, then "crash" (the thread simply stops here).
        runner = JobRunner(client, record, save=store.save, settings=FAST)
        runner._start()
        runner._upload_inputs()
        runner._submit()
    assert store.load(record.job_id).phase == Phase.QUEUED
    resumed = run(sandbox, store.load(record.job_id), store)
    assert resumed.phase == Phase.DOWNLOADED
    assert sandbox.count("submit") == 1
    assert sandbox.count("storage") == 2  # video and audio, once each


def test_a_crash_during_submit_never_submits_again_by_itself(sandbox, video_file, audio_file, tmp_path):
    record = make_record(video_file, audio_file, tmp_path, phase=Phase.SUBMITTING,
                         submit_started_at=time.time())
    record.uploads = {"video": {"url": "http://127.0.0.1:9/x"}, "audio": {"url": "http://127.0.0.1:9/y"}}
    finished = run(sandbox, record)
    assert finished.phase == Phase.FAILED
    assert finished.error_kind == "submit_uncertain"
    assert "not sent again" in finished.error
    assert sandbox.count("submit") == 0


def test_retry_of_an_uncertain_submit_is_the_artists_choice(sandbox, video_file, audio_file, tmp_path):
    sandbox.inject("submit", "reset")
    record = run(sandbox, make_record(video_file, audio_file, tmp_path))
    assert record.phase == Phase.FAILED and record.error_kind == "submit_uncertain"
    record.prepare_retry()
    assert record.phase == Phase.UPLOADING
    record = run(sandbox, record)
    assert record.phase == Phase.DOWNLOADED
    assert sandbox.count("submit") == 2
    assert sandbox.count("storage") == 2, "still-valid uploads are reused"


def test_a_failed_task_fails_the_job_with_the_reason(sandbox, video_file, audio_file, tmp_path):
    sandbox.inject("poll", "task_failed", reason="No face was detected")
    record = run(sandbox, make_record(video_file, audio_file, tmp_path))
    assert record.phase == Phase.FAILED
    assert "No face was detected" in record.error
    assert not Path(record.output_path).exists()


def test_success_without_a_video_is_a_failure_with_a_sentence(sandbox, video_file, audio_file, tmp_path):
    sandbox.inject("poll", "no_video", times=None)
    record = run(sandbox, make_record(video_file, audio_file, tmp_path))
    assert record.phase == Phase.FAILED
    assert record.error_kind == "no_result"
    assert "Retry" in record.error


def test_urls_are_submitted_without_uploading(sandbox, video_file, tmp_path):
    with make_client(sandbox) as client:
        url = client.upload_file(video_file).url
    record = run(sandbox, JobRecord(video=url, audio=url, output_path=str(tmp_path / "r.mp4")))
    assert record.phase == Phase.DOWNLOADED
    assert sandbox.count("storage") == 1


@pytest.mark.parametrize("phase_to_cancel", ["uploading", "processing", "downloading"])
def test_cancel_in_each_phase_stops_within_a_second_and_leaves_no_partial_file(
        sandbox, tmp_path, audio_file, phase_to_cancel):
    video = write_bytes(tmp_path / "video.mp4", 24 * 1024 * 1024)
    if phase_to_cancel == "uploading":
        sandbox.inject("storage", "slow", bytes_per_second=2 * 1024 * 1024)
    if phase_to_cancel == "downloading":
        sandbox.inject("download", "slow", bytes_per_second=2 * 1024 * 1024)
    sandbox_slow_processing = phase_to_cancel == "processing"
    if sandbox_slow_processing:
        sandbox.inject("poll", "status0", times=None)
    worker = JobWorker(lambda token: make_client(sandbox, token), JobStore(tmp_path / "jobs"), settings=FAST)
    record = make_record(video, audio_file, tmp_path)
    worker.start(record)
    seen = wait_for_event(worker, lambda e: e.phase == phase_to_cancel or
                          (phase_to_cancel == "processing" and e.phase == "queued"))
    assert seen
    time.sleep(0.2)
    cancelled_at = time.monotonic()
    assert worker.cancel(record.job_id)
    assert worker.join(record.job_id, timeout=1.5)
    assert time.monotonic() - cancelled_at < 1.5
    stored = JobStore(tmp_path / "jobs").load(record.job_id)
    assert stored.phase == Phase.CANCELLED
    assert not Path(record.output_path).exists()
    assert not Path(record.output_path + ".part").exists()
    assert sandbox.count("submit") <= 1


def test_shutdown_keeps_the_job_resumable(sandbox, video_file, audio_file, tmp_path):
    sandbox.inject("poll", "status0", times=None)
    store = JobStore(tmp_path / "jobs")
    worker = JobWorker(lambda token: make_client(sandbox, token), store, settings=FAST)
    record = make_record(video_file, audio_file, tmp_path)
    worker.start(record)
    assert wait_for_event(worker, lambda e: e.phase == "queued")
    assert worker.shutdown(timeout=2.0) == []
    stored = store.load(record.job_id)
    assert stored.phase == Phase.QUEUED and stored.task_id
    sandbox.clear_faults()
    assert run(sandbox, stored, store).phase == Phase.DOWNLOADED
    assert sandbox.count("submit") == 1


def test_several_jobs_run_at_once(sandbox, video_file, audio_file, tmp_path):
    worker = JobWorker(lambda token: make_client(sandbox, token), JobStore(tmp_path / "jobs"), settings=FAST)
    records = [JobRecord(video=str(video_file), audio=str(audio_file),
                         output_path=str(tmp_path / f"r{i}.mp4")) for i in range(3)]
    for record in records:
        worker.start(record)
    for record in records:
        assert worker.join(record.job_id, timeout=20)
    stored = JobStore(tmp_path / "jobs").load_all()
    assert [r.phase for r in stored] == [Phase.DOWNLOADED] * 3
    assert sandbox.count("submit") == 3


def test_cancel_token_stop_reasons():
    token = CancelToken()
    token.cancel(StopReason.SHUTDOWN)
    token.cancel(StopReason.CANCEL)
    assert token.reason == StopReason.SHUTDOWN


def wait_for_event(worker: JobWorker, predicate, timeout: float = 10.0) -> bool:
    """Until a snapshot or a job's latest progress event matches ``predicate``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(event) for event in list(worker.progress.values())):
            return True
        with contextlib.suppress(queue.Empty):
            if predicate(worker.events.get(timeout=0.05)):
                return True
    return False


def test_store_writes_are_atomic_under_concurrent_saves(tmp_path):
    store = JobStore(tmp_path / "jobs")
    record = JobRecord(video="v", audio="a", output_path="o")

    def hammer(n: int) -> None:
        for i in range(50):
            record_copy = JobRecord.from_dict(record.to_dict())
            record_copy.message = f"{n}-{i}"
            store.save(record_copy)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.load(record.job_id).message.endswith("-49")
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [f"{record.job_id}.json"]


def test_a_balance_too_low_fails_before_anything_is_uploaded(tmp_path, video_file, audio_file):
    from newport_api.sandbox import Sandbox

    with Sandbox(credits=3.0) as poor:
        record = run(poor, make_record(video_file, audio_file, tmp_path, estimated_credits=12.0))
        assert record.phase == Phase.FAILED and record.error_kind == "quota"
        assert "needs about 12 credits but the account has 3" in record.error
        assert poor.count("storage") == 0 and poor.count("submit") == 0


def test_an_unknown_balance_never_blocks_the_job(sandbox, tmp_path, video_file, audio_file):
    sandbox.inject("credits", "html", status=404)
    record = run(sandbox, make_record(video_file, audio_file, tmp_path, estimated_credits=12.0))
    assert record.phase == Phase.DOWNLOADED


# --- cancel and shutdown while a request is blocked (issue 5, part 3) -------------------------------------

PATIENT = Timeouts(connect=5, read=10)  # without an abort, a blocked request would wait this long
KEPT_PHASE = {"policy": Phase.UPLOADING, "storage": Phase.UPLOADING, "finish": Phase.UPLOADING,
              "submit": Phase.SUBMITTING, "poll": Phase.QUEUED, "download": Phase.DOWNLOADING}


def block_in(sandbox, phase: str) -> None:
    if phase in ("storage", "download"):
        sandbox.inject(phase, "slow", bytes_per_second=64 * 1024)  # 4 MiB: a minute
    else:
        sandbox.inject(phase, "stall", seconds=30)


def wait_until_blocked(sandbox, worker: JobWorker, phase: str) -> None:
    """Until the job's request of ``phase`` is on the wire and the server is holding it."""
    if phase == "storage":  # a first chunk went out, the next one waits for the slow reader
        assert wait_for_event(worker, lambda e: e.phase == "uploading" and (e.progress or 0) > 0)
    elif phase == "download":  # the first 1 MiB chunk takes 16 s to arrive at this pace
        assert wait_for_event(worker, lambda e: e.phase == "downloading")
    else:
        deadline = time.monotonic() + 10
        while sandbox.count(phase) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sandbox.count(phase) == 1
    time.sleep(0.3)  # well inside the blocked call


def start_blocked_job(sandbox, tmp_path: Path, audio_file: Path, phase: str):
    """A job in a worker, blocked on a silent server in ``phase`` (timeouts far longer than the test)."""
    video = write_bytes(tmp_path / "video.mp4", 4 * 1024 * 1024)
    store = JobStore(tmp_path / "jobs")
    block_in(sandbox, phase)
    worker = JobWorker(lambda token: NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY,
                                                   timeouts=PATIENT, cancel=token), store, settings=FAST)
    record = make_record(video, audio_file, tmp_path)
    worker.start(record)
    wait_until_blocked(sandbox, worker, phase)
    return worker, store, record


@pytest.mark.parametrize("phase", ["policy", "storage", "finish", "submit", "poll", "download"])
def test_cancel_breaks_a_blocked_request_within_a_second(sandbox, tmp_path, audio_file, phase):
    worker, store, record = start_blocked_job(sandbox, tmp_path, audio_file, phase)
    cancelled_at = time.monotonic()
    assert worker.cancel(record.job_id)
    assert worker.join(record.job_id, timeout=1.0), f"still blocked in {phase}"
    assert time.monotonic() - cancelled_at < 1.0
    stored = store.load(record.job_id)
    assert stored.phase == Phase.CANCELLED and not stored.error
    assert not Path(record.output_path).exists()
    assert not Path(record.output_path + ".part").exists()
    assert sandbox.count("submit") == (1 if phase in ("submit", "poll", "download") else 0)
    if phase == "submit":
        assert "may already be running" in stored.message


@pytest.mark.parametrize("phase", ["policy", "storage", "finish", "submit", "poll", "download"])
def test_shutdown_breaks_a_blocked_request_and_keeps_the_phase(sandbox, tmp_path, audio_file, phase):
    worker, store, record = start_blocked_job(sandbox, tmp_path, audio_file, phase)
    stopping_at = time.monotonic()
    assert worker.shutdown(timeout=1.0) == []
    assert time.monotonic() - stopping_at < 1.0
    stored = store.load(record.job_id)
    assert stored.phase == KEPT_PHASE[phase]
    assert not Path(record.output_path).exists()
    # The next session resumes from the kept phase, and never submits twice by itself.
    sandbox.clear_faults()
    resumed = run(sandbox, stored, store)
    if phase == "submit":
        assert resumed.phase == Phase.FAILED and resumed.error_kind == "submit_uncertain"
        assert sandbox.count("submit") == 1
    else:
        assert resumed.phase == Phase.DOWNLOADED
        assert Path(record.output_path).read_bytes() == Path(record.video).read_bytes()
        assert sandbox.count("submit") == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="a connect stuck in SYN_SENT is made with a full listen backlog, which only "
                           "Linux drops silently")
def test_cancel_breaks_a_blocked_connect():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped, connects hang
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.1)
    token = CancelToken()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    outcome: list[BaseException | None] = []

    def call() -> None:
        with NewportClient(API_KEY, base_url, retry=FAST_RETRY, timeouts=Timeouts(connect=10, read=10),
                           cancel=token) as client:
            try:
                client.remaining_credits()
                outcome.append(None)
            except Exception as error:  # noqa: BLE001
                outcome.append(error)

    caller = threading.Thread(target=call, daemon=True)
    try:
        caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        token.cancel()
        caller.join(2)
        assert not caller.is_alive() and time.monotonic() - started < 1.0
        assert isinstance(outcome[0], errors.CancelledError), outcome
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_cancel_token_runs_abort_callbacks_once():
    token = CancelToken()
    calls = []
    forget = token.on_cancel(lambda: calls.append("a"))
    token.on_cancel(lambda: calls.append("b"))
    token.on_cancel(lambda: 1 / 0)  # a failing abort does not stop the others or the cancel
    forget()
    token.cancel()
    token.cancel()
    assert calls == ["b"] and token.cancelled
    token.on_cancel(lambda: calls.append("late"))  # already cancelled: runs at once
    assert calls == ["b", "late"]


# --- a task that takes too long (issue 5, part 4) -----------------------------------------------------------

def test_a_task_processing_too_long_is_reported_and_retry_keeps_waiting_for_the_same_task(
        tmp_path, video_file, audio_file):
    impatient = dataclasses.replace(FAST, processing_limit=0.6)
    with Sandbox(processing_seconds=2.5) as slow:
        record = make_record(video_file, audio_file, tmp_path)
        with make_client(slow) as client:
            JobRunner(client, record, settings=impatient).run()
        assert record.phase == Phase.FAILED and record.error_kind == "still_processing"
        assert record.error == ("Newport AI has been working on this clip for over a second — use Retry to "
                                "keep waiting for the same job (it will not be paid again).")
        task_id = record.task_id
        assert task_id and not Path(record.output_path).exists()

        record.prepare_retry()  # the artist keeps waiting: the same task, polled again
        assert record.phase == Phase.PROCESSING and record.task_id == task_id
        started = time.monotonic()
        with make_client(slow) as client:
            JobRunner(client, record, settings=impatient).run()
        assert record.phase == Phase.FAILED and record.error_kind == "still_processing"
        assert time.monotonic() - started >= 0.55, "Retry must restart the clock, not fail at once"

        record.prepare_retry()
        with make_client(slow) as client:
            JobRunner(client, record, settings=dataclasses.replace(FAST, processing_limit=30)).run()
        assert record.phase == Phase.DOWNLOADED
        assert Path(record.output_path).read_bytes() == video_file.read_bytes()
        assert record.task_id == task_id
        assert slow.count("submit") == 1
        assert slow.count("storage") == 2


def test_failing_polls_are_not_mistaken_for_a_slow_task(sandbox, tmp_path, video_file, audio_file):
    sandbox.inject("poll", "http_503", times=None)
    settings = dataclasses.replace(FAST, processing_limit=0.01, poll_error_budget=0.3)
    with make_client(sandbox) as client:
        record = JobRunner(client, make_record(video_file, audio_file, tmp_path), settings=settings).run()
    assert record.phase == Phase.FAILED and record.error_kind == "service_unavailable"
    record.prepare_retry()
    assert record.phase == Phase.PROCESSING and record.task_id
    sandbox.clear_faults()
    assert run(sandbox, record).phase == Phase.DOWNLOADED
    assert sandbox.count("submit") == 1
