"""The command line's batch: ``python -m newport_api batch MANIFEST``.

A manifest is a CSV file (a header row, then one row per job) or a JSON list of
objects, with the columns ``video``, ``audio``, ``output`` and, optionally,
``talking-face``'s options ``vocals``, ``width``, ``height``, ``enhance`` and
``fps``.  Relative paths are relative to the manifest's folder.

* Every row gets the single command's preflight (``plan_job``) before anything
  is sent.  An invalid row refuses the whole batch (exit 2, one sentence per
  row) unless ``--skip-invalid`` runs the others.  A row whose output exists is
  done and is skipped (``--force`` makes it again).
* A queue: at most ``--parallel`` jobs run at once on ``JobWorker`` threads; the
  other rows wait in the manifest's order.  Each row is the single command's
  job (the same key, the same ``JobStore`` record), so running the batch again
  after Ctrl-C or a crash continues every unfinished row without submitting or
  uploading it again.
* A failed row never stops the others.  The summary names each failure, and the
  exit status is the first of ``BATCH_EXIT_PRIORITY`` that applies to a row.

Part of the command line: not shipped in the extension's zip.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import queue
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from .cancel import CancelToken
from .cli import (
    BATCH_EXIT_PRIORITY,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    JobSpec,
    Plan,
    Reporter,
    ServiceRefusal,
    checked_store,
    error_for_the_command_line,
    failure_of,
    plan_job,
    record_to_run,
    remaining_credits,
)
from .cli_checks import Refusal, check_positive
from .client import NewportClient
from .jobs import JobRecord, Phase, RunnerSettings, is_url
from .store import JobStore
from .worker import JobWorker

REQUIRED_COLUMNS = ("video", "audio", "output")
OPTION_COLUMNS = ("vocals", "width", "height", "enhance", "fps")
COLUMNS = REQUIRED_COLUMNS + OPTION_COLUMNS
COLUMN_FLAGS = {column: column for column in COLUMNS}  # a row's refusal names the column, not an option
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "n", "off"})
EVENT_WAIT = 0.2  # seconds: how long the main thread waits for an event before it looks again (Ctrl-C)
STATES = ("done", "skipped", "failed", "invalid", "interrupted", "not started")  # how a row ended, in summaries
REPORTED_AT_THE_END = frozenset({Phase.DOWNLOADED.value, Phase.FAILED.value, Phase.CANCELLED.value})


@dataclass
class Row:
    number: int  # 1: the first row after the header (the first object of a JSON list)
    where: str  # how a message names it: "row 3", or "row 3 (line 4)" in a CSV file
    values: dict[str, Any]
    problem: str = ""  # what is wrong with the row's shape, found while reading it
    output: str = ""  # the output's absolute path, once read
    plan: Plan | None = None  # set by the preflight when the row will run


@dataclass
class Outcome:
    row: Row
    state: str  # one of STATES
    exit_code: int = EXIT_OK
    message: str = ""
    kind: str = ""
    task_id: str = ""
    credits: float = 0.0  # the estimate of a row that ran


@dataclass
class Running:
    row: Row
    record: dict[str, Any]  # the latest snapshot its runner sent
    phase: str = ""
    task_id: str = ""

    @property
    def submit_unconfirmed(self) -> bool:
        return (self.record.get("phase") == Phase.SUBMITTING.value and bool(self.record.get("submit_started_at"))
                and not self.record.get("task_id"))


# -- reading the manifest ---------------------------------------------------------------------------------


def read_manifest(name: str) -> tuple[Path, list[Row]]:
    """The manifest's folder and its rows; a manifest that cannot be read at all is refused."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise Refusal(f"Manifest {name}: no such file — check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets start their CSV with a BOM
    except UnicodeDecodeError:
        raise Refusal(f"Manifest {name}: is not UTF-8 text — save it as UTF-8 CSV or JSON.") from None
    except OSError:
        raise Refusal(f"Manifest {name}: cannot be read (permissions) — check who owns it.") from None
    is_json = path.suffix.lower() == ".json" or text.lstrip().startswith("[")
    rows = json_rows(text, name) if is_json else csv_rows(text, name)
    if not rows:
        raise Refusal(f"Manifest {name}: has no rows — add one per job (video, audio, output).")
    return path.absolute().parent, rows


