"""Panels, preferences and properties of the Talking Face extension."""

_CLASSES: tuple[type, ...] = ()


def register() -> None:
    import bpy

    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    import bpy

    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
