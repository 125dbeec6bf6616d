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
