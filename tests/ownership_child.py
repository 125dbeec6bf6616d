"""One process contending for a job of a shared JobStore: run by ``test_ownership.py``.

Every line for the parent is ``TF <kind> <json>``, flushed at once:

* ``hold STORE JOB``: claim the job and report it; while claimed, stay alive (heartbeats
  running) until killed or stdin closes.
* ``run STORE JOB BASE_URL``: run the stored job on a ``JobWorker`` — refused while another
  process owns it, then tried again until it starts (the owner died) — and report how it ended.
* ``token``: print this process's start token, then wait until stdin closes (a live pid that
  never claims anything, for the pid-reuse tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from newport_api import JobStore, JobWorker, NewportClient, RunnerSettings
from newport_api.http import RetryPolicy, Timeouts
from newport_api.ownership import process_start_token

FAST = RunnerSettings(poll_interval=0.05, max_poll_interval=0.2, progress_interval=0.0)
RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05, max_retry_after=2.0)


def say(kind: str, value: object = None) -> None:
    print(f"TF {kind} {json.dumps(value, sort_keys=True)}", flush=True)


def owner(store: JobStore, job_id: str) -> dict | None:
    info = store.owner_of(job_id)
    return None if info is None else {"pid": info.pid, "alive": info.alive}


def owner_once_named(store: JobStore, job_id: str, wait: float = 2.0) -> dict | None:
    """The owner, read again for a moment when its file is not there yet.

    A refusal can land between the winner taking the OS lock and writing its owner file
    (microseconds apart); the panel reads it again on its next tick, and so does this.
    """
    deadline = time.monotonic() + wait
    while (named := owner(store, job_id)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return named


def hold(store: JobStore, job_id: str) -> int:
    claimed = store.claim(job_id)
    say("claimed", {"claimed": claimed, "pid": os.getpid(), "owner": owner(store, job_id)})
    if claimed:
        sys.stdin.read()  # until the parent closes stdin (or kills this process)
        store.release(job_id)
    return 0


def run(store: JobStore, job_id: str, base_url: str, timeout: float) -> int:
    def client(cancel):
        return NewportClient(os.environ["NEWPORT_API_KEY"], base_url, retry=RETRY, timeouts=Timeouts(5, 5),
                             cancel=cancel)

    worker = JobWorker(client, store, settings=FAST)
    deadline = time.monotonic() + timeout
    refused = False
    while not worker.start(store.load(job_id)):
        if not refused:
            refused = True
            say("refused", {"pid": os.getpid(), "owner": owner_once_named(store, job_id)})
        if time.monotonic() > deadline:
            say("timeout")
            return 3
        time.sleep(0.05)
    say("started", {"pid": os.getpid(), "after_refusal": refused})
    worker.join(job_id, timeout)
    record = store.load(job_id)
    say("stopped", {"phase": record.phase.value, "task_id": record.task_id, "error": record.error,
                    "holds": store.holds(job_id)})
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("hold", "run", "token"))
    parser.add_argument("store", nargs="?", default="")
    parser.add_argument("job_id", nargs="?", default="")
    parser.add_argument("base_url", nargs="?", default="")
    parser.add_argument("--locking", default="")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "token":
        say("token", {"pid": os.getpid(), "token": process_start_token()})
        sys.stdin.read()
        return 0
    store = JobStore(args.store, **({"locking": args.locking} if args.locking else {}))
    if args.command == "hold":
        return hold(store, args.job_id)
    return run(store, args.job_id, args.base_url, args.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
