"""The fault matrix (issue 5, part 1): every phase × every fault, each run as a whole job.

Each case starts a fresh sandbox, injects one fault either ``once`` (it heals:
the job must complete) or ``forever`` (it persists: the job must fail with
the right sentence), runs the job on a ``JobWorker`` thread exactly as the
add-on does, and then checks, from the outside:

* the outcome: DOWNLOADED with a byte-correct file, or FAILED with the
  expected kind and artist-facing message (one sentence, says what to do, no
  stack trace, no key);
* the submits: how many submit requests reached the sandbox, and that the
  service can have acted on at most one of them;
* the output: the result path exists only when complete and byte-correct; a
  ``.part`` may stay behind a failure (Retry resumes it) but never a finished-looking file;
* the worker stopped and said so;
* the key appears in no store file, error text, repr or detail, and in no request to storage or cdn;
* Retry works: after a failure, with the fault gone, ``prepare_retry`` and
  one more run end DOWNLOADED, re-polling instead of resubmitting where the task is still good.

``EXPECTED`` below is the one table of what each case must do.  The totals
are printed at the end of the run (``pytest_terminal_summary`` in conftest.py).

The cases are independent (a sandbox, a worker, a folder each), so a
session fixture runs the selected ones on a small thread pool and each
parametrized test then checks its own case's findings; a single case still
runs alone with ``-k``.

"Connection refused" for the API phases means the API origin itself is
down: requests for that phase's path go to a loopback port where nothing
listens (the sandbox's ``refused_origin``).  For storage and download the
sandbox's own ``refused`` fault hands out such an origin.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import API_KEY, assert_no_key_anywhere, write_bytes

from newport_api import (
    JobRecord,
    JobRunner,
    JobStore,
    JobWorker,
    NewportClient,
    Phase,
    RunnerSettings,
    errors,
)
from newport_api.client import (
    MSG_DOWNLOAD_BROKEN,
    MSG_DOWNLOAD_NOT_VIDEO,
    MSG_RESULT_EXPIRED,
    MSG_STORAGE_LOST,
    MSG_STORAGE_REFUSED,
    MSG_STORAGE_UNAVAILABLE,
)
from newport_api.http import (
    MSG_KEY_REJECTED,
    MSG_RATE_LIMITED,
    MSG_SUBMIT_UNCERTAIN,
    MSG_TOO_LARGE,
    MSG_UNAVAILABLE,
    MSG_UNREACHABLE,
    RetryPolicy,
    Timeouts,
)
from newport_api.sandbox import Sandbox

RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=2.0)
TIMEOUTS = Timeouts(connect=2.0, read=0.5)
SETTINGS = RunnerSettings(poll_interval=0.02, max_poll_interval=0.1, processing_limit=1.2,
                          poll_error_budget=0.3, progress_interval=0.0)
THREADS = min(8, 2 * (os.cpu_count() or 2))
STALL_SECONDS = 3.0  # far past the read timeout
API_PATHS = {"policy": "/api/file/v1/get_policy", "finish": "/api/file/v1/policy_upload_finish",
             "submit": "/api/async/talking_face", "poll": "/api/getAsyncResult"}
ANSWERING_FAULTS = {"http_403", "http_429", "http_500", "http_502", "http_503", "html", "empty_body", "reset",
                    "expired", "redirect"}  # the sandbox answers instead of processing the request
ACTION_WORDS = ("retry", "try again", "check", "wait", "adjust", "top up", "use ")
FAILED_TASK_REASON = "No face was detected in the source video"


@dataclass(frozen=True)
class Expect:
    """What one case must end with."""

    phase: Phase
    kind: str = ""  # the record's error_kind when FAILED
    message: str = ""  # the exact artist-facing sentence when FAILED ("" : checked by pattern only)
    pattern: str = ""  # a regex the message must match instead, where it carries the service's words
    submits: int = 1  # submit requests that reach the sandbox during the run
    retry_submits: int = 1  # submit requests in all after Retry (a failed job only)


def ok(submits: int = 1) -> Expect:
    return Expect(Phase.DOWNLOADED, submits=submits)


def failed(kind: str, message: str = "", *, submits: int = 1, retry_submits: int | None = None,
           pattern: str = "") -> Expect:
    return Expect(Phase.FAILED, kind, message, pattern, submits,
                  submits + 1 if retry_submits is None else retry_submits)


# Before the submit, a failure sends nothing that costs money: Retry submits once.
NET0 = failed("network", MSG_UNREACHABLE, submits=0, retry_submits=1)
BUSY0 = failed("rate_limited", MSG_RATE_LIMITED, submits=0, retry_submits=1)
DOWN0 = failed("service_unavailable", MSG_UNAVAILABLE, submits=0, retry_submits=1)
BIG0 = failed("service_unavailable", MSG_TOO_LARGE, submits=0, retry_submits=1)
KEY0 = failed("authentication", MSG_KEY_REJECTED, submits=0, retry_submits=1)
STORE_DOWN = failed("service_unavailable", MSG_STORAGE_UNAVAILABLE, submits=0, retry_submits=1)
STORE_LOST = failed("service_unavailable", MSG_STORAGE_LOST, submits=0, retry_submits=1)
STORE_REFUSED = failed("service_unavailable", MSG_STORAGE_REFUSED, submits=0, retry_submits=1)
# At the submit, a broken answer leaves the job's fate unknown: never resent; Retry is the artist's choice.
UNSURE = failed("submit_uncertain", MSG_SUBMIT_UNCERTAIN, submits=1, retry_submits=2)
# After the submit, a failure keeps the task: Retry polls or downloads it again and pays nothing more.
NET1 = failed("network", MSG_UNREACHABLE, retry_submits=1)
BUSY1 = failed("rate_limited", MSG_RATE_LIMITED, retry_submits=1)
DOWN1 = failed("service_unavailable", MSG_UNAVAILABLE, retry_submits=1)
BIG1 = failed("service_unavailable", MSG_TOO_LARGE, retry_submits=1)
KEY1 = failed("authentication", MSG_KEY_REJECTED, retry_submits=1)
WAITING = failed("still_processing", pattern=r"^Newport AI has been working on this clip for over .* use Retry "
                 r"to keep waiting for the same job \(it will not be paid again\)\.$", retry_submits=1)
BROKEN = failed("network", MSG_DOWNLOAD_BROKEN, retry_submits=1)
NOT_VIDEO = failed("service_unavailable", MSG_DOWNLOAD_NOT_VIDEO, retry_submits=1)
# The service says the result is gone or never was: Retry generates it again (a second, chosen, submit).
GONE = failed("result_expired", MSG_RESULT_EXPIRED, retry_submits=2)
TASK_FAILED = failed("task_failed", pattern=rf"^Newport AI could not make this clip \({FAILED_TASK_REASON}\) "
                     r"— adjust the inputs, then use Retry\.$", retry_submits=2)
NO_VIDEO = failed("no_result", "Newport AI finished the job but returned no video — use Retry to generate it "
                  "again.", retry_submits=2)

# (phase, fault): (once — the fault heals, forever — it persists).  None: that variant is not run
# (for faults that last by nature, or a download "stall_mid_body" forever, which only halves the
# remaining bytes at a read timeout each and so tests nothing new at 18 × the cost).
EXPECTED: dict[tuple[str, str], tuple[Expect | None, Expect | None]] = {
    ("policy", "refused"): (ok(), NET0),
    ("policy", "reset"): (ok(), NET0),
    ("policy", "reset_mid_body"): (ok(), NET0),
    ("policy", "stall"): (ok(), NET0),
    ("policy", "stall_mid_body"): (ok(), NET0),
    ("policy", "http_429"): (ok(), BUSY0),
    ("policy", "http_500"): (ok(), DOWN0),
    ("policy", "http_502"): (ok(), DOWN0),
    ("policy", "http_503"): (ok(), DOWN0),
    ("policy", "malformed_json"): (ok(), DOWN0),
    ("policy", "html"): (ok(), DOWN0),
    ("policy", "empty_body"): (ok(), DOWN0),
    ("policy", "huge_json"): (ok(), BIG0),
    ("policy", "http_403"): (KEY0, None),

    ("storage", "refused"): (ok(), NET0),
    ("storage", "reset"): (ok(), NET0),
    ("storage", "reset_mid_body"): (ok(), NET0),
    ("storage", "stall"): (ok(), NET0),
    ("storage", "stall_mid_body"): (ok(), NET0),
    ("storage", "http_429"): (ok(), BUSY0),
    ("storage", "http_500"): (ok(), STORE_DOWN),
    ("storage", "http_502"): (ok(), STORE_DOWN),
    ("storage", "http_503"): (ok(), STORE_DOWN),
    ("storage", "malformed_json"): (ok(), ok()),  # the policy's reqId stands in for the answer's
    ("storage", "html"): (ok(), STORE_DOWN),
    ("storage", "empty_body"): (ok(), STORE_LOST),  # storage said yes but kept nothing: upload once more
    ("storage", "huge_json"): (ok(), BIG0),
    ("storage", "http_403"): (ok(), STORE_REFUSED),  # a fresh policy may heal a refused signature

    ("finish", "refused"): (ok(), NET0),
    ("finish", "reset"): (ok(), NET0),
    ("finish", "reset_mid_body"): (ok(), NET0),
    ("finish", "stall"): (ok(), NET0),
    ("finish", "stall_mid_body"): (ok(), NET0),
    ("finish", "http_429"): (ok(), BUSY0),
    ("finish", "http_500"): (ok(), DOWN0),
    ("finish", "http_502"): (ok(), DOWN0),
    ("finish", "http_503"): (ok(), DOWN0),
    ("finish", "malformed_json"): (ok(), DOWN0),
    ("finish", "html"): (ok(), DOWN0),
    ("finish", "empty_body"): (ok(), DOWN0),
    ("finish", "huge_json"): (ok(), BIG0),
    ("finish", "http_403"): (KEY0, None),

    # A refused connection never carried the request, and a 429 is the service refusing it unread:
    # only those are sent again.  Everything else that breaks the answer leaves the fate unknown.
    ("submit", "refused"): (ok(), failed("network", MSG_UNREACHABLE, submits=0, retry_submits=1)),
    ("submit", "reset"): (UNSURE, None),
    ("submit", "reset_mid_body"): (UNSURE, None),
    ("submit", "stall"): (UNSURE, None),
    ("submit", "stall_mid_body"): (UNSURE, None),
    ("submit", "http_429"): (ok(submits=2), failed("rate_limited", MSG_RATE_LIMITED, submits=3, retry_submits=4)),
    ("submit", "http_500"): (UNSURE, None),
    ("submit", "http_502"): (UNSURE, None),
    ("submit", "http_503"): (UNSURE, None),
    ("submit", "malformed_json"): (UNSURE, None),
    ("submit", "html"): (UNSURE, None),
    ("submit", "empty_body"): (UNSURE, None),
    ("submit", "huge_json"): (UNSURE, None),
    ("submit", "http_403"): (failed("authentication", MSG_KEY_REJECTED, submits=1, retry_submits=2), None),

    ("poll", "refused"): (ok(), NET1),
    ("poll", "reset"): (ok(), NET1),
    ("poll", "reset_mid_body"): (ok(), NET1),
    ("poll", "stall"): (ok(), NET1),
    ("poll", "stall_mid_body"): (ok(), NET1),
    ("poll", "http_429"): (ok(), BUSY1),
    ("poll", "http_500"): (ok(), DOWN1),
    ("poll", "http_502"): (ok(), DOWN1),
    ("poll", "http_503"): (ok(), DOWN1),
    ("poll", "malformed_json"): (ok(), DOWN1),
    ("poll", "html"): (ok(), DOWN1),
    ("poll", "empty_body"): (ok(), WAITING),  # an empty answer while busy is normal: keep waiting
    ("poll", "huge_json"): (ok(), BIG1),
    ("poll", "http_403"): (KEY1, None),
    ("poll", "status0"): (ok(), WAITING),
    ("poll", "nested"): (ok(), ok()),
    ("poll", "task_failed"): (TASK_FAILED, None),  # lasting by nature
    ("poll", "no_video"): (NO_VIDEO, None),

    # A download that keeps failing asks the service once for a fresh result URL before giving up.
    ("download", "refused"): (ok(), NET1),
    ("download", "reset"): (ok(), NET1),
    ("download", "reset_mid_body"): (ok(), BROKEN),
    ("download", "stall"): (ok(), NET1),
    ("download", "stall_mid_body"): (ok(), None),
    ("download", "cut_short"): (ok(), BROKEN),
    ("download", "http_429"): (ok(), BUSY1),
    ("download", "http_500"): (ok(), DOWN1),
    ("download", "http_502"): (ok(), DOWN1),
    ("download", "http_503"): (ok(), DOWN1),
    ("download", "html"): (ok(), DOWN1),
    ("download", "html_200"): (ok(), NOT_VIDEO),  # an error page served as a success
    ("download", "empty_body"): (ok(), NOT_VIDEO),
    ("download", "expired"): (ok(), GONE),  # once: a fresh URL from the service works
    ("download", "http_403"): (ok(), GONE),
}


@dataclass(frozen=True)
class Case:
    phase: str
    fault: str
    variant: str  # "once" | "forever"
    expect: Expect

    @property
    def times(self) -> int | None:
        return 1 if self.variant == "once" else None

    @property
    def id(self) -> str:
        return f"{self.phase}-{self.fault}-{self.variant}"

    def options(self) -> dict[str, Any]:
        if self.fault in ("stall", "stall_mid_body"):
            return {"seconds": STALL_SECONDS}
        if self.fault == "http_429":
            return {"retry_after": 1 if self.variant == "once" else 0}
        if self.fault == "task_failed":
            return {"reason": FAILED_TASK_REASON}
        if self.fault == "huge_json":
            return {"bytes": 6 * 1024 * 1024}
        return {}


CASES = [Case(phase, fault, variant, expect)
         for (phase, fault), variants in EXPECTED.items()
         for variant, expect in zip(("once", "forever"), variants, strict=True) if expect is not None]


# --- running one job ---------------------------------------------------------------------------------------

@dataclass
class Run:
    record: JobRecord
    events: list
    stopped: bool
    seconds: float
    errors: list[errors.NewportError]


class ErrorLog:
    """Every error a job fails with, as raised, by job id (for the key scan of texts, reprs and details)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, list[errors.NewportError]] = {}

    def add(self, job_id: str, error: errors.NewportError) -> None:
        with self._lock:
            self._errors.setdefault(job_id, []).append(error)

    def take(self, job_id: str) -> list[errors.NewportError]:
        with self._lock:
            return self._errors.pop(job_id, [])


