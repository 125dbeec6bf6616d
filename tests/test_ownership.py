"""One owner per job across processes: real child processes contend for the same job store.

Each child (``ownership_child.py``) is a separate Python process with its own ``JobStore``
on the shared folder, as two Blenders on one .blend are.  What is checked from the outside:
which process says it claimed or started, the sandbox's request log (one submit; after the
owner is SIGKILLed the other polls the saved task and downloads once) and the files.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import env_with_key

from newport_api import JobRecord, JobStore, JobWorker, NewportClient, Phase, RunnerSettings, ownership
from newport_api.ownership import OwnerInfo
from newport_api.sandbox import Sandbox

CHILD = Path(__file__).with_name("ownership_child.py")
WAIT_SECONDS = 30.0
FAST = RunnerSettings(poll_interval=0.05, max_poll_interval=0.2, progress_interval=0.0)
OS_LOCKING = ownership.LOCKING


class Child:
    """A child process whose ``TF <kind> <json>`` lines are read as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-u", str(CHILD), *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env_with_key())
        self.pid = self.process.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, kind: str, timeout: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"child {self.pid}: no 'TF {kind}' within {timeout:.0f}s")
            if line is None:
                self._lines.put(None)
                pytest.fail(f"child {self.pid} exited ({self.process.wait()}) before 'TF {kind}':\n"
                            f"{self.process.stderr.read()}")
            if line.startswith(f"TF {kind} "):
                return json.loads(line[len(kind) + 4:])

    def first_line(self) -> tuple[str, Any]:
        """The kind and value of the first line printed."""
        line = self._lines.get(timeout=WAIT_SECONDS)
        assert line and line.startswith("TF "), line
        kind, _, text = line[3:].partition(" ")
        return kind, json.loads(text)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> int:
        """Close stdin (a holder releases and exits) and wait for the exit code."""
        self.process.stdin.close()
        return self.process.wait(WAIT_SECONDS)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def make(*args: str) -> Child:
        child = Child(*args)
        children.append(child)
        return child

    yield make
    for child in children:
        child.kill()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def fake_owner(pid: int, start_token: str, heartbeat: float | None = None) -> OwnerInfo:
    now = time.time()
    return OwnerInfo(pid=pid, host=ownership.HOST, start_token=start_token, claimed_at=now - 60,
                     heartbeat=now if heartbeat is None else heartbeat)


# -- a live owner keeps its job; a dead one loses it ---------------------------------------------------

@pytest.mark.parametrize("locking", [OS_LOCKING, "file"])
def test_a_live_owner_is_never_taken_over(spawn, store_dir, locking):
    holder = spawn("hold", str(store_dir), "job1", "--locking", locking)
    claim = holder.expect("claimed")
    assert claim["claimed"] is True and claim["owner"] == {"pid": holder.pid, "alive": True}
    mine = JobStore(store_dir, locking=locking)
    assert mine.claim("job1") is False
    assert mine.holds("job1") is False
    owner = mine.owner_of("job1")
    assert (owner.pid, owner.alive, owner.host) == (holder.pid, True, ownership.HOST)
    other = spawn("hold", str(store_dir), "job1", "--locking", locking)
    refused = other.expect("claimed")
    assert refused == {"claimed": False, "pid": other.pid, "owner": {"pid": holder.pid, "alive": True}}
    assert other.process.wait(WAIT_SECONDS) == 0
    assert mine.claim("job1") is False, "still owned: the holder is alive"
    assert mine.claim("job2") is True, "a claim is per job"


@pytest.mark.parametrize("locking", [OS_LOCKING, "file"])
def test_the_owner_killed_the_other_takes_over(spawn, store_dir, locking):
    holder = spawn("hold", str(store_dir), "job1", "--locking", locking)
    assert holder.expect("claimed")["claimed"] is True
    mine = JobStore(store_dir, locking=locking)
    assert mine.claim("job1") is False
    holder.kill()
    gone = mine.owner_of("job1")
    assert gone is not None and gone.pid == holder.pid and gone.alive is False
    assert mine.claim("job1") is True
    owner = mine.owner_of("job1")
    assert (owner.pid, owner.alive) == (os.getpid(), True)
    late = spawn("hold", str(store_dir), "job1", "--locking", locking)
    assert late.expect("claimed")["claimed"] is False, "the new owner is not taken over in turn"


