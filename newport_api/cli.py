"""Command line: ``python -m newport_api talking-face --video V --audio A -o OUT``.

A pipeline tool that never wastes a credit:

* everything that can be refused is refused before a byte is sent (``cli_checks``);
* each job is kept in a ``JobStore`` under a per-user state folder, keyed by the
  inputs' content and the options, so running the same command again after
  Ctrl-C, a crash or a lost connection continues the same task instead of paying
  again (a partial download resumes too);
* ``--json`` turns stdout into one JSON object per line (progress events, then the
  result), and the exit status says what happened (``EXIT_CODES``);
* ``batch MANIFEST`` runs many such jobs from a CSV or JSON manifest, a few at a
  time (``cli_batch``).

The key comes from ``NEWPORT_API_KEY`` (never from an argument, which other users
of the machine could read in the process list).  Global options (``--base-url``,
``--ca-bundle``, ``--state-dir``, ``--json``) go before or after the subcommand.
Not shipped in the extension's zip.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import errors
from .cancel import CancelToken, StopReason
from .cli_checks import MediaFacts, Refusal, check_input, check_output, check_positive, check_size
from .client import NewportClient
from .http import check_base_url, check_ca_bundle
from .jobs import JobEvent, JobRecord, JobRunner, Phase, RunnerSettings, is_url
from .models import DEFAULT_BASE_URL, TaskInfo, TaskStatus, estimate_credits
from .store import JobStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_NETWORK, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = {
    EXIT_OK: "done: the result is complete at -o",
    EXIT_FAILED: "an unexpected error (a bug: please report it)",
    EXIT_USAGE: "usage or preflight: nothing was sent",
    EXIT_REFUSED: "Newport AI refused the key, the credits, the inputs or the job",
    EXIT_NETWORK: "Newport AI could not be reached or kept failing: run the same command again to continue",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C): run the same command again to continue",
}
BATCH_EXIT_CODES = {
    EXIT_OK: "every row is done (made now, or its output was already there)",
    EXIT_USAGE: "the manifest or a row is invalid: nothing was sent (with --skip-invalid: the others ran)",
    EXIT_REFUSED: "Newport AI refused a row (or the key, or the credits for the batch); the others ran",
    EXIT_NETWORK: "a row could not reach Newport AI (or runs in another process): run the same command again",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C): run the same command again to continue",
    EXIT_FAILED: "an unexpected error in a row (a bug: please report it)",
}
STATE_DIR_ENV = "TALKING_FACE_STATE_DIR"
NETWORK_KINDS = frozenset({"network", "service_unavailable", "tls", "still_processing"})
USAGE_KINDS = frozenset({"configuration", "insecure_url"})
TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
HOST_IN_DETAIL = re.compile(r"host='([^']+)', port=(\d+)")
HASH_CHUNK = 1024 * 1024


class Interrupted(Exception):
    """Ctrl-C: the job was stopped and saved where it was."""


# -- arguments -----------------------------------------------------------------------------------------


def add_global_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """The options every subcommand takes, before it or after it.

    The copy on the subcommands has no defaults (``SUPPRESS``), so a value given
    before the subcommand is not overwritten by the subcommand's default.
    """
    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument("--base-url", default=default(os.environ.get("NEWPORT_BASE_URL", DEFAULT_BASE_URL)),
                        help=f"API base URL (default: $NEWPORT_BASE_URL or {DEFAULT_BASE_URL})")
    parser.add_argument("--ca-bundle", default=default(None), help="a CA bundle to trust instead of the system's")
    parser.add_argument("--state-dir", default=default(None),
                        help=f"where unfinished jobs are kept (default: ${STATE_DIR_ENV}, else "
                             "$XDG_STATE_HOME/talking-face or ~/.local/state/talking-face)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print one JSON object per line on stdout: progress events, then the result")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m newport_api", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Newport AI Talking Face from the command line. The API key is read from NEWPORT_API_KEY.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items()))
    add_global_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_global_options(sub, with_defaults=False)
        return sub

    job = command("talking-face", "lip-sync a video to an audio file (running it again continues the same job)")
    job.add_argument("--video", required=True, help="source video: a local file or an http(s) URL")
    job.add_argument("--audio", required=True, help="audio to speak: a local file or an http(s) URL")
    job.add_argument("--vocals", default="", help="optional vocals-only audio that drives the mouth")
    job.add_argument("-o", "--output", required=True, help="where to write the result video")
    job.add_argument("--width", type=int, default=0, help="output width (0 keeps the source's)")
    job.add_argument("--height", type=int, default=0, help="output height (0 keeps the source's)")
    job.add_argument("--enhance", action="store_true", help="sharpen faces")
    job.add_argument("--fps", choices=("25", "original"), default="25",
                     help="output frame rate: 25 (default) or the source's ('original' costs fps/25 × more)")
    job.add_argument("--force", action="store_true", help="overwrite -o if it exists")
    job.add_argument("--resubmit", action="store_true",
                     help="submit again a job whose earlier submit was never confirmed (it may be paid twice)")
    job.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)

    status = command("status", "show a task's state (and its result link once it succeeded)")
    status.add_argument("task_id", metavar="TASK_ID")

    download = command("download", "wait for a task to finish and download its result")
    download.add_argument("task_id", metavar="TASK_ID")
    download.add_argument("-o", "--output", required=True, help="where to write the result video")
    download.add_argument("--force", action="store_true", help="overwrite -o if it exists")
    download.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)

    add_batch_arguments(commands.add_parser(
        "batch", help="run every row of a manifest, a few jobs at a time (running it again continues)",
        description="Run every row of a manifest, a few jobs at a time, in the manifest's order. Running the "
                    "same command again continues the unfinished rows and skips the rows whose output exists.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes (the first that applies, in this order):\n" + "\n".join(
            f"  {code:<4} {BATCH_EXIT_CODES[code]}" for code in BATCH_EXIT_PRIORITY)))
    command("credits", "show the account's remaining credits (checks the key)")
    return parser


BATCH_EXIT_PRIORITY = (EXIT_INTERRUPTED, EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE, EXIT_NETWORK, EXIT_OK)


def add_batch_arguments(batch: argparse.ArgumentParser) -> None:
    add_global_options(batch, with_defaults=False)
    batch.add_argument("manifest", metavar="MANIFEST",
                       help="a .csv with a header row, or a .json list of objects, with the columns video, audio, "
                            "output and optionally vocals, width, height, enhance, fps (as talking-face's options); "
                            "relative paths are relative to the manifest's folder")
    batch.add_argument("--parallel", type=int, default=3, metavar="N",
                       help="jobs running at once (default 3); the other rows wait in the manifest's order")
    batch.add_argument("--skip-invalid", action="store_true",
                       help="run the valid rows when some are invalid (default: refuse the batch, nothing sent)")
    batch.add_argument("--force", action="store_true",
                       help="make again the rows whose output exists (default: skip them, they are done)")
    batch.add_argument("--resubmit", action="store_true",
                       help="submit again the rows whose earlier submit was never confirmed (they may be paid twice)")
    batch.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)


def default_state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "talking-face"
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "talking-face"


# -- entry point ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Reporter(json_mode=args.json)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignored SIGINT
    try:
        return run_command(args, out)
    except Refusal as refusal:
        return out.fail(EXIT_USAGE, str(refusal), "usage")
    except Interrupted as stop:
        return out.fail(EXIT_INTERRUPTED, str(stop), "interrupted")
    except KeyboardInterrupt:
        return out.fail(EXIT_INTERRUPTED, "Interrupted before anything was sent.", "interrupted")


def run_command(args: argparse.Namespace, out: Reporter) -> int:
    api_key = os.environ.get("NEWPORT_API_KEY", "").strip()
    if not api_key:
        raise Refusal("NEWPORT_API_KEY is not set — export it with your Newport AI API key (sk-…).")
    base_url = checked_base_url(args.base_url)
    ca_bundle = checked_ca_bundle(args.ca_bundle)
    if args.command == "batch":
        from .cli_batch import run_batch  # it builds on this module, so it is loaded only when used

        return run_batch(args, api_key, base_url, ca_bundle, out)
    if args.command == "talking-face":
        plan = plan_talking_face(args, base_url)
    elif args.command == "download":
        plan = plan_download(args, base_url)
    else:
        plan = None
    store = checked_store(args.state_dir) if plan else None
    with NewportClient(api_key, base_url, ca_bundle=ca_bundle, cancel=CancelToken()) as client:
        if args.command == "credits":
            return show_credits(client, out)
        if args.command == "status":
            return show_status(client, args.task_id, out)
        assert plan is not None and store is not None
        return run_plan(client, plan, store, args, out)


def checked_base_url(base_url: str) -> str:
    try:
        return check_base_url(base_url)
    except errors.InsecureURLError:
        raise Refusal(f"--base-url {base_url}: must be an https:// address (plain http:// only for "
                      "127.0.0.1 or localhost).") from None


def checked_ca_bundle(ca_bundle: str | None) -> str | None:
    try:
        return check_ca_bundle(ca_bundle)
    except errors.ConfigurationError:
        raise Refusal(f"--ca-bundle {ca_bundle}: no such file or folder — check the path.") from None


def checked_store(state_dir: str | None) -> JobStore:
    folder = Path(state_dir).expanduser() if state_dir else default_state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        raise Refusal(f"The state folder {folder} cannot be written — choose another with --state-dir "
                      f"or {STATE_DIR_ENV}.")
    return JobStore(folder)


def checked_task_id(task_id: str) -> str:
    if not TASK_ID.fullmatch(task_id):
        raise Refusal(f"'{task_id}' is not a task id (letters, digits, '-', '_' and '.').")
    return task_id


# -- plans: what a job command will run, decided before any request --------------------------------------


class Plan:
    """A job record to run and the key it is stored under; built by the preflight."""

    def __init__(self, key: str, fresh: JobRecord, resubmit: bool = False) -> None:
        self.key = key
        self.fresh = fresh  # the record to start from when the store has none
        self.resubmit = resubmit


@dataclass(frozen=True)
class JobSpec:
    """One talking-face job as given, on the command line or in a row of a manifest."""

    video: str
    audio: str
    output: str
    vocals: str = ""
    width: int = 0
    height: int = 0
    enhance: bool = False
    fps: str = "25"  # "25" or "original"


OPTION_FLAGS = {"video": "--video", "audio": "--audio", "vocals": "--vocals", "output": "-o", "width": "--width",
                "height": "--height"}


def plan_talking_face(args: argparse.Namespace, base_url: str) -> Plan:
    check_positive("--poll-interval", args.poll_interval)
    spec = JobSpec(video=args.video, audio=args.audio, output=args.output, vocals=args.vocals, width=args.width,
                   height=args.height, enhance=args.enhance, fps=args.fps)
    return plan_job(spec, base_url, force=args.force, resubmit=args.resubmit)


def plan_job(spec: JobSpec, base_url: str, *, force: bool, resubmit: bool = False,
             flags: dict[str, str] = OPTION_FLAGS) -> Plan:
    """Preflight one job (``flags`` name its fields in the refusals) and key it by content and options."""
    check_size(spec.width, spec.height, (flags["width"], flags["height"]))
    video = check_input(flags["video"], spec.video, "video")
    audio = check_input(flags["audio"], spec.audio, "audio")
    if spec.vocals:
        check_input(flags["vocals"], spec.vocals, "audio")
    target = check_output(spec.output, [spec.video, spec.audio, spec.vocals], force=force, flag=flags["output"])
    fps_original = spec.fps == "original"
    options = {"base_url": base_url, "width": spec.width, "height": spec.height, "enhance": spec.enhance,
               "fps": spec.fps}
    key = job_key(options, {"video": spec.video, "audio": spec.audio, "vocals": spec.vocals})
    record = JobRecord(video=local_or_url(spec.video), audio=local_or_url(spec.audio),
                       vocals=local_or_url(spec.vocals), output_path=str(target), width=spec.width,
                       height=spec.height, enhance=spec.enhance, fps_original=fps_original,
                       estimated_credits=estimate(video, audio, fps_original), job_id=key,
                       label=Path(spec.output).name)
    return Plan(key, record, resubmit=resubmit)


def plan_download(args: argparse.Namespace, base_url: str) -> Plan:
    task_id = checked_task_id(args.task_id)
    check_positive("--poll-interval", args.poll_interval)
    target = check_output(args.output, [], force=args.force)
    key = job_key({"download": task_id, "base_url": base_url, "output": str(target)}, {})
    record = JobRecord(video="", audio="", output_path=str(target), task_id=task_id, job_id=key,
                       phase=Phase.QUEUED, label=Path(args.output).name)
    return Plan(key, record)


def local_or_url(source: str) -> str:
    return source if not source or is_url(source) else str(Path(source).expanduser().absolute())


def estimate(video: MediaFacts | None, audio: MediaFacts | None, fps_original: bool) -> float:
    """Credits the job will cost, when ffprobe told the audio's length (0: unknown, never blocks)."""
    if audio is None or not audio.duration:
        return 0.0
    return estimate_credits(audio.duration, fps_original=fps_original, source_fps=(video and video.fps) or 0.0)