def refuse_api_path(client: NewportClient, path: str, times: int | None, dead_origin: str) -> None:
    """Send the next ``times`` requests for ``path`` (None: all) to a port where nothing listens."""
    session = client.transport.session
    send = session.request
    left = [times]

    def request(method: str, url: str, *args: Any, **kwargs: Any):
        if urlsplit(url).path == path and (left[0] is None or left[0] > 0):
            left[0] = None if left[0] is None else left[0] - 1
            url = dead_origin + path
        return send(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign]


def run_job(sandbox: Sandbox, record: JobRecord, store: JobStore, refuse: tuple[str, int | None] | None,
            caught: ErrorLog) -> Run:
    def make_client(token):
        client = NewportClient(API_KEY, sandbox.base_url, retry=RETRY, timeouts=TIMEOUTS, cancel=token)
        if refuse is not None:
            refuse_api_path(client, API_PATHS[refuse[0]], refuse[1], sandbox.refused_origin)
        return client

    worker = JobWorker(make_client, store, settings=SETTINGS)
    started = time.monotonic()
    worker.start(record)
    stopped = worker.join(record.job_id, timeout=60)
    seconds = time.monotonic() - started
    events = []
    with contextlib.suppress(queue.Empty):
        while True:
            events.append(worker.events.get_nowait())
    stopped = stopped and not worker.running_ids() and bool(events) and events[-1].stopped
    return Run(record, events, stopped, seconds, caught.take(record.job_id))


