"""Job records on disk: one JSON file per job, each written atomically.

A write goes to a temporary file in the same folder, is flushed to disk and
then renamed over the old record, so a crash leaves either the old record or
the new one, never half of each.  Records hold no API key (``JobRecord`` has
no field for it).  The store is safe to use from several threads.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from .jobs import JobRecord


class JobStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def path_for(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / f"{job_id}.json"

    def save(self, record: JobRecord) -> None:
        payload = json.dumps(record.to_dict(), indent=1, sort_keys=True).encode()
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".job-", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path_for(record.job_id))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def load(self, job_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_dict(json.loads(self.path_for(job_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None

    def load_all(self) -> list[JobRecord]:
        """Every readable record, oldest first; unreadable files are skipped, not deleted."""
        if not self.directory.is_dir():
            return []
        records = [self.load(path.stem) for path in self.directory.glob("*.json") if path.stem.isalnum()]
        return sorted((record for record in records if record), key=lambda record: record.created_at)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self.path_for(job_id).unlink(missing_ok=True)