def job_key(options: dict[str, Any], inputs: dict[str, str]) -> str:
    """The same options and the same input *content* give the same key, wherever the files are."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for role, source in sorted(inputs.items()):
        digest.update(f"\0{role}\0".encode())
        digest.update(source.encode() if not source or is_url(source) else file_digest(Path(source)))
    return digest.hexdigest()[:32]


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path.expanduser(), "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.digest()


def record_to_run(plan: Plan, store: JobStore) -> JobRecord:
    """The stored record of an earlier run of the same command, ready to continue; else the fresh one."""
    record = store.load(plan.key)
    if record is None or record.phase in (Phase.DOWNLOADED, Phase.DONE):
        return plan.fresh
    uncertain = bool(record.submit_started_at and not record.task_id)
    if uncertain and not plan.resubmit:
        raise ServiceRefusal(
            "An earlier run of this command sent the job but never heard back, so it may already be running "
            "(and paid) on Newport AI — check your account, then add --resubmit to submit it again.")
    if uncertain or record.phase in (Phase.FAILED, Phase.CANCELLED):
        record.prepare_retry()
    for name in ("video", "audio", "vocals", "output_path"):  # same content, maybe moved; -o may differ
        setattr(record, name, getattr(plan.fresh, name))
    return record


class ServiceRefusal(Exception):
    """Refused because of what the service may have done already (exit 3, nothing sent)."""


# -- running a job -------------------------------------------------------------------------------------


def run_plan(client: NewportClient, plan: Plan, store: JobStore, args: argparse.Namespace,
             out: Reporter) -> int:
    with job_lock(store, plan.key):
        try:
            record = record_to_run(plan, store)
        except ServiceRefusal as refusal:
            return out.fail(EXIT_REFUSED, str(refusal), "submit_uncertain")
        if record.task_id:
            out.note(f"Continuing task {record.task_id} (started by an earlier run; not paid again).")
        runner = JobRunner(client, record, save=store.save, emit=out.progress,
                           settings=RunnerSettings(poll_interval=args.poll_interval))
        run_until_stopped(runner, out)
        if record.phase != Phase.DOWNLOADED:
            return report_failure(record, client, out)
        record.set_phase(Phase.DONE, "Done")
        store.delete(plan.key)
        return out.result(record, remaining_credits(client) if record.estimated_credits else None)


@contextlib.contextmanager
def job_lock(store: JobStore, key: str) -> Iterator[None]:
    """One process at a time per job: a second identical command must not submit it again."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; the record still prevents a second submit later
        yield
        return
    lock_path = store.directory / f"{key}.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refusal("The same job is already running in another process — wait for it to finish.") from None
        try:
            yield
        finally:
            if store.load(key) is None:
                lock_path.unlink(missing_ok=True)