def run_case(case: Case, folder: Path, caught: ErrorLog) -> list[str]:
    """Run one case from start to Retry; the problems found (none: the case behaved)."""
    video = write_bytes(folder / "take.mp4", 256 * 1024 + 7, seed=1)
    audio = write_bytes(folder / "line.wav", 64 * 1024 + 3, seed=2)
    output = folder / "out" / "result.mp4"
    output.parent.mkdir()
    store_dir = folder / "jobs"
    store = JobStore(store_dir)
    record = JobRecord(video=str(video), audio=str(audio), output_path=str(output))
    refuse = None
    with Sandbox(processing_seconds=0.05, queued_seconds=0.02) as sandbox:
        if case.fault == "refused" and case.phase in API_PATHS:
            refuse = (case.phase, case.times)
        elif case.fault == "html_200":
            sandbox.inject(case.phase, "html", case.times, status=200)
        else:
            sandbox.inject(case.phase, case.fault, case.times, **case.options())
        run = run_job(sandbox, record, store, refuse, caught)
        problems = check_run(case, run, sandbox, video, output, store_dir)
        if run.record.phase == Phase.FAILED and not problems:
            retried = retry_run(sandbox, run.record, store, caught)
            problems += retry_problems(case, retried, sandbox, video, output)
            problems += key_problems(store_dir, retried, sandbox)
    return problems


