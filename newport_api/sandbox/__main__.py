"""Command line: ``python -m newport_api.sandbox`` runs the sandbox until SIGINT or SIGTERM.

The first line on stdout is exactly ``Newport sandbox: <base_url>`` (flushed),
so a parent process can read the API origin; the other origins go to stderr.

Threading: the main thread only waits for a signal; the sandbox serves on its
own daemon threads.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .faults import FAULTS, PHASES
from .sandbox import Sandbox

RESULT_NOTE = ("The sandbox does not lip-sync: a successful task's result video is the uploaded source "
               "video, byte for byte unchanged.")


def _fault_help() -> str:
    lines = [RESULT_NOTE, "", f"phases: {', '.join(PHASES)}", "",
             "faults (--fault phase:fault[:times[:option=value,...]]; times 'forever' never runs out):"]
    for name, spec in FAULTS.items():
        phases = ", ".join(phase for phase in PHASES if phase in spec.phases)
        if len(spec.phases) == len(PHASES):
            phases = "all phases"
        lines.append(f"  {name:<15} [{phases}]\n      {spec.description}")
    lines += ["", "examples:", "  --fault poll:task_failed", "  --fault submit:http_429:2:retry_after=3",
              "  --fault download:slow:forever:bytes_per_second=65536"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m newport_api.sandbox", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A local Newport AI Talking Face sandbox on 127.0.0.1 (API, storage and cdn origins).",
        epilog=_fault_help())
    parser.add_argument("--port", type=int, default=0,
                        help="API port (0: a free one); storage and cdn always take free ports")
    parser.add_argument("--processing-seconds", type=float, default=2.0,
                        help="time a task spends in status 2")
    parser.add_argument("--queued-seconds", type=float, default=0.0, help="time a task spends in status 1")
    parser.add_argument("--key", action="append", dest="keys", metavar="sk-...",
                        help="a valid API key (repeatable); default: any key starting with sk-")
    parser.add_argument("--credits", type=float, default=1000.0, help="what /api/remaining_credits reports")
    parser.add_argument("--policy-shape", choices=("classic", "new"), default="classic",
                        help="'new' also hands out key and OSSAccessKeyId with the upload policy")
    parser.add_argument("--result-ttl-seconds", type=float, default=86400.0,
                        help="result lifetime after success")
    parser.add_argument("--upload-ttl-seconds", type=float, default=86400.0,
                        help="lifetime of uploaded files")
    parser.add_argument("--storage-dir", help="keep uploads here (default: a temp dir removed on exit)")
    parser.add_argument("--fault", action="append", default=[], metavar="PHASE:FAULT[:TIMES[:OPT=VAL,...]]",
                        help="inject a fault at start (repeatable); see below")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def parse_fault(text: str) -> tuple[str, str, int | None, dict[str, Any]]:
    parts = text.split(":", 3)
    if len(parts) < 2:
        raise ValueError(f"--fault wants phase:fault[:times[:option=value,...]], not {text!r}")
    phase, name = parts[0], parts[1]
    times_text = parts[2] if len(parts) > 2 and parts[2] else "1"
    times = None if times_text in ("forever", "inf", "*") else int(times_text)
    options: dict[str, Any] = {}
    for pair in filter(None, parts[3].split(",") if len(parts) > 3 else []):
        option, _, raw = pair.partition("=")
        try:
            options[option] = json.loads(raw)
        except ValueError:
            options[option] = raw  # a bare word, e.g. reason=bad
    return phase, name, times, options


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    sandbox = Sandbox(
        processing_seconds=arguments.processing_seconds, queued_seconds=arguments.queued_seconds,
        api_keys=arguments.keys, result_ttl_seconds=arguments.result_ttl_seconds,
        upload_ttl_seconds=arguments.upload_ttl_seconds, credits=arguments.credits,
        policy_shape=arguments.policy_shape, storage_dir=arguments.storage_dir, port=arguments.port,
        verbose=arguments.verbose)
    try:
        for text in arguments.fault:
            phase, name, times, options = parse_fault(text)
            sandbox.inject(phase, name, times, **options)
    except ValueError as error:
        parser.error(str(error))
    stop_requested = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    with sandbox:
        print(f"Newport sandbox: {sandbox.base_url}", flush=True)
        print(f"storage: {sandbox.storage_origin}  cdn: {sandbox.cdn_origin}", file=sys.stderr, flush=True)
        while not stop_requested.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