def run_until_stopped(runner: JobRunner, out: Reporter) -> None:
    """Run the job in a worker thread so Ctrl-C can stop it at a point where it resumes cleanly.

    The main thread waits on an Event, not on ``Thread.join``: a KeyboardInterrupt inside
    ``join`` marks a running thread as stopped on CPython 3.11, after which the process
    would exit before the job saved its task id.
    """
    finished = threading.Event()

    def work() -> None:
        try:
            runner.run()
        finally:
            finished.set()

    threading.Thread(target=work, name="talking-face-job", daemon=True).start()
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        stop_job(runner, finished, out)


def stop_job(runner: JobRunner, finished: threading.Event, out: Reporter) -> None:
    record = runner.record
    if record.phase == Phase.SUBMITTING and record.submit_started_at and not record.task_id:
        # Stopping now would leave a submit of unknown fate; the answer takes a moment.
        out.note("Waiting for Newport AI to confirm the submit (Ctrl-C again to stop at once)…")
        with contextlib.suppress(KeyboardInterrupt):
            while not finished.is_set() and record.phase == Phase.SUBMITTING:
                finished.wait(0.1)
    runner.cancel.cancel(StopReason.SHUTDOWN)  # the runner saves the phase it is in, then returns
    wait_through_interrupts(finished)
    out.finish_progress()
    if record.task_id:
        raise Interrupted(f"Interrupted; task {record.task_id} goes on at Newport AI — run the same command "
                          "again to continue it (it is not paid again).")
    raise Interrupted("Interrupted before the job was submitted; nothing was paid — run the same command "
                      "again to continue.")


