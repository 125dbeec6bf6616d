"""Command line: ``python -m newport_api talking-face --video V --audio A -o OUT``.

The key comes from ``NEWPORT_API_KEY`` (never from an argument, which other
users of the machine could read in the process list).  Progress goes to
stderr; the exit status is 0 only when OUT is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import errors
from .cancel import CancelToken
from .client import NewportClient
from .http import check_ca_bundle
from .jobs import JobEvent, JobRecord, JobRunner, Phase, RunnerSettings
from .models import DEFAULT_BASE_URL

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m newport_api",
                                     description="Newport AI Talking Face from the command line.")
    parser.add_argument("--base-url", default=os.environ.get("NEWPORT_BASE_URL", DEFAULT_BASE_URL),
                        help="API base URL (default: $NEWPORT_BASE_URL or %(default)s)")
    parser.add_argument("--ca-bundle", help="a CA bundle to trust instead of the system's")
    commands = parser.add_subparsers(dest="command", required=True)

    job = commands.add_parser("talking-face", help="lip-sync a video to an audio file")
    job.add_argument("--video", required=True, help="source video: a local file or an http(s) URL")
    job.add_argument("--audio", required=True, help="audio to speak: a local file or an http(s) URL")
    job.add_argument("--vocals", default="", help="optional vocals-only audio that drives the mouth")
    job.add_argument("-o", "--output", required=True, help="where to write the result video")
    job.add_argument("--width", type=int, default=0, help="output width (0 keeps the source's)")
    job.add_argument("--height", type=int, default=0, help="output height (0 keeps the source's)")
    job.add_argument("--enhance", action="store_true", help="sharpen faces")
    job.add_argument("--fps", choices=("25", "original"), default="25",
                     help="output frame rate: 25 (default) or the source's ('original' costs fps/25 × more)")
    job.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)

    commands.add_parser("credits", help="show the account's remaining credits (checks the key)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = os.environ.get("NEWPORT_API_KEY", "")
    if not api_key:
        print("error: set NEWPORT_API_KEY to your Newport AI API key.", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_ca_bundle(args.ca_bundle)
        client = NewportClient(api_key, args.base_url, ca_bundle=args.ca_bundle, cancel=CancelToken())
    except errors.NewportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        if args.command == "credits":
            return show_credits(client)
        return run_talking_face(client, args)


def show_credits(client: NewportClient) -> int:
    try:
        credits = client.remaining_credits()
    except errors.NewportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("unknown (the service did not say)" if credits is None else f"{credits:g}")
    return EXIT_OK


def run_talking_face(client: NewportClient, args: argparse.Namespace) -> int:
    for source in (args.video, args.audio, args.vocals):
        if source and not source.startswith(("http://", "https://")) and not Path(source).is_file():
            print(f"error: '{source}' is not a file.", file=sys.stderr)
            return EXIT_USAGE
    record = JobRecord(video=args.video, audio=args.audio, vocals=args.vocals,
                       output_path=str(Path(args.output).resolve()), width=args.width, height=args.height,
                       enhance=args.enhance, fps_original=args.fps == "original")
    progress = ProgressLine(sys.stderr)
    runner = JobRunner(client, record, emit=progress.show,
                       settings=RunnerSettings(poll_interval=args.poll_interval))
    try:
        runner.run()
    except KeyboardInterrupt:
        client.cancel.cancel()
        progress.finish()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    progress.finish()
    if record.phase != Phase.DOWNLOADED:
        print(f"error: {record.error or record.message}", file=sys.stderr)
        return EXIT_FAILED
    print(record.output_path)
    return EXIT_OK


class ProgressLine:
    """One self-rewriting status line on a terminal; one line per phase elsewhere."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._last_phase = ""

    def show(self, event: JobEvent) -> None:
        elapsed = time.monotonic() - self.started
        text = f"{Phase(event.phase).label:<16} {bar(event.progress)} {elapsed:6.1f}s  {event.message}"
        if self.interactive:
            self.stream.write("\r" + text[:100].ljust(100))
        elif event.phase != self._last_phase:
            self.stream.write(text + "\n")
        self._last_phase = event.phase
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def bar(fraction: float | None, width: int = 24) -> str:
    if fraction is None:
        return "[" + " " * width + "]     "
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:3.0f}%"
