"""Every shell command the README shows runs as written, against the sandbox.

The ``sh`` blocks of README.md run in order, as one bash script (``set -euo pipefail``),
in a scratch folder holding the files they name (``take.mp4``, ``line.wav``,
``vocals.wav``, made by ffmpeg), with ``NEWPORT_BASE_URL`` pointing at a sandbox on
127.0.0.1 (as the README says to do) and ``python`` meaning this interpreter.  The
sandbox's request log and the files written are the oracle.

The only lines not run are the README's ``python3 tools/dev.py`` commands that set up
and run everything else (``demo``, ``test``, and ``bench``, a benchmark of several minutes
that is not a test): each of those is checked to be a real ``dev.py`` subcommand instead.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_media import FFMPEG, NO_FFMPEG, write_movie, write_tone
from conftest import API_KEY

from newport_api.sandbox import Sandbox

REPO_ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
RUN_ELSEWHERE = re.compile(r"^python3 tools/dev\.py (demo|test|bench)\b")
REASON = {"demo": "dev.py test runs it as a step of its own, as written",
          "test": "the whole suite, which includes this test",
          "bench": "benchmarks are not tests (minutes of timing, written to BENCHMARKS.md)"}


def sh_blocks() -> list[str]:
    return FENCE.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


def split_commands(block: str) -> list[str]:
    """The block's commands, with backslash-continued lines joined."""
    return [command for command in block.replace("\\\n", " ").splitlines() if command.strip()]


def test_the_readme_has_command_line_examples() -> None:
    commands = [command for block in sh_blocks() for command in split_commands(block)]
    assert any(command.startswith("python -m newport_api talking-face") for command in commands)
    assert any(command.startswith("python -m newport_api.sandbox --help") for command in commands)


@pytest.mark.skipif(not FFMPEG, reason=NO_FFMPEG)
def test_every_readme_shell_command_runs_against_the_sandbox(tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    make_media(work)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(sys.executable)
    script, skipped = ["set -euo pipefail"], []
    for command in (command for block in sh_blocks() for command in split_commands(block)):
        if RUN_ELSEWHERE.match(command):
            skipped.append(shlex.split(command, comments=True)[2:])  # the dev.py arguments
            continue
        script.append(command)
    with Sandbox(processing_seconds=0.3) as sandbox:
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "PYTHONPATH": str(REPO_ROOT), "NEWPORT_BASE_URL": sandbox.base_url,
               "NEWPORT_API_KEY": API_KEY, "TALKING_FACE_STATE_DIR": str(tmp_path / "state")}
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        submitted = sandbox.count("submit")
    source = (work / "take.mp4").read_bytes()
    for result in ("result.mp4", "take-hd.mp4", "take-hd-copy.mp4", "dub/take-line.mp4", "dub/take-vocals.mp4"):
        assert (work / result).read_bytes() == source, result  # the sandbox's "result" is the source
    assert submitted == 4, "each talking-face example and batch row submits once; status and download nothing"
    assert "--fault" in done.stdout  # the sandbox's --help, with its fault list
    for arguments in skipped:  # dev.py parses the line as written: a misspelt option fails here
        check = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "dev.py"), *arguments, "--help"],
                               capture_output=True, text=True, timeout=60, check=False)
        assert check.returncode == 0, f"python3 tools/dev.py {' '.join(arguments)} is in the README but " \
                                      f"dev.py does not take it:\n{check.stderr}"
    with capsys.disabled():
        for arguments in skipped:
            print(f"\n  README: not run here: python3 tools/dev.py {' '.join(arguments)} — {REASON[arguments[0]]}")
    assert {arguments[0] for arguments in skipped} == {"bench", "demo", "test"}


def make_media(folder: Path) -> None:
    write_movie(folder / "take.mp4")
    write_tone(folder / "line.wav", 1.2)
    write_tone(folder / "vocals.wav", 1.2, frequency=330)