def wait_through_interrupts(finished: threading.Event) -> None:
    """Wait for the cancelled job to save itself (a moment: its sockets were shut); Ctrl-C cannot skip it."""
    while True:
        try:
            if finished.wait(0.2):
                return
        except KeyboardInterrupt:
            continue


def report_failure(record: JobRecord, client: NewportClient, out: Reporter) -> int:
    code, text = failure_of(record, client.transport.base_url)
    return out.fail(code, text, record.error_kind)


def failure_of(record: JobRecord, base_url: str) -> tuple[int, str]:
    """A failed job's exit status and its sentence in the command line's words."""
    text = for_the_command_line(record.error_kind, record.error or record.message, record.error_detail,
                                base_url)
    if record.task_id and record.error_kind in NETWORK_KINDS:
        text += f" (task {record.task_id})"
    return exit_code_for(record.error_kind, record.error), text


def exit_code_for(kind: str, message: str = "") -> int:
    if kind in USAGE_KINDS:
        return EXIT_USAGE
    if kind in NETWORK_KINDS:
        return EXIT_NETWORK
    if kind == "error" and message.startswith("Talking Face hit an unexpected error"):
        return EXIT_FAILED
    return EXIT_REFUSED


# -- messages in the command line's words ----------------------------------------------------------------