def csv_rows(text: str, name: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    columns = [cell.strip().lower() for cell in next(reader, [])]
    check_columns(columns, name)
    rows: list[Row] = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        row = Row(len(rows) + 1, f"row {len(rows) + 1} (line {reader.line_num})", dict(zip(columns, cells)))
        if len(cells) > len(columns):
            row.problem = (f"has {len(cells)} values but the header has {len(columns)} columns — quote a value "
                           "that holds a comma.")
        rows.append(row)
    return rows


def check_columns(columns: list[str], name: str) -> None:
    if not columns:
        raise Refusal(f"Manifest {name}: is empty — its first line names the columns: video,audio,output.")
    for column in columns:
        if column not in COLUMNS:
            raise Refusal(f"Manifest {name}: unknown column '{column}' — the columns are {', '.join(COLUMNS)}.")
        if columns.count(column) > 1:
            raise Refusal(f"Manifest {name}: the column '{column}' is there twice — keep one.")
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise Refusal(f"Manifest {name}: no '{column}' column — the header row needs video, audio and output.")


def json_rows(text: str, name: str) -> list[Row]:
    try:
        items = json.loads(text)
    except ValueError as error:
        detail = f" ({error.msg}, line {error.lineno})" if isinstance(error, json.JSONDecodeError) else ""
        raise Refusal(f"Manifest {name}: is not valid JSON{detail} — fix it, or write a CSV file.") from None
    if not isinstance(items, list):
        raise Refusal(f"Manifest {name}: must be a JSON list of objects, one per job, with video, audio and "
                      "output.")
    rows = []
    for number, item in enumerate(items, 1):
        values = {str(key).strip().lower(): value for key, value in item.items()} if isinstance(item, dict) else {}
        row = Row(number, f"row {number}", values)
        unknown = [key for key in values if key not in COLUMNS]
        if not isinstance(item, dict):
            row.problem = "is not an object with video, audio and output."
        elif unknown:
            row.problem = f"unknown key '{unknown[0]}' — the keys are {', '.join(COLUMNS)}."
        rows.append(row)
    return rows


# -- a row's values -----------------------------------------------------------------------------------------


def row_spec(row: Row, folder: Path) -> JobSpec:
    """The row as a job: its paths made absolute, its options in range (else ``Refusal``)."""
    if row.problem:
        raise Refusal(row.problem)
    return JobSpec(video=path_value(row, "video", folder), audio=path_value(row, "audio", folder),
                   output=path_value(row, "output", folder), vocals=path_value(row, "vocals", folder),
                   width=pixels_value(row, "width"), height=pixels_value(row, "height"),
                   enhance=yes_no_value(row, "enhance"), fps=fps_value(row))


def path_value(row: Row, column: str, folder: Path) -> str:
    value = row.values.get(column)
    if value is not None and not isinstance(value, str):
        raise Refusal(f"{column} {json.dumps(value)}: must be a path or an http(s) URL in quotes.")
    text = (value or "").strip()
    if not text:
        if column in REQUIRED_COLUMNS:
            raise Refusal(f"no {column} — every row needs video, audio and output.")
        return ""
    if is_url(text) and column != "output":
        return text
    if is_url(text):
        raise Refusal(f"output {text}: must be a file path — the result is written on this computer.")
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else folder / path)


def pixels_value(row: Row, column: str) -> int:
    value = row.values.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise Refusal(f"{column} {value}: must be a whole number of pixels (0 keeps the source's).") from None


def yes_no_value(row: Row, column: str) -> bool:
    value = row.values.get(column)
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise Refusal(f"{column} {value}: must be yes or no (true/false, 1/0, or empty for no).")


def fps_value(row: Row) -> str:
    value = row.values.get("fps")
    word = "" if value is None or isinstance(value, bool) else str(value).strip().lower()
    if word in ("", "25", "original"):
        return word or "25"
    raise Refusal(f"fps {value}: must be 25 or original (empty for 25).")


# -- the preflight: every row, before anything is sent ------------------------------------------------------


def preflight(rows: list[Row], folder: Path, base_url: str, args: argparse.Namespace) -> list[Outcome]:
    """Plan each row that will run; the outcomes of the others (skipped: done already; invalid)."""
    outcomes, keys, outputs = [], {}, {}
    for row in rows:
        try:
            spec = row_spec(row, folder)
            row.output = str(Path(spec.output).absolute())
            check_unique(row.output, outputs, row, "output")
            if Path(row.output).is_file() and not args.force:
                outcomes.append(Outcome(row, "skipped", message="its output exists (made earlier; --force makes "
                                                                "it again)"))
                continue
            plan = plan_job(spec, base_url, force=args.force, resubmit=args.resubmit, flags=COLUMN_FLAGS)
            check_unique(plan.key, keys, row, "key")
            row.plan = plan
        except Refusal as refusal:
            outcomes.append(Outcome(row, "invalid", EXIT_USAGE, f"{row.where}: {refusal}", "usage"))
    return outcomes


