"""Main-thread glue between Blender and the bpy-free ``newport_api`` package."""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import addon, batch, controller, jobs_ops, placement, take_ops

_CLASSES = jobs_ops.CLASSES + batch.CLASSES + take_ops.CLASSES


@persistent
def _resume_after_load(_filepath: str = "", *_args: object) -> None:
    """Unfinished jobs of the file just opened continue by themselves (with a window).

    So do results placed by a session that ended before saving the file (``lost_placements``):
    they are placed again, even offline.
    """
    active = controller.get_controller()
    active.forget_unsaved_placements()
    if bpy.app.background:
        return  # pipelines call bpy.ops.sequencer.talking_face_resume() when they want it
    active.reload()
    if active.jobs_owned_elsewhere():  # shown as running elsewhere, taken over if that Blender goes
        jobs_ops.ensure_monitor()
    if active.lost_placements() or (active.unfinished_jobs() and addon.network_blocking_reason() is None):
        # Work that may start jobs waits for the next idle moment, outside the file-loading handler.
        bpy.app.timers.register(_resume_now, first_interval=0.1)


def _resume_now() -> None:
    active = controller.get_controller()
    if addon.network_blocking_reason() is None:
        active.resume(addon.credentials())
        jobs_ops.ensure_monitor()
    else:
        active.place_lost()


_path_before_save = [""]


@persistent
def _remember_path_before_save(filepath: str = "", *_args: object) -> None:
    _path_before_save[0] = bpy.data.filepath
    if not bpy.data.filepath and filepath:
        # A first save: results kept in the extension's user folder (which Blender deletes with the
        # extension) move beside the .blend, and the strips point there, relative to it.
        moved = placement.move_results_next_to(filepath, str(addon.user_folder("results")))
        controller.get_controller().results_moved(moved)


@persistent
def _adopt_jobs_after_save(*_args: object) -> None:
    active = controller.get_controller()
    if _path_before_save[0] != bpy.data.filepath:
        active.adopt_saved_file(_path_before_save[0], bpy.data.filepath)
    active.placements_saved(_path_before_save[0], bpy.data.filepath)


_HANDLERS = (
    (bpy.app.handlers.load_post, _resume_after_load),
    (bpy.app.handlers.save_pre, _remember_path_before_save),
    (bpy.app.handlers.save_post, _adopt_jobs_after_save),
)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    for handlers, handler in _HANDLERS:
        handlers.append(handler)
    if not bpy.app.background:
        # Blender runs register() with bpy.data restricted (start-up, Preferences ▸ Enable): the open
        # file's jobs are looked at from a timer, once the event loop runs. Enabling mid-session this
        # picks up jobs a previous disable left behind; at start-up load_post does it as well.
        bpy.app.timers.register(_resume_after_load, first_interval=0.0)


def unregister() -> None:
    for handlers, handler in _HANDLERS:
        if handler in handlers:
            handlers.remove(handler)
    for timer in (_resume_after_load, _resume_now):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    jobs_ops.stop_monitor()
    controller.discard_controller()  # workers stop; their records keep the phase for next time
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
