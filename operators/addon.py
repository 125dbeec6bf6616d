"""The extension itself: its package name, its user folder, its preferences and the service's credentials.

Read on the main thread. Every other module of ``operators`` may build on this one; it
builds on none of them, so nothing needs a late import to reach the preferences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..newport_api import NewportClient
from ..newport_api.cancel import CancelToken
from ..newport_api.errors import NewportError
from ..newport_api.http import Timeouts, check_base_url

ADDON_PACKAGE = __package__.rpartition(".")[0]
ENV_API_KEY = "NEWPORT_API_KEY"
DEFAULT_PARALLEL_JOBS = 3


@dataclass(frozen=True)
class Credentials:
    """What a worker needs to talk to the service, read from preferences on the main thread."""

    api_key: str
    base_url: str
    ca_bundle: str = ""

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, api_key=<hidden>)"

    def make_client(self, cancel: CancelToken | None = None) -> NewportClient:
        return NewportClient(self.api_key, self.base_url, ca_bundle=self.ca_bundle or None,
                             cancel=cancel or CancelToken(), timeouts=Timeouts())


def user_folder(*parts: str) -> Path:
    """A folder under the extension's user directory (never inside the extension itself)."""
    return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=os.path.join(*parts), create=True))


def preferences() -> bpy.types.AddonPreferences | None:
    addon = bpy.context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


def preferred_parallel_jobs() -> int:
    prefs = preferences()
    return int(getattr(prefs, "max_parallel_jobs", DEFAULT_PARALLEL_JOBS)) if prefs else DEFAULT_PARALLEL_JOBS


def key_source() -> str:
    """'environment', 'preferences' or '' — the environment wins when both are set."""
    if os.environ.get(ENV_API_KEY, "").strip():
        return "environment"
    prefs = preferences()
    return "preferences" if prefs and prefs.api_key.strip() else ""


def credentials() -> Credentials:
    prefs = preferences()
    key = os.environ.get(ENV_API_KEY, "").strip() or (prefs.api_key.strip() if prefs else "")
    base_url = prefs.base_url.strip() if prefs else ""
    ca_bundle = bpy.path.abspath(prefs.ca_bundle) if prefs and prefs.ca_bundle else ""
    return Credentials(api_key=key, base_url=base_url or "https://api.newportai.com", ca_bundle=ca_bundle)


def network_blocking_reason() -> str | None:
    """Why no request may be sent right now, or None."""
    if not bpy.app.online_access:
        return "Online access is off — allow it in Preferences ▸ System ▸ Network."
    if not key_source():
        return "Add your Newport AI API key in Preferences ▸ Add-ons ▸ Talking Face."
    try:
        check_base_url(credentials().base_url)
    except NewportError as error:
        return str(error)
    return None