def check_unique(value: str, seen: dict[str, Row], row: Row, what: str) -> None:
    earlier = seen.setdefault(value, row)
    if earlier is row:
        return
    if what == "output":
        raise Refusal(f"output {value}: is also the output of {earlier.where} — give each row its own file.")
    raise Refusal(f"the same video, audio and options as {earlier.where}, so the same clip would be paid twice "
                  "— remove one row, or copy that row's output.")


# -- the batch ----------------------------------------------------------------------------------------------


def run_batch(args: argparse.Namespace, api_key: str, base_url: str, ca_bundle: str | None, out: Reporter) -> int:
    check_positive("--parallel", args.parallel)
    check_positive("--poll-interval", args.poll_interval)
    folder, rows = read_manifest(args.manifest)
    report = BatchReport(out, len(rows))
    set_aside = preflight(rows, folder, base_url, args)
    invalid = [outcome for outcome in set_aside if outcome.state == "invalid"]
    for outcome in invalid:
        report.invalid(outcome)
    if invalid and not args.skip_invalid:
        raise Refusal(f"{len(invalid)} of {len(rows)} rows are invalid, so nothing was sent — fix them, or pass "
                      "--skip-invalid to run the others.")
    store = checked_store(args.state_dir)
    runnable = [row for row in rows if row.plan is not None]
    for outcome in set_aside:
        report.outcome(outcome)
    credits_left = None
    interrupted = False
    if runnable:
        with NewportClient(api_key, base_url, ca_bundle=ca_bundle, cancel=CancelToken()) as client:
            refused = batch_refusal(client, runnable, store)
            if refused:
                return out.fail(*refused)
            worker = JobWorker(lambda token: NewportClient(api_key, base_url, ca_bundle=ca_bundle, cancel=token),
                               store, settings=RunnerSettings(poll_interval=args.poll_interval))
            batch = BatchQueue(runnable, worker, store, report, parallel=args.parallel, base_url=base_url)
            interrupted = not batch.run()
            set_aside += batch.outcomes
            credits_left = None if interrupted else remaining_credits(client)
    return report.summary(set_aside, interrupted, credits_left)


def batch_refusal(client: NewportClient, rows: list[Row], store: JobStore) -> tuple[int, str, str] | None:
    """One look at the account before any upload: a rejected key, or too few credits for the whole batch."""
    needed = sum(row.plan.fresh.estimated_credits for row in rows if row.plan and not submitted(store, row.plan))
    if needed <= 0:
        return None
    try:
        balance = client.remaining_credits()
    except errors.AuthenticationError as error:
        return (*error_for_the_command_line(error, client.transport.base_url), error.kind)
    except errors.NewportError:
        return None  # an unknown balance never blocks work (each job checks again before its upload)
    if balance is None or balance >= needed:
        return None
    sentence = (f"The rows to make need about {needed:.0f} credits but the account has {balance:g} — top up "
                "your Newport AI account or run fewer rows, then run the same command again.")
    return EXIT_REFUSED, sentence, "quota"


def submitted(store: JobStore, plan: Plan) -> bool:
    """An earlier run submitted this row already (it is paid for)."""
    record = store.load(plan.key)
    return bool(record and record.task_id and not record.phase.finished)