ADD_ON_WORDS = (
    (" — use Retry to keep waiting", " — run the same command again to keep waiting"),
    (" — use Retry to ", " — run the same command again to "),
    ("use Retry", "run the same command again"),
    (", then Retry", ", then run the same command again"),
    ("then Retry", "then run the same command again"),
    ("Retry", "running the same command again"),
    ("Talking Face hit", "The command hit"),
)


def for_the_command_line(kind: str, message: str, detail: str, base_url: str) -> str:
    """The runner's sentence, told in flags and environment variables instead of the add-on's preferences."""
    host = host_tried(detail, base_url)
    if kind == "authentication":
        if "No Newport AI API key" in message:
            return "NEWPORT_API_KEY is empty — export it with your Newport AI API key (sk-…)."
        return "Newport AI rejected the API key in NEWPORT_API_KEY — check it, then run the same command again."
    if kind in ("network", "service_unavailable") and message.startswith("Can't reach Newport AI"):
        return (f"Can't reach Newport AI at {host} — check your internet connection and --base-url, then run "
                "the same command again to continue.")
    if kind == "tls":
        return (f"The secure connection to {host} could not be verified — if your network inspects HTTPS, "
                "pass its CA bundle with --ca-bundle, then run the same command again.")
    if "Preferences" in message:  # an address or a setting of the add-on: here, the flags
        return (f"Newport AI does not answer as expected at {base_url} — check --base-url and --ca-bundle "
                "(and your proxy settings), then run the same command again.")
    for add_on, command_line in ADD_ON_WORDS:
        message = message.replace(add_on, command_line)
    return message


def host_tried(detail: str, base_url: str) -> str:
    """The host and port a failed connection went to (storage or result hosts too), else the API's."""
    found = HOST_IN_DETAIL.search(detail or "")
    if found:
        return f"{found.group(1)}:{found.group(2)}"
    return re.sub(r"^https?://", "", base_url).split("/")[0]


def error_for_the_command_line(error: errors.NewportError, base_url: str) -> tuple[int, str]:
    return (exit_code_for(error.kind, error.message),
            for_the_command_line(error.kind, error.message, error.detail, base_url))


# -- the other commands ------------------------------------------------------------------------------------


def show_credits(client: NewportClient, out: Reporter) -> int:
    try:
        balance = client.balance()
    except errors.NewportError as error:
        code, text = error_for_the_command_line(error, client.transport.base_url)
        return out.fail(code, text, error.kind)
    if not balance.confirmed:
        return out.fail(EXIT_REFUSED, f"{client.transport.base_url} does not offer the balance check, so "
                        "neither the key nor the credits could be confirmed.", "unconfirmed")
    out.emit({"event": "credits", "credits": balance.credits})
    out.line("unknown (the service accepted the key but did not say)" if balance.credits is None
             else f"{balance.credits:g}")
    return EXIT_OK


def remaining_credits(client: NewportClient) -> float | None:
    try:
        return client.remaining_credits()
    except errors.NewportError:
        return None


def show_status(client: NewportClient, task_id: str, out: Reporter) -> int:
    try:
        task = client.get_task(checked_task_id(task_id))
    except errors.NewportError as error:
        code, text = error_for_the_command_line(error, client.transport.base_url)
        return out.fail(code, text, error.kind)
    out.emit(status_event(task))
    out.line(describe_task(task))
    return EXIT_OK