@pytest.mark.parametrize("locking", [OS_LOCKING, "file"])
def test_a_released_job_is_free_for_the_next_process(spawn, store_dir, locking):
    holder = spawn("hold", str(store_dir), "job1", "--locking", locking)
    assert holder.expect("claimed")["claimed"] is True
    assert holder.close() == 0  # releases, then exits normally
    mine = JobStore(store_dir, locking=locking)
    assert mine.owner_of("job1") is None, "a release leaves no owner behind"
    assert mine.claim("job1") is True
    mine.release("job1")
    assert mine.owner_of("job1") is None
    assert mine.claim("job1") is True


# -- a recycled pid is not the owner -------------------------------------------------------------------

@pytest.mark.skipif(not ownership.process_start_token(), reason="no start token on this platform (Linux has one)")
def test_a_recycled_pid_is_not_mistaken_for_the_owner(spawn, store_dir):
    """An owner file naming a live process that started after the claim (another start token) is stale."""
    bystander = spawn("token")
    token = bystander.expect("token")
    assert token["pid"] == bystander.pid and token["token"]
    store = JobStore(store_dir, locking="file")
    store_dir.mkdir()
    path = store.owner_path_for("job1")
    ownership.write_owner(path, fake_owner(bystander.pid, token["token"]))
    assert store.owner_of("job1").alive is True, "the same process: still the owner"
    assert store.claim("job1") is False
    recycled = "0" * 36 + ":1"  # what the pid's first process had: a different boot or start time
    ownership.write_owner(path, fake_owner(bystander.pid, recycled))
    assert store.owner_of("job1").alive is False, "same pid, another process: the owner is gone"
    assert store.claim("job1") is True, "taken over although the pid is alive"
    assert store.owner_of("job1").pid == os.getpid()


def test_without_a_start_token_a_stale_heartbeat_decides(spawn, store_dir):
    """Where no start token can be read (macOS, Windows), a live pid that stopped beating is gone."""
    bystander = spawn("token")
    bystander.expect("token")
    store = JobStore(store_dir, locking="file")
    store_dir.mkdir()
    path = store.owner_path_for("job1")
    ownership.write_owner(path, fake_owner(bystander.pid, ""))
    assert store.owner_of("job1").alive is True
    assert store.claim("job1") is False
    ownership.write_owner(path, fake_owner(bystander.pid, "", heartbeat=time.time() - 2 * ownership.STALE_SECONDS))
    assert store.owner_of("job1").alive is False
    assert store.claim("job1") is True


def test_a_dead_pid_is_gone_whatever_its_heartbeat(store_dir):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    store = JobStore(store_dir, locking="file")
    store_dir.mkdir()
    ownership.write_owner(store.owner_path_for("job1"), fake_owner(dead_pid, "x"))
    assert store.owner_of("job1").alive is False
    assert store.claim("job1") is True


def test_the_heartbeat_keeps_the_owner_file_fresh(store_dir, monkeypatch):
    monkeypatch.setattr(ownership, "HEARTBEAT_SECONDS", 0.05)
    store = JobStore(store_dir)
    before = set(threading.enumerate())
    assert store.claim("job1")
    [beating] = [thread for thread in set(threading.enumerate()) - before if thread.name == "talking-face-heartbeat"]
    first = store.owner_of("job1")
    wait_for(lambda: store.owner_of("job1").heartbeat > first.heartbeat, "a heartbeat")
    assert store.owner_of("job1").claimed_at == first.claimed_at
    store.release("job1")
    assert not beating.is_alive(), "the heartbeat thread stops (joined) once nothing is claimed"