class BatchQueue:
    """Runs rows on a ``JobWorker``, at most ``parallel`` at once, in the order given.

    Everything happens on the calling (main) thread except the jobs themselves,
    which report through ``worker.events``; Ctrl-C stops the jobs where they
    can resume (``JobWorker.pause``) and ``run`` returns False.
    """

    def __init__(self, rows: list[Row], worker: JobWorker, store: JobStore, report: BatchReport, *,
                 parallel: int, base_url: str) -> None:
        self.waiting = deque(rows)
        self.running: dict[str, Running] = {}
        self.outcomes: list[Outcome] = []
        self.worker = worker
        self.store = store
        self.report = report
        self.parallel = parallel
        self.base_url = base_url

    def run(self) -> bool:
        try:
            while self.waiting or self.running:
                while self.waiting and len(self.running) < self.parallel:
                    self._start(self.waiting[0])
                    self.waiting.popleft()  # after: a row Ctrl-C caught before its start is "not started"
                self._take_event(EVENT_WAIT)
            return True
        except KeyboardInterrupt:
            self._stop()
            return False

    def _start(self, row: Row) -> None:
        plan = row.plan
        assert plan is not None
        if not self.store.claim(plan.key):
            self._finish(Outcome(row, "failed", EXIT_NETWORK, "The same job is already running in another process "
                                 "— wait for it to finish, then run the same command again.", "busy"))
            return
        try:
            record = record_to_run(plan, self.store)
        except ServiceRefusal as refusal:
            self.store.release(plan.key)
            self._finish(Outcome(row, "failed", EXIT_REFUSED, str(refusal), "submit_uncertain"))
            return
        continuing = f"continuing task {record.task_id} (not paid again)" if record.task_id else ""
        snapshot = record.to_dict()  # the thread owns the record from its start
        self.worker.start(record)
        self.running[plan.key] = Running(row, snapshot, snapshot["phase"], snapshot["task_id"])
        self.report.job(row, snapshot["phase"], continuing or record.message or record.phase.label,
                        snapshot["task_id"], aside=continuing)

    def _take_event(self, timeout: float) -> None:
        try:
            event = self.worker.events.get(timeout=timeout)
        except queue.Empty:
            return
        run = self.running.get(event.job_id)
        if run is None:
            return
        assert event.record is not None, "the worker queues snapshots only"
        run.record = event.record
        task_id = event.record.get("task_id") or ""
        if (event.phase, task_id) != (run.phase, run.task_id) and event.phase not in REPORTED_AT_THE_END:
            self.report.job(run.row, event.phase, event.message, task_id)
        run.phase, run.task_id = event.phase, task_id
        if event.stopped:
            del self.running[event.job_id]
            self._finish(self._outcome(run.row, event.record))

    def _outcome(self, row: Row, snapshot: dict[str, Any]) -> Outcome:
        record = JobRecord.from_dict(snapshot)
        if record.phase == Phase.DOWNLOADED:
            self.store.delete(record.job_id)  # done: the record goes, and with it this process's claim
            return Outcome(row, "done", task_id=record.task_id, credits=record.estimated_credits)
        if record.phase in (Phase.FAILED, Phase.CANCELLED):
            code, text = failure_of(record, self.base_url)
            return Outcome(row, "failed", code, text, record.error_kind or "cancelled", record.task_id)
        text = (f"task {record.task_id} goes on at Newport AI (it is not paid again)" if record.task_id
                else "stopped before its submit; nothing was paid")
        return Outcome(row, "interrupted", EXIT_INTERRUPTED, text, "interrupted", record.task_id)

    def _finish(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.report.outcome(outcome)

    def _stop(self) -> None:
        """Ctrl-C: start nothing more; let a submit in flight be answered; stop the rest where they resume."""
        self.outcomes += [Outcome(row, "not started", EXIT_INTERRUPTED) for row in self.waiting]
        self.waiting.clear()
        if any(run.submit_unconfirmed for run in self.running.values()):
            # Stopping now would leave a submit of unknown fate; the answer takes a moment.
            self.report.note("Waiting for Newport AI to confirm a submit (Ctrl-C again to stop at once)…")
        with contextlib.suppress(KeyboardInterrupt):
            while any(run.submit_unconfirmed for run in self.running.values()):
                self._take_event(0.1)
        for job_id in list(self.running):
            self.worker.pause(job_id)
        while self.running:  # each job saves its record, then says it stopped: a moment
            with contextlib.suppress(KeyboardInterrupt):
                self._take_event(EVENT_WAIT)
                self._finish_the_silent()

    def _finish_the_silent(self) -> None:
        """Jobs whose last event a Ctrl-C swallowed: their thread has ended and no event of theirs is left.

        A thread puts its last event before it ends, so one found ended before the queue is
        found empty has nothing more to say: its latest snapshot is its end.
        """
        ended = [job_id for job_id in self.running if not self.worker.is_running(job_id)]
        if ended and self.worker.events.empty():
            for job_id in ended:
                run = self.running.pop(job_id)
                self._finish(self._outcome(run.row, run.record))


# -- what the batch says --------------------------------------------------------------------------------------


class BatchReport:
    """A line per row's change on stderr and each made output on stdout; or, with --json, events on stdout."""

    def __init__(self, out: Reporter, total: int) -> None:
        self.out = out
        self.total = total

    def note(self, text: str) -> None:
        self.out.note(text)

    def name(self, row: Row) -> str:
        return f"row {row.number}/{self.total} ({Path(row.output).name or '?'})"

    def job(self, row: Row, phase: str, message: str, task_id: str, aside: str = "") -> None:
        """A row's job changed phase (or got its task id); ``aside`` is said after the phase's name."""
        self.out.emit({"event": "job", "row": row.number, "output": row.output, "phase": phase,
                       "task_id": task_id or None, "message": message})
        if not self.out.json_mode:
            aside = aside or (f"task {task_id}" if task_id and phase == Phase.QUEUED.value else "")
            self.out.note(f"{self.name(row)}: {Phase(phase).label}" + (f" — {aside}" if aside else ""))

    def invalid(self, outcome: Outcome) -> None:
        self.out.note(f"error: {outcome.message}")
        self.out.emit({"event": "error", "row": outcome.row.number, "exit_code": outcome.exit_code,
                       "kind": "invalid_row", "message": outcome.message})

    def outcome(self, outcome: Outcome) -> None:
        if outcome.state == "invalid":
            return  # said by invalid() before anything ran
        if outcome.state != "not started":
            event = {"event": "job", "row": outcome.row.number, "output": outcome.row.output,
                     "phase": outcome.state, "task_id": outcome.task_id or None,
                     "message": outcome.message or outcome.state}
            self.out.emit({**event, "kind": outcome.kind} if outcome.kind else event)
        if not self.out.json_mode and outcome.state != "not started":
            self.out.note(f"{self.name(outcome.row)}: {outcome.state}" +
                          (f" — {outcome.message}" if outcome.message else ""))
        if outcome.state == "done":
            self.out.line(outcome.row.output)

    def summary(self, outcomes: list[Outcome], interrupted: bool, credits_left: float | None) -> int:
        by_state: dict[str, list[Outcome]] = {}
        for outcome in sorted(outcomes, key=lambda outcome: outcome.row.number):
            by_state.setdefault(outcome.state, []).append(outcome)
        codes = {outcome.exit_code for outcome in outcomes} | ({EXIT_INTERRUPTED} if interrupted else set())
        exit_code = next(code for code in BATCH_EXIT_PRIORITY if code in codes or code == EXIT_OK)
        ran = [outcome for outcome in outcomes if outcome.row.plan is not None and outcome.state != "not started"]
        estimated = sum(outcome.row.plan.fresh.estimated_credits for outcome in ran if outcome.row.plan)
        used = sum(outcome.credits for outcome in by_state.get("done", []))
        self.out.emit({"event": "summary", "exit_code": exit_code, "rows": self.total,
                       **{state.replace(" ", "_"): [summary_entry(outcome) for outcome in by_state.get(state, [])]
                          for state in STATES},
                       "credits_estimated": round(estimated, 2), "credits_used": round(used, 2),
                       "credits_remaining": credits_left})
        if not self.out.json_mode:
            self._print_summary(by_state, estimated, used, credits_left)
        return exit_code

    def _print_summary(self, by_state: dict[str, list[Outcome]], estimated: float, used: float,
                       credits_left: float | None) -> None:
        counts = ", ".join(f"{len(by_state[state])} {state}" for state in STATES if by_state.get(state))
        self.out.note(f"Batch of {self.total} rows: {counts}.")
        for outcome in by_state.get("failed", []) + by_state.get("invalid", []):
            self.out.note(f"  {outcome.row.where} failed: {outcome.message}" if outcome.state == "failed"
                          else f"  {outcome.message}")
        if by_state.get("interrupted") or by_state.get("not started"):
            self.out.note("  Run the same command again to continue (nothing started is paid again).")
        left = "" if credits_left is None else f"; {credits_left:g} left"
        self.out.note(f"Credits: about {estimated:g} estimated for the rows run, about {used:g} for the clips "
                      f"made{left}.")


def summary_entry(outcome: Outcome) -> dict[str, Any]:
    entry: dict[str, Any] = {"row": outcome.row.number, "output": outcome.row.output or None}
    if outcome.task_id:
        entry["task_id"] = outcome.task_id
    if outcome.message:
        entry["message"] = outcome.message
    if outcome.state in ("failed", "invalid", "interrupted"):
        entry.update(kind=outcome.kind, exit_code=outcome.exit_code)
    return entry