@pytest.fixture(scope="session")
def matrix_findings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                    ) -> dict[str, list[str]]:
    """Run every selected case, several at once; each case's problems by case id."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_fault_matrix" and hasattr(item, "callspec")]
    caught = ErrorLog()
    fail = JobRecord.fail

    def recording_fail(self: JobRecord, error: errors.NewportError) -> None:
        caught.add(self.job_id, error)
        fail(self, error)

    folders = {case.id: tmp_path_factory.mktemp(case.id) for case in selected}  # not thread-safe: made here

    def guarded(case: Case) -> list[str]:
        try:
            return run_case(case, folders[case.id], caught)
        except Exception as error:  # noqa: BLE001 — a crash is this case's finding, not every case's
            return [f"the case crashed: {type(error).__name__}: {error}"]

    JobRecord.fail = recording_fail  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fault-matrix") as pool:
            return dict(zip((case.id for case in selected), pool.map(guarded, selected), strict=True))
    finally:
        JobRecord.fail = fail  # type: ignore[method-assign]


# --- the checks ----------------------------------------------------------------------------------------------

def message_problems(message: str) -> list[str]:
    problems = []
    if "\n" in message or "Traceback" in message or "Error:" in message:
        problems.append(f"not one plain line: {message!r}")
    if not message.endswith("."):
        problems.append(f"not a finished sentence: {message!r}")
    if re.search(r"[.!?]\s+[A-Z]", message):
        problems.append(f"more than one sentence: {message!r}")
    if not any(word in message.lower() for word in ACTION_WORDS):
        problems.append(f"does not say what to do: {message!r}")
    if API_KEY in message:
        problems.append("the key is in the message")
    return problems


def key_problems(store_dir: Path, run: Run, sandbox: Sandbox) -> list[str]:
    problems = []
    key = API_KEY.encode()
    for path in store_dir.glob("*"):
        if key in path.read_bytes():
            problems.append(f"the key is in the job store file {path.name}")
    for error in run.errors:
        chain: BaseException | None = error
        while chain is not None:
            texts = (str(chain), repr(chain), getattr(chain, "detail", ""))
            if any(API_KEY in text for text in texts):
                problems.append(f"the key is in an error: {type(chain).__name__}")
            chain = chain.__cause__ or chain.__context__
    for event in run.events:
        if API_KEY in repr(event):
            problems.append("the key is in a job event")
            break
    try:
        assert_no_key_anywhere(sandbox)
    except AssertionError as error:
        problems.append(f"the key reached storage or cdn: {str(error)[:200]}")
    return problems


def submits_accepted(case: Case, submits: int) -> int:
    """Submit requests the service may have acted on (a refusing fault answers without processing)."""
    if case.phase == "submit" and case.fault in ANSWERING_FAULTS:
        refused = submits if case.times is None else min(case.times, submits)
        return submits - refused
    return submits


def check_run(case: Case, run: Run, sandbox: Sandbox, video: Path, output: Path, store_dir: Path) -> list[str]:
    expect = case.expect
    record = run.record
    problems: list[str] = []
    if not run.stopped:
        problems.append("the worker did not stop, or did not say so")
    if record.phase != expect.phase:
        problems.append(f"ended {record.phase.value} ({record.error_kind}: {record.error}), "
                        f"expected {expect.phase.value}")
    if expect.phase == Phase.FAILED and record.phase == Phase.FAILED:
        if record.error_kind != expect.kind:
            problems.append(f"error kind {record.error_kind!r}, expected {expect.kind!r}")
        if expect.message and record.error != expect.message:
            problems.append(f"message {record.error!r}, expected {expect.message!r}")
        if expect.pattern and not re.search(expect.pattern, record.error):
            problems.append(f"message {record.error!r} does not match {expect.pattern!r}")
        problems += message_problems(record.error)
    submits = sandbox.count("submit")
    if submits != expect.submits:
        problems.append(f"{submits} submit requests reached the service, expected {expect.submits}")
    if submits_accepted(case, submits) > 1:
        problems.append("the service may have run this job more than once")
    if record.phase == Phase.DOWNLOADED:
        if not output.is_file() or output.read_bytes() != video.read_bytes():
            problems.append("the result is missing or not byte-correct")
        if output.with_name(output.name + ".part").exists():
            problems.append("a .part was left beside the finished result")
    elif output.exists():
        problems.append("a result file exists although the job did not finish")
    strays = {path.name for path in output.parent.iterdir()} - {output.name, output.name + ".part"}
    if strays:
        problems.append(f"unexpected files beside the result: {sorted(strays)}")
    if case.fault == "http_429" and case.variant == "once" and run.seconds < 0.95:
        problems.append(f"Retry-After: 1 was not honoured (the job took {run.seconds:.2f}s)")
    problems += key_problems(store_dir, run, sandbox)
    return problems


def retry_run(sandbox: Sandbox, record: JobRecord, store: JobStore, caught: ErrorLog) -> Run:
    """The artist's Retry, with the fault gone."""
    sandbox.clear_faults()
    record.prepare_retry()
    return run_job(sandbox, record, store, None, caught)