STATUS_NAMES = {TaskStatus.UNKNOWN: "unknown", TaskStatus.QUEUED: "queued", TaskStatus.SUBMITTED: "queued",
                TaskStatus.PROCESSING: "processing", TaskStatus.SUCCEEDED: "succeeded",
                TaskStatus.FAILED: "failed"}


def status_event(task: TaskInfo) -> dict[str, Any]:
    return {"event": "status", "task_id": task.task_id, "status": STATUS_NAMES[task.status],
            "video_urls": list(task.video_urls), "expire_at": task.expire_at, "reason": task.reason or None}


def describe_task(task: TaskInfo) -> str:
    text = f"{task.task_id}: {STATUS_NAMES[task.status]}"
    if task.status == TaskStatus.SUCCEEDED and task.video_urls:
        expiry = time.strftime(" (until %Y-%m-%d %H:%M %Z)", time.localtime(task.expire_at)) if task.expire_at else ""
        text += f" — download it with: python -m newport_api download {task.task_id} -o result.mp4{expiry}"
    elif task.status == TaskStatus.FAILED:
        text += f" — {task.reason or 'no reason given'}"
    return text


# -- output ------------------------------------------------------------------------------------------------


class Reporter:
    """Human progress on stderr and the result path on stdout; or, with --json, JSON lines on stdout."""

    def __init__(self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._lock = threading.Lock()  # events come from the job's thread, notes from the main one
        self._progress_line = None if json_mode else ProgressLine(self.stderr)
        self._announced_task = ""
        self._task_id = ""  # from the latest snapshot: progress events carry none

    def emit(self, event: dict[str, Any]) -> None:
        if self.json_mode:
            with self._lock:
                self.stdout.write(json.dumps(event) + "\n")
                self.stdout.flush()

    def line(self, text: str) -> None:
        """The human answer on stdout (nothing in --json mode, where the events say it)."""
        if not self.json_mode:
            print(text, file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        with self._lock:
            self._end_line()
            print(text, file=self.stderr, flush=True)

    def progress(self, event: JobEvent) -> None:
        if event.record is not None:
            self._task_id = event.record.get("task_id") or ""
        task_id = self._task_id
        if task_id and task_id != self._announced_task:
            self._announced_task = task_id
            self.note(f"Task id: {task_id} (python -m newport_api status {task_id})")
            self.emit({"event": "task", "task_id": task_id})
        self.emit({"event": "progress", "phase": event.phase, "progress": event.progress,
                   "message": event.message, "task_id": task_id or None})
        if self._progress_line is not None:
            with self._lock:
                self._progress_line.show(event)

    def finish_progress(self) -> None:
        with self._lock:
            self._end_line()

    def _end_line(self) -> None:
        if self._progress_line is not None:
            self._progress_line.finish()

    def fail(self, code: int, sentence: str, kind: str) -> int:
        self.finish_progress()
        print(f"error: {sentence}", file=self.stderr, flush=True)
        self.emit({"event": "error", "exit_code": code, "kind": kind, "message": sentence})
        return code

    def result(self, record: JobRecord, credits_left: float | None) -> int:
        self.finish_progress()
        self.emit({"event": "result", "exit_code": EXIT_OK, "task_id": record.task_id,
                   "output": record.output_path, "credits_estimated": record.estimated_credits or None,
                   "credits_remaining": credits_left})
        self.line(record.output_path)
        return EXIT_OK


class ProgressLine:
    """One self-rewriting status line on a terminal; one line per phase elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._last_phase = ""
        self._open = False

    def show(self, event: JobEvent) -> None:
        phase = Phase(event.phase)
        if phase.finished:  # the closing line (the result or the error) says it
            return
        label = "Downloaded" if phase == Phase.DOWNLOADED else phase.label  # nothing is imported here
        elapsed = time.monotonic() - self.started
        text = f"{label:<16} {bar(event.progress)} {elapsed:6.1f}s  {event.message}"
        if self.interactive:
            self.stream.write("\r" + text[:100].ljust(100))
            self._open = True
        elif event.phase != self._last_phase:
            self.stream.write(text + "\n")
        self._last_phase = event.phase
        self.stream.flush()

    def finish(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def bar(fraction: float | None, width: int = 24) -> str:
    if fraction is None:
        return "[" + " " * width + "]     "
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:3.0f}%"