def test_while_the_heartbeat_is_paused_no_heartbeat_thread_runs_and_the_claim_holds(store_dir, monkeypatch):
    monkeypatch.setattr(ownership, "HEARTBEAT_SECONDS", 0.05)
    store = JobStore(store_dir)
    before = set(threading.enumerate())
    assert store.claim("job1")
    [beating] = [thread for thread in set(threading.enumerate()) - before if thread.name == "talking-face-heartbeat"]
    with store.heartbeat_paused():
        assert not beating.is_alive()
        assert not [thread for thread in set(threading.enumerate()) - before if thread.name == beating.name]
        paused = store.owner_of("job1")
        time.sleep(0.3)  # six beats' time
        assert store.owner_of("job1").heartbeat == paused.heartbeat
        assert JobStore(store_dir).claim("job1") is False, "another store is still refused"
    wait_for(lambda: store.owner_of("job1").heartbeat > paused.heartbeat, "the heartbeat again")
    store.release("job1")


def answers_within(seconds: float, question: Callable[[], Any]) -> Any:
    """``question()``'s answer, asked on another thread; fails when it takes longer than ``seconds``."""
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(question()), daemon=True)
    asking.start()
    asking.join(seconds)
    assert answers, f"still waiting after {seconds} s: the host's thread would freeze"
    return answers[0]


def test_a_save_waiting_on_a_slow_disk_never_holds_up_the_claims(store_dir, monkeypatch, tmp_path):
    """The host asks about claims on every tick (Blender's main thread): a job thread's save whose
    sync to disk takes long must not make it wait."""
    store = JobStore(store_dir)
    assert store.claim("job1")
    syncing, disk_done = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        syncing.set()
        disk_done.wait(10)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    record = JobRecord(video="v.mp4", audio="a.wav", output_path=str(tmp_path / "out.mp4"))
    saving = threading.Thread(target=store.save, args=(record,), daemon=True)
    saving.start()
    assert syncing.wait(5)
    try:
        assert answers_within(1.0, lambda: store.holds("job1")) is True
        assert answers_within(1.0, store.claimed_ids) == ["job1"]
        assert answers_within(1.0, lambda: store.claim("job2")) is True
        answers_within(1.0, lambda: store.release("job2"))
    finally:
        disk_done.set()
        saving.join(5)
    assert store.load(record.job_id) == record
    store.release("job1")


def test_a_heartbeat_over_many_claims_lets_the_host_in_between_files(store_dir, monkeypatch):
    """Each owner file is written under the lock on its own: a beat over 40 claims on a slow disk
    (20 ms a file, 0.8 s in all) keeps the host waiting for one file at most."""
    monkeypatch.setattr(ownership, "HEARTBEAT_SECONDS", 0.05)
    store = JobStore(store_dir)
    job_ids = [f"job{index}" for index in range(40)]
    assert all(store.claim(job_id) for job_id in job_ids)
    real_write, writes = ownership.write_owner, []

    def slow_write(path: Path, owner: OwnerInfo) -> None:
        writes.append(path)
        time.sleep(0.02)
        real_write(path, owner)

    monkeypatch.setattr(ownership, "write_owner", slow_write)
    wait_for(lambda: len(writes) >= 5, "a beat under way")
    waits = []
    while len(writes) < 35:
        started = time.monotonic()
        answers_within(1.0, lambda: store.holds("job0"))
        waits.append(time.monotonic() - started)
    assert max(waits) < 0.2, f"the host waited {max(waits):.2f} s for the heartbeat"
    for job_id in job_ids:
        store.release(job_id)


# -- a job runs in one process only --------------------------------------------------------------------

def make_job(store: JobStore, video: Path, audio: Path, tmp_path: Path, name: str = "result.mp4") -> JobRecord:
    record = JobRecord(video=str(video), audio=str(audio), output_path=str(tmp_path / name))
    store.save(record)
    return record


