# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking Face for Blender: lip-sync a movie strip to new audio with Newport AI.

The package is split so that the Blender side and the service side stay apart:
``newport_api`` knows nothing of Blender, ``operators`` is the main-thread glue
with ``bpy``, and ``ui`` holds panels, preferences and properties.
"""

from . import operators, ui


def register() -> None:
    ui.register()
    operators.register()


def unregister() -> None:
    operators.unregister()
    ui.unregister()
