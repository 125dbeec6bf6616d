"""Shared fixtures for the bpy-free tests: a real sandbox on 127.0.0.1 and sample files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from newport_api import NewportClient
from newport_api.http import RetryPolicy, Timeouts
from newport_api.sandbox import Sandbox

API_KEY = "sk-test-0123456789abcdef"
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05, max_retry_after=2.0)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(processing_seconds=0.3, queued_seconds=0.1) as server:
        yield server


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[NewportClient]:
    with NewportClient(API_KEY, sandbox.base_url, retry=FAST_RETRY, timeouts=Timeouts(5, 5)) as newport:
        yield newport


def write_bytes(path: Path, size: int, seed: int = 7) -> Path:
    """A file of ``size`` deterministic, non-repeating-looking bytes."""
    block = bytes((seed * 31 + i * 17) % 251 for i in range(4096))
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            piece = block[: min(len(block), remaining)]
            out.write(piece)
            remaining -= len(piece)
    return path


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    return write_bytes(tmp_path / "source take.mp4", 3 * 1024 * 1024 + 123, seed=1)


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    return write_bytes(tmp_path / "speech.wav", 200 * 1024 + 5, seed=2)


def assert_no_key_anywhere(sandbox: Sandbox) -> None:
    """The key reaches the API origin only, in the Authorization header only."""
    for request in sandbox.requests:
        if request.role != "api":
            assert request.authorization is None, request
            assert API_KEY not in repr(request.headers)
        assert API_KEY not in repr(request.body or "")
        assert API_KEY not in request.path + request.query


def env_with_key(**extra: str) -> dict[str, str]:
    env = dict(os.environ, NEWPORT_API_KEY=API_KEY, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.update(extra)
    return env


# --- the fault matrix's report (tests/test_fault_matrix.py fills it) ------------------------------------

FAULT_MATRIX = pytest.StashKey[list]()
MATRIX_MARKS = {"completed": "C", "failed correctly": "F", "wrong": "X"}


@pytest.fixture(scope="session")
def fault_matrix_report(request: pytest.FixtureRequest) -> list[dict]:
    """Where each fault-matrix case leaves {phase, fault, variant, verdict, problems}."""
    return request.config.stash.setdefault(FAULT_MATRIX, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    results = config.stash.get(FAULT_MATRIX, None)
    if not results:
        return
    write = terminalreporter.write_line
    counts = {verdict: sum(1 for r in results if r["verdict"] == verdict) for verdict in MATRIX_MARKS}
    terminalreporter.section("fault matrix")
    write(f"fault matrix: {len(results)} cases tried, {counts['completed']} completed, "
          f"{counts['failed correctly']} failed correctly, {counts['wrong']} wrong")
    phases = list(dict.fromkeys(r["phase"] for r in results))
    faults = list(dict.fromkeys(r["fault"] for r in results))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in results:
        cells.setdefault((r["fault"], r["phase"]), {})[r["variant"]] = MATRIX_MARKS[r["verdict"]]
    write("cell = once/forever: C completed, F failed correctly, X wrong, . not run")
    write(f"{'':<16}" + "".join(f"{phase:>10}" for phase in phases))
    for fault in faults:
        row = []
        for phase in phases:
            cell = cells.get((fault, phase))
            row.append(f"{cell.get('once', '.')}/{cell.get('forever', '.')}" if cell else "-")
        write(f"{fault:<16}" + "".join(f"{text:>10}" for text in row))
    for r in results:
        if r["verdict"] == "wrong":
            write(f"WRONG {r['phase']}/{r['fault']}/{r['variant']}: {'; '.join(r['problems'])}")