def test_two_processes_run_a_job_once_and_the_survivor_finishes_it(spawn, store_dir, tmp_path, video_file,
                                                                   audio_file):
    """Both start the same stored job at once: one runs it, the other is refused until the owner is killed,
    then polls the saved task (no second submit) and downloads the result once."""
    store = JobStore(store_dir)
    record = make_job(store, video_file, audio_file, tmp_path)
    with Sandbox(processing_seconds=0.2, queued_seconds=0.1) as sandbox:
        sandbox.inject("poll", "status0", None)  # the task stays queued until the fault is cleared
        children = [spawn("run", str(store_dir), record.job_id, sandbox.base_url) for _ in range(2)]
        # Whichever loses prints "refused" naming the winner; the winner prints "started".
        first_words = [child.first_line() for child in children]
        kinds = sorted(kind for kind, _ in first_words)
        assert kinds == ["refused", "started"], f"exactly one process runs the job: {first_words}"
        loser, winner = children if first_words[0][0] == "refused" else children[::-1]
        said = first_words[children.index(loser)][1]
        assert said["owner"] == {"pid": winner.pid, "alive": True}
        wait_for(lambda: sandbox.count("poll") >= 3, "the owner polling the queued task")
        task_id = store.load(record.job_id).task_id
        assert task_id and sandbox.count("submit") == 1
        assert store.owner_of(record.job_id).pid == winner.pid
        winner.kill()
        sandbox.clear_faults()
        started = loser.expect("started")
        assert started == {"pid": loser.pid, "after_refusal": True}
        stopped = loser.expect("stopped")
        assert stopped["phase"] == "downloaded", stopped
        assert stopped["task_id"] == task_id, "the saved task was polled, not replaced"
        assert stopped["holds"] is True, "a downloaded job stays claimed until its result is placed"
        assert sandbox.count("submit") == 1
        assert sandbox.count("download") == 1, "the result was fetched (and written) by one process"
        polls = [entry.body for entry in sandbox.requests if entry.phase == "poll"]
        assert all(body == {"taskId": task_id} for body in polls)
        assert Path(record.output_path).read_bytes() == video_file.read_bytes()
        assert not record.part_path.exists()


# -- the worker's claim, in one process with two stores (two open files, like two processes) ----------

def test_a_worker_releases_its_claim_when_the_job_stops_but_not_before_placing(store_dir, tmp_path, video_file,
                                                                               audio_file):
    ours, theirs = JobStore(store_dir), JobStore(store_dir)
    with Sandbox(processing_seconds=0.2, queued_seconds=0.1) as sandbox:
        def client(cancel):
            return NewportClient("sk-test-0123456789abcdef", sandbox.base_url, cancel=cancel)

        worker = JobWorker(client, ours, settings=FAST)
        failing = make_job(ours, video_file, audio_file, tmp_path)
        sandbox.inject("poll", "task_failed", 1)
        assert worker.start(JobRecord.from_dict(failing.to_dict()))
        assert theirs.claim(failing.job_id) is False, "claimed while it runs"
        assert worker.join(failing.job_id, WAIT_SECONDS)
        assert ours.load(failing.job_id).phase == Phase.FAILED
        wait_for(lambda: not ours.holds(failing.job_id), "the stopped worker's release")
        assert theirs.claim(failing.job_id) is True
        theirs.release(failing.job_id)

        finishing = make_job(ours, video_file, audio_file, tmp_path, "second.mp4")
        assert theirs.claim(finishing.job_id)
        assert worker.start(JobRecord.from_dict(finishing.to_dict())) is False, "owned elsewhere: not run"
        theirs.release(finishing.job_id)
        assert worker.start(JobRecord.from_dict(finishing.to_dict())) is True
        assert worker.join(finishing.job_id, WAIT_SECONDS)
        assert ours.load(finishing.job_id).phase == Phase.DOWNLOADED
        assert ours.holds(finishing.job_id), "kept until the host places the result"
        assert theirs.claim(finishing.job_id) is False
        ours.release(finishing.job_id)
        assert theirs.claim(finishing.job_id) is True
    assert sandbox.count("submit") == 2
