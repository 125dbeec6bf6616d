"""Main-thread glue between Blender and the bpy-free ``newport_api`` package."""

_CLASSES: tuple[type, ...] = ()


def register() -> None:
    import bpy

    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    import bpy

    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
