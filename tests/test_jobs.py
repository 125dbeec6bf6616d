"""The job runner, store and worker against the sandbox: phases, resume, cancel, never paying twice."""

from __future__ import annotations

import contextlib
import json
import queue
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
)
from newport_api.http import Timeouts

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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
