"""A local sandbox of the Newport AI Talking Face service, for tests and demos (contract section 6).

``Sandbox`` runs three HTTP listeners on 127.0.0.1, each on its own free port,
like the real service's three hosts:

* the API origin (``base_url``): get_policy, policy_upload_finish, talking_face,
  getAsyncResult and remaining_credits, with the real paths, envelopes and key
  checks, plus the ``/_sandbox/`` control endpoints for out-of-process tests;
* the storage origin (``storage_origin``): an OSS-like PostObject target that
  streams uploads to disk and serves them back via pre-signed URLs;
* the cdn origin (``cdn_origin``): where result videos are served.

The sandbox does not lip-sync: a task's result video is the uploaded source
video, byte for byte unchanged, available once the task reaches status 3.

Faults are injected per phase with ``Sandbox.inject(phase, fault, times, **options)``;
``faults.FAULTS`` lists them. Every request is recorded (``Sandbox.requests``).

Only the standard library is used, and nothing here imports ``bpy``.

Threading: all public methods of ``Sandbox`` are thread-safe; see sandbox.py.
Listeners and connection handlers run on daemon threads; stop() breaks open
connections and ends stalled or throttled handlers promptly.
"""

from .faults import FAULTS, PHASES
from .recording import RecordedRequest
from .sandbox import Sandbox

__all__ = ["FAULTS", "PHASES", "RecordedRequest", "Sandbox"]
