"""Run every benchmark side by side with its reference tool; print one table, write BENCHMARKS.md.

Run it through ``python3 tools/dev.py bench``: that sets up the newest bpy venv, builds
the extension zip and runs this file in that venv with ``TALKING_FACE_ZIP`` set.
This file then installs curl and ffmpeg if they are missing, makes (or reuses) the
cached inputs, and measures:

1. ``tick_cost``    main-thread cost of one controller tick with 1, 20, 100 busy jobs; memory growth
2. ``transfer``     1 GiB up and down, NewportClient vs curl, and its memory growth
3. ``prepare_cut``  10 s and 60 s cuts at 1080p, prepare_video vs ffmpeg
4. ``end_to_end``   Generate to strip for ~100 MiB, minus curl's raw transfer time
5. ``polling``      requests per job-minute while processing (runs alongside the rest)
6. ``batch``        a 500-shot talking_face_batch vs the command line's batch; submits, memory growth

Everything talks to sandboxes on 127.0.0.1 only.  ``--only`` runs some rows and
prints them without writing BENCHMARKS.md (which always holds a complete run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import batch_scale
import end_to_end
import fixtures
import polling
import prepare_cut
import report
import tick_cost
import transfer
from common import LOOPBACK_ONLY, REPO_ROOT, BenchError, Row, say
from setup_tools import ensure_tools

ROWS = ("tick", "transfer", "prepare", "e2e", "poll", "batch")
NO_FIXTURES = {"poll", "batch"}  # rows that make their own inputs (the cached ones take minutes the first time)
COMMAND = "python3 tools/dev.py bench"


def measured(name: str, measure: Callable[[], list[Row]]) -> list[Row]:
    """One measurement's rows; a failure becomes a row that says so, and the run goes on."""
    say(f"{name}: start")
    started = time.monotonic()
    try:
        rows = measure()
    except (BenchError, OSError, RuntimeError, ValueError, KeyError) as error:
        say(f"{name}: FAILED: {error}")
        return [Row(f"{name}: could not be measured", f"{type(error).__name__}: {str(error)[:200]}",
                    "—", "—", "—", False)]
    say(f"{name}: done in {time.monotonic() - started:.0f} s")
    for row in rows:
        say(f"  {row.what}: {row.ours} | {row.reference} | {row.ratio} | {row.verdict}")
    return rows


def run(selected: list[str], work: Path) -> list[Row]:
    inputs = fixtures.prepare() if set(selected) - NO_FIXTURES else None
    probe = polling.PollingProbe().start() if "poll" in selected else None
    steps: dict[str, Callable[[], list[Row]]] = {
        "tick": lambda: tick_cost.measure(inputs.e2e_clip, inputs.line_wav),
        "transfer": lambda: transfer.measure(inputs.transfer_file),
        "prepare": lambda: prepare_cut.measure(inputs.long_clip),
        "e2e": lambda: end_to_end.measure(inputs.e2e_clip, inputs.line_wav, work),
    }
    rows = [row for name in ROWS if name in steps and name in selected for row in measured(name, steps[name])]
    if probe is not None:
        rows += measured("poll", probe.finish)
    if "batch" in selected:  # after the polling probe: its 500 jobs would crowd the probe's sandbox
        rows += measured("batch", lambda: batch_scale.measure(work))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated rows to run, of {','.join(ROWS)} (no BENCHMARKS.md)")
    args = parser.parse_args(argv)
    selected = args.only.split(",") if args.only else list(ROWS)
    if unknown := set(selected) - set(ROWS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    os.environ.update(LOOPBACK_ONLY)
    sys.path.insert(0, str(REPO_ROOT))  # the bpy-free newport_api: sandboxes, the transfer client
    started, load_before = time.time(), os.getloadavg()[0]
    try:
        ensure_tools()
        with tempfile.TemporaryDirectory(prefix="talking_face_bench_") as work:
            rows = run(selected, Path(work))
    except BenchError as error:
        say(f"error: {error}")
        return 1
    info = report.RunInfo(started, time.time() - started, load_before, os.getloadavg()[0],
                          report.blender_version(), COMMAND, fixtures.commands())
    print("\n" + report.table(rows) + "\n", flush=True)
    if args.only:
        say("--only: BENCHMARKS.md left as it was")
    else:
        report.write(rows, info, REPO_ROOT / "BENCHMARKS.md")
        say(f"wrote BENCHMARKS.md ({info.seconds / 60:.1f} min)")
    return 0 if all(not row.what.endswith("could not be measured") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
