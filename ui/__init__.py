"""Panels, preferences and properties of the Talking Face extension."""

from __future__ import annotations

from . import panel, preferences, properties

_MODULES = (properties, preferences, panel)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
