"""A bpy-free client of the Newport AI Talking Face API.

Everything under this package runs without Blender: the HTTP client, the
storage upload, the job state machine, the job store, the worker thread, the
local sandbox server and the command line (those two run from the source tree only:
the extension's zip leaves them out).
"""

from .cancel import CancelToken, StopReason
from .client import NewportClient
from .errors import NewportError
from .jobs import JobEvent, JobRecord, JobRunner, Phase, RunnerSettings
from .models import DEFAULT_BASE_URL, TalkingFaceRequest, TaskInfo, TaskStatus, estimate_credits
from .store import JobStore
from .worker import JobWorker

__all__ = [
    "DEFAULT_BASE_URL", "CancelToken", "JobEvent", "JobRecord", "JobRunner", "JobStore", "JobWorker",
    "NewportClient", "NewportError", "Phase", "RunnerSettings", "StopReason", "TalkingFaceRequest",
    "TaskInfo", "TaskStatus", "estimate_credits",
]
