# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking Face for Blender: lip-sync a movie strip to new audio with Newport AI.

The package is split so that the Blender side and the service side stay apart:
``newport_api`` knows nothing of Blender, ``operators`` is the main-thread glue
with ``bpy``, and ``ui`` holds panels, preferences and properties.

The Blender modules are imported in ``register()`` so that this package can be
imported without Blender (the test runner and ``python -m newport_api`` do).
"""


def register() -> None:
    from . import operators, ui

    ui.register()
    operators.register()


def unregister() -> None:
    from . import operators, ui

    operators.unregister()
    ui.unregister()