def retry_problems(case: Case, run: Run, sandbox: Sandbox, video: Path, output: Path) -> list[str]:
    problems = []
    if not run.stopped:
        problems.append("after Retry: the worker did not stop")
    if run.record.phase != Phase.DOWNLOADED:
        problems.append(f"after Retry: ended {run.record.phase.value} ({run.record.error})")
    elif output.read_bytes() != video.read_bytes():
        problems.append("after Retry: the result is not byte-correct")
    if sandbox.count("submit") != case.expect.retry_submits:
        problems.append(f"after Retry: {sandbox.count('submit')} submit requests in all, "
                        f"expected {case.expect.retry_submits}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault_matrix(case: Case, matrix_findings: dict[str, list[str]], fault_matrix_report: list[dict]) -> None:
    problems = matrix_findings[case.id]
    verdict = "wrong" if problems else "completed" if case.expect.phase == Phase.DOWNLOADED else "failed correctly"
    fault_matrix_report.append({"phase": case.phase, "fault": case.fault, "variant": case.variant,
                                "verdict": verdict, "problems": problems})
    assert not problems, "\n".join(problems)


# --- beside the matrix -----------------------------------------------------------------------------------

def test_a_dead_base_url_fails_the_job_before_anything_is_sent(tmp_path: Path) -> None:
    video = write_bytes(tmp_path / "take.mp4", 1000)
    record = JobRecord(video=str(video), audio=str(video), output_path=str(tmp_path / "result.mp4"))
    with Sandbox() as sandbox:
        dead = sandbox.refused_origin
        with NewportClient(API_KEY, dead, retry=RETRY, timeouts=TIMEOUTS) as client:
            JobRunner(client, record, settings=SETTINGS).run()
        assert sandbox.requests == []
    assert record.phase == Phase.FAILED and record.error == MSG_UNREACHABLE
    assert record.submit_started_at == 0.0
    assert not (tmp_path / "result.mp4").exists()


def test_the_table_covers_every_phase_and_fault_of_the_brief() -> None:
    brief = {"refused", "reset", "reset_mid_body", "stall", "http_429", "http_500", "http_502", "http_503",
             "malformed_json", "html", "empty_body"}
    for phase in ("policy", "storage", "finish", "submit", "poll", "download"):
        applicable = brief - ({"malformed_json"} if phase == "download" else set())
        assert applicable <= {fault for (row_phase, fault) in EXPECTED if row_phase == phase}, phase
    poll_only = {"status0", "task_failed", "no_video"}
    assert poll_only <= {fault for (phase, fault) in EXPECTED if phase == "poll"}
    assert {"expired", "cut_short"} <= {fault for (phase, fault) in EXPECTED if phase == "download"}
    for expect in (e for pair in EXPECTED.values() for e in pair if e is not None):
        assert expect.submits <= 1 or expect.kind == "rate_limited" or expect.phase == Phase.DOWNLOADED
