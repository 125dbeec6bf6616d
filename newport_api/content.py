"""Content keys: what makes two inputs the same, from the files the artist chose, never from a cut.

bpy-free and thread-safe, so a worker thread can hash a multi-GB source while Blender's
main thread stays responsive. A file's hash is remembered while its path, size and
modification time (in nanoseconds) are unchanged, so asking again costs one ``stat``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping

BLOCK = 1 << 20
# Bumped whenever a cut of the same selection would come out different (cached cuts are keyed by it).
CUT_VERSION = 2


@functools.lru_cache(maxsize=512)
def _file_sha256(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (hex), cached by (path, size, mtime_ns); raises OSError."""
    path = os.path.abspath(path)
    status = os.stat(path)
    return _file_sha256(path, status.st_size, status.st_mtime_ns)


def selection_key(paths: Iterable[str], selection: Mapping[str, object]) -> str:
    """The key of a selection from files: their contents in order, and what is taken from them.

    ``selection`` is plain JSON data (a frame range, a size, a colour space...). The paths'
    names do not count: a renamed or moved file is still the same input.
    """
    identity = {"files": [file_sha256(path) for path in paths], "selection": dict(selection),
                "cut_version": CUT_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
