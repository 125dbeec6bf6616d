"""The artist's workflow in real Blender, through the installed extension, against the sandbox.

Background mode (the bpy module) runs Generate synchronously; the modal path is
driven here by calling the controller's ``tick()`` the way the modal timer does.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips

from newport_api.sandbox import Sandbox  # the source tree's: the artist's zip has no sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-workflow-test-7f3a9c1e5b"
MOVIE_FRAMES = 40


@pytest.fixture(scope="module")
def movie(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("media")
    return sample_media.make_movie(extension.operators.compat, folder / "take.mp4", frames=MOVIE_FRAMES)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return sample_media.write_sine_wav(tmp_path_factory.mktemp("audio") / "line.wav", seconds=1.2)


@pytest.fixture
def sandbox(extension: ModuleType):
    with Sandbox(processing_seconds=0.2, queued_seconds=0.05) as server:
        yield server


@pytest.fixture
def prefs(extension: ModuleType, sandbox, tmp_path: pathlib.Path):
    preferences = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    preferences.api_key = API_KEY
    preferences.base_url = sandbox.base_url
    preferences.output_dir = str(tmp_path / "results")
    bpy.context.preferences.system.use_online_access = True
    yield preferences
    # Fetched again: a test that disables and enables the extension frees the old preferences.
    addon = bpy.context.preferences.addons.get(EXTENSION_MODULE)
    if addon is not None:
        addon.preferences.api_key = ""


@pytest.fixture
def scene(extension: ModuleType, movie: pathlib.Path, speech: pathlib.Path, prefs):
    """A fresh scene with the movie at frame 11 (trimmed by nothing) and the speech as a file."""
    compat = extension.operators.compat
    previous = bpy.context.window.scene
    fresh = bpy.data.scenes.new("workflow")
    compat.set_scene_fps(fresh, 25)
    bpy.context.window.scene = fresh
    compat.ensure_editor(fresh)
    strip = compat.new_movie(fresh, "Take 3", str(movie), channel=2, frame_start=11)
    fresh.sequence_editor.active_strip = strip
    settings = fresh.talking_face
    settings.audio_source = "FILE"
    settings.audio_file = str(speech)
    settings.regenerate = True  # every test pays for its own job unless it tests reuse
    yield fresh
    bpy.context.window.scene = previous  # the scene is kept, not removed: see conftest.KEEP_SCENES_NOTE


def controller(extension: ModuleType):
    return extension.operators.controller.get_controller()


def imported_strips(extension: ModuleType, scene, job_id: str) -> list:
    compat = extension.operators.compat
    return [strip for strip in compat.all_strips(scene) if strip.get("talking_face_job") == job_id]


def newest_job(extension: ModuleType):
    return max(controller(extension).views.values(), key=lambda record: record.created_at)


def tick_until(extension: ModuleType, predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controller(extension).tick()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_generate_places_the_result_above_the_source(extension, scene, sandbox, movie, capsys):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    record = newest_job(extension)
    assert record.phase.value == "done", record.error
    [result] = [strip for strip in imported_strips(extension, scene, record.job_id)
                if extension.operators.compat.is_movie(strip)]
    assert pathlib.Path(bpy.path.abspath(result.filepath)) == pathlib.Path(record.output_path)
    assert pathlib.Path(record.output_path).read_bytes() == movie.read_bytes()  # the sandbox echoes the source
    source = extension.operators.compat.all_strips(scene)["Take 3"]
    assert result.channel > source.channel
    assert result.frame_final_start == source.frame_final_start == 11
    assert scene.sequence_editor.active_strip == result and result.select
    assert sandbox.count("submit") == 1
    printed = capsys.readouterr().out
    for phase in ("Uploading", "Submitting", "Downloading", "Done"):
        assert f": {phase}" in printed


def test_generating_again_reuses_the_paid_result_as_a_new_job(extension, scene, sandbox):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    first = newest_job(extension)
    requests_after_first = len(sandbox.requests)
    scene.talking_face.regenerate = False  # the default
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    second = newest_job(extension)
    assert first.job_id != second.job_id
    assert second.owner["reused_from"] == first.job_id
    assert sandbox.count("submit") == 1
    assert len(sandbox.requests) == requests_after_first, "an identical job sends nothing"
    controller(extension).place(first)  # placing a finished job again must not duplicate it
    for record in (first, second):
        movies = [s for s in imported_strips(extension, scene, record.job_id)
                  if extension.operators.compat.is_movie(s)]
        assert len(movies) == 1


def test_generate_again_pays_for_a_new_result_reusing_valid_uploads(extension, scene, sandbox):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    assert sandbox.count("submit") == 2
    assert sandbox.count("storage") == 2, "the second job reuses the first one's uploads"


def test_generate_with_a_sound_strip(extension, scene, sandbox, speech):
    compat = extension.operators.compat
    sound_strips.add_sound_strip(compat, scene, "New line", speech, channel=1, frame_start=11)
    scene.talking_face.audio_source = "STRIP"
    scene.talking_face.audio_strip = "New line"
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    record = newest_job(extension)
    assert abs(record.owner["audio_seconds"] - 1.2) < 0.01, "the strip's sound as sent"
    strips = imported_strips(extension, scene, record.job_id)
    # Blender without Audaspace (the 4.2 wheels) cannot hold a sound strip: the picture lands alone.
    assert any(compat.is_sound(strip) for strip in strips) == compat.has_audio_support()
    sources = [compat.all_strips(scene)["Take 3"], compat.all_strips(scene)["New line"]]
    assert all(strip.mute for strip in sources), "sources are muted after import by default"
    assert min(strip.channel for strip in strips) > max(strip.channel for strip in sources)


def test_the_saved_blend_never_contains_the_key(extension, scene, sandbox, tmp_path):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    path = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, compress=False)
    assert API_KEY.encode() not in path.read_bytes()
    for job_file in controller(extension).store.directory.iterdir():
        assert API_KEY not in job_file.read_text()


def test_with_online_access_off_generate_is_refused_and_nothing_is_sent(extension, scene, sandbox):
    bpy.context.preferences.system.use_online_access = False
    try:
        assert bpy.ops.sequencer.talking_face_generate.poll() is False
        with pytest.raises(RuntimeError, match="Online access is off"):
            bpy.ops.sequencer.talking_face_generate()
    finally:
        bpy.context.preferences.system.use_online_access = True
    assert sandbox.requests == []


@pytest.mark.parametrize("setting,reason", [
    ("no_key", "Add your Newport AI API key"),
    ("no_audio", "Pick the audio to speak"),
    ("missing_audio", "does not exist"),
    ("no_strip", "Select a movie strip"),
])
def test_generate_says_why_it_cannot_run(extension, scene, prefs, setting, reason):
    if setting == "no_key":
        prefs.api_key = ""
    elif setting == "no_audio":
        scene.talking_face.audio_file = ""
    elif setting == "missing_audio":
        scene.talking_face.audio_file = "/nonexistent/line.wav"
    elif setting == "no_strip":
        scene.sequence_editor.active_strip = None
    assert reason in extension.operators.job_setup.blocking_reason(bpy.context)
    with pytest.raises(RuntimeError, match=reason):
        bpy.ops.sequencer.talking_face_generate()


def test_the_modal_path_runs_jobs_in_threads_and_imports_on_tick(extension, scene, sandbox):
    started = time.monotonic()
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    assert time.monotonic() - started < 2.0, "Generate must return at once"
    record_id = newest_job(extension).job_id
    assert tick_until(extension, lambda: controller(extension).views[record_id].phase.value == "done")
    assert imported_strips(extension, scene, record_id)
    assert not controller(extension).tick(), "nothing left to do: the monitor may stop"


def test_the_sidebar_shows_each_jobs_latest_progress_and_redraws_only_when_a_job_moved(extension, tmp_path):
    api = extension.newport_api
    jobs = extension.operators.controller.JobController(api.JobStore(tmp_path / "jobs"))
    redraws: list[bool] = []
    jobs.on_redraw = lambda: redraws.append(True)
    record = api.JobRecord(video="take.mp4", audio="line.wav", output_path=str(tmp_path / "take TF.mp4"))
    record.set_phase(api.Phase.UPLOADING, "Uploading the video")

    def snapshot(**changes) -> object:
        changed = api.JobRecord.from_dict({**record.to_dict(), **changes})
        return api.JobEvent(record.job_id, changed.phase.value, changed.message, changed.progress,
                            changed.to_dict(), updated_at=changed.updated_at)

    def progress(phase: str, fraction: float, message: str) -> object:
        return api.JobEvent(record.job_id, phase, message, fraction, None, updated_at=record.updated_at + 1)

    jobs.worker.publish(snapshot())  # what a job's thread does (its runner's emit)
    jobs.tick()
    view = jobs.views[record.job_id]
    assert (view.phase, jobs.progress_of(view)) == (api.Phase.UPLOADING, (None, "Uploading the video"))

    redraws.clear()
    jobs.worker.publish(progress("uploading", 0.25, "Uploading the video"))
    jobs.worker.publish(progress("uploading", 0.5, "Uploading the audio"))
    jobs.tick()
    assert jobs.views[record.job_id] is view, "progress does not replace the view"
    assert jobs.progress_of(view) == (0.5, "Uploading the audio"), "the latest progress shows"
    assert redraws == [True], "the sidebar redraws once to show it"
    jobs.tick()
    assert redraws == [True], "no progress since: no redraw"

    # In one tick: a phase change (snapshot), then progress in the new phase — both show.
    jobs.worker.publish(snapshot(phase="submitting", message="Submitting", progress=None))
    jobs.worker.publish(progress("submitting", 0.75, "Submitting"))
    jobs.tick()
    latest = jobs.views[record.job_id]
    assert (latest.phase, jobs.progress_of(latest)) == (api.Phase.SUBMITTING, (0.75, "Submitting"))
    # Progress of the old phase followed by a phase change in one tick: the later snapshot wins.
    jobs.worker.publish(progress("submitting", 0.9, "Submitting"))
    jobs.worker.publish(snapshot(phase="queued", message="Waiting in queue", progress=None))
    jobs.tick()
    latest = jobs.views[record.job_id]
    assert (latest.phase, jobs.progress_of(latest)) == (api.Phase.QUEUED, (None, "Waiting in queue"))
    # Progress of a phase whose snapshot this Blender has not drained yet stays out of the older view.
    jobs.worker.publish(progress("downloading", 0.1, "Downloading the result"))
    assert jobs.progress_of(latest) == (None, "Waiting in queue")


OWNER_SCRIPT = """
import sys
from newport_api import JobStore, Phase
store = JobStore(sys.argv[1])
assert store.claim(sys.argv[2])
print("claimed", flush=True)
for line in sys.stdin:  # each line: a phase to save, as the owner's runner would
    record = store.load(sys.argv[2])
    record.set_phase(Phase(line.strip()), "saved by the owner: " + line.strip())
    store.save(record)
    print("saved", flush=True)
"""


def test_the_view_of_a_job_another_process_runs_follows_each_phase_its_owner_saves(extension, tmp_path):
    """The watch re-reads a watched job's record only when its file changed, and never misses a change."""
    api, controller_module = extension.newport_api, extension.operators.controller
    store = api.JobStore(tmp_path / "jobs")
    record = api.JobRecord(video="take.mp4", audio="line.wav", output_path=str(tmp_path / "take TF.mp4"))
    record.owner["blend_file"] = bpy.data.filepath
    record.set_phase(api.Phase.QUEUED)
    store.save(record)
    repo_root = pathlib.Path(__file__).resolve().parents[2]
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(tmp_path / "jobs"), record.job_id],
                             cwd=repo_root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "claimed"
        jobs = controller_module.JobController(store)
        assert jobs.watching_other_blenders(), "the other process owns the job"
        never_used = controller_module.Credentials(api_key="", base_url="http://127.0.0.1:9")
        shown = []
        for phase in ("processing", "processing", "downloading", "downloaded"):
            owner.stdin.write(phase + "\n")
            owner.stdin.flush()
            assert owner.stdout.readline().strip() == "saved"
            assert jobs.take_over_abandoned(never_used) == [], "its owner still runs it"
            assert jobs.take_over_abandoned(never_used) == []  # unchanged file: the view stays as it is
            view = jobs.views[record.job_id]
            shown.append((view.phase.value, view.message))
        assert shown == [(phase, f"saved by the owner: {phase}")
                         for phase in ("processing", "processing", "downloading", "downloaded")]
        assert jobs.views[record.job_id] == store.load(record.job_id)
    finally:
        owner.stdin.close()
        owner.wait(timeout=10)


@pytest.mark.parametrize("phase,fault,options", [
    ("uploading", ("storage", "slow"), {"bytes_per_second": 20_000}),
    ("queued", ("poll", "status0"), {}),
])
def test_cancel_mid_job_imports_nothing(extension, scene, sandbox, phase, fault, options):
    sandbox.inject(*fault, times=None, **options)
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    job_id = newest_job(extension).job_id
    assert tick_until(extension, lambda: controller(extension).views[job_id].phase.value == phase)
    assert bpy.ops.sequencer.talking_face_cancel(job_id=job_id) == {"FINISHED"}
    assert tick_until(extension, lambda: controller(extension).views[job_id].phase.value == "cancelled"
                      and not controller(extension).is_running(job_id), timeout=1.0)
    assert imported_strips(extension, scene, job_id) == []
    assert sandbox.count("submit") <= 1


def test_retry_after_a_failure_completes_the_job(extension, scene, sandbox):
    sandbox.inject("poll", "task_failed", reason="No face was detected")
    with pytest.raises(RuntimeError, match="No face was detected"):  # pipelines see the reason
        bpy.ops.sequencer.talking_face_generate()
    record = newest_job(extension)
    assert record.phase.value == "failed" and "No face was detected" in record.error
    sandbox.reset()
    assert bpy.ops.sequencer.talking_face_retry(job_id=record.job_id) == {"FINISHED"}
    assert controller(extension).views[record.job_id].phase.value == "done"
    assert imported_strips(extension, scene, record.job_id)


def test_disable_and_enable_with_a_job_running_resumes_without_paying_again(extension, scene, sandbox):
    sandbox.inject("poll", "status0", times=None)
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    job_id = newest_job(extension).job_id
    assert tick_until(extension, lambda: controller(extension).views[job_id].phase.value == "queued")
    bpy.ops.preferences.addon_disable(module=EXTENSION_MODULE)
    bpy.ops.preferences.addon_enable(module=EXTENSION_MODULE)
    sandbox.clear_faults()
    bpy.context.preferences.addons[EXTENSION_MODULE].preferences.api_key = API_KEY
    bpy.context.preferences.addons[EXTENSION_MODULE].preferences.base_url = sandbox.base_url
    assert bpy.ops.sequencer.talking_face_resume() == {"FINISHED"}
    assert controller(extension).views[job_id].phase.value == "done"
    assert sandbox.count("submit") == 1
    assert imported_strips(extension, scene, job_id)


def test_the_panel_draws_on_a_real_layout(extension, scene, sandbox, capfd):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    sandbox.inject("poll", "task_failed")
    with pytest.raises(RuntimeError, match="could not make this clip"):  # a failed job in the list too
        bpy.ops.sequencer.talking_face_generate()
    layout = bpy.context.window_manager.popmenu_begin__internal("talking face test").layout
    extension.ui.panel.draw_job_form(layout, bpy.context)
    extension.ui.panel.draw_jobs(layout, bpy.context)
    prefs = bpy.context.preferences.addons[EXTENSION_MODULE].preferences
    prefs.show_advanced = True
    extension.ui.preferences.draw_preferences(layout, prefs)
    captured = capfd.readouterr()
    assert "not found" not in captured.err
    assert "Error" not in captured.err


def test_several_jobs_run_at_once_and_each_lands_once(extension, scene, sandbox):
    for _ in range(3):
        assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    jobs = sorted(controller(extension).views.values(), key=lambda record: record.created_at)[-3:]
    assert tick_until(extension, lambda: all(controller(extension).views[job.job_id].phase.value == "done"
                                             for job in jobs))
    assert sandbox.count("submit") == 3
    for job in jobs:
        assert len([s for s in imported_strips(extension, scene, job.job_id)
                    if extension.operators.compat.is_movie(s)]) == 1


def test_cancel_while_processing(extension, scene, prefs):
    with Sandbox(processing_seconds=60) as slow:
        prefs.base_url = slow.base_url
        assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
        job_id = newest_job(extension).job_id
        assert tick_until(extension, lambda: controller(extension).views[job_id].phase.value == "processing")
        assert bpy.ops.sequencer.talking_face_cancel() == {"FINISHED"}  # no job given: every running one
        assert tick_until(extension, lambda: controller(extension).views[job_id].phase.value == "cancelled"
                          and not controller(extension).is_running(job_id), timeout=1.0)
        assert slow.count("submit") == 1
    assert imported_strips(extension, scene, job_id) == []


def test_check_key_reports_the_balance_or_the_rejection(extension, prefs, sandbox):
    assert bpy.ops.sequencer.talking_face_check_key() == {"FINISHED"}
    assert controller(extension).key_status == "Key accepted — 1000 credits left."
    sandbox.inject("credits", "html", status=404)  # no balance endpoint: nobody looked at the key
    bpy.ops.sequencer.talking_face_check_key()
    assert controller(extension).key_status.startswith("Not checked")
    prefs.api_key = "not-a-key"
    bpy.ops.sequencer.talking_face_check_key()
    assert "rejected" in controller(extension).key_status
    assert "not-a-key" not in controller(extension).key_status


def test_an_unsaved_file_saves_results_under_the_extension_user_folder(extension, scene, prefs, sandbox):
    prefs.output_dir = "//talking_face/"
    assert bpy.data.filepath == ""
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    output = pathlib.Path(newest_job(extension).output_path)
    user_folder = pathlib.Path(bpy.utils.extension_path_user(EXTENSION_MODULE, path="results"))
    assert output.parent == user_folder and output.is_file()


def test_show_selects_the_result(extension, scene, sandbox):
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    record = newest_job(extension)
    for strip in extension.operators.compat.all_strips(scene):
        strip.select = False
    scene.sequence_editor.active_strip = extension.operators.compat.all_strips(scene)["Take 3"]
    assert bpy.ops.sequencer.talking_face_show(job_id=record.job_id) == {"FINISHED"}
    active = scene.sequence_editor.active_strip
    assert active.get("talking_face_job") == record.job_id and active.select
    assert scene.frame_current == active.frame_final_start


@pytest.mark.parametrize("fps_mode", ["25", "ORIGINAL"])
def test_the_estimate_is_what_the_sent_inputs_cost(extension, scene, sandbox, speech, fps_mode):
    scene.talking_face.fps_mode = fps_mode
    shown = extension.operators.job_setup.estimate(bpy.context)
    assert bpy.ops.sequencer.talking_face_generate() == {"FINISHED"}
    record = newest_job(extension)
    rate = record.owner["source_fps"] / 25 if fps_mode == "ORIGINAL" else 1.0
    assert abs(record.owner["audio_seconds"] - 1.2) < 0.01  # the speech file as sent
    assert shown.credits == pytest.approx(record.owner["audio_seconds"] * rate, abs=0.01)
    assert record.estimated_credits == pytest.approx(shown.credits, abs=0.01)


def test_a_balance_too_low_is_refused_before_any_upload(extension, scene, prefs):
    with Sandbox(credits=0.5) as poor:
        prefs.base_url = poor.base_url
        with pytest.raises(RuntimeError, match="top up"):
            bpy.ops.sequencer.talking_face_generate()
        assert poor.count("storage") == 0 and poor.count("submit") == 0


@pytest.fixture
def background_blender(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A stand-in for the Blender program (the wheel has none): runs the cut script with bpy's Python."""
    program = tmp_path / "blender"
    program.write_text(
        "#!/bin/sh\n"
        "# Skip Blender's own options up to --python, then run that script with the bpy module.\n"
        'while [ "$1" != "--python" ]; do shift; done\n'
        'shift; script="$1"; shift\n'
        f'exec "{sys.executable}" "$script" "$@"\n')
    program.chmod(0o755)
    monkeypatch.setenv("TALKING_FACE_BLENDER", str(program))
    return program


def trim(extension: ModuleType, scene, frames: int = 5):
    strip = extension.operators.compat.all_strips(scene)["Take 3"]
    strip.frame_offset_start = frames
    strip.frame_offset_end = frames
    return strip


def test_with_a_window_a_trimmed_strip_is_cut_in_a_background_process(extension, scene, sandbox,
                                                                       background_blender):
    trim(extension, scene)
    started = time.monotonic()
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    assert time.monotonic() - started < 1.0, "the cut must not hold up Generate"
    record = newest_job(extension)
    assert record.message == "Preparing the clip" and controller(extension).is_running(record.job_id)
    assert tick_until(extension, lambda: controller(extension).views[record.job_id].phase.value == "done")
    frames, _fps = extension.operators.media.video_track_info(controller(extension).views[record.job_id].video)
    assert frames == MOVIE_FRAMES - 10
    assert sandbox.count("submit") == 1


def test_cancel_while_the_clip_is_being_cut(extension, scene, sandbox, background_blender):
    trim(extension, scene, frames=4)  # a range no earlier test cut: a cached cut would need no cutting
    assert bpy.ops.sequencer.talking_face_generate(mode="ASYNC") == {"FINISHED"}
    record = newest_job(extension)
    assert bpy.ops.sequencer.talking_face_cancel(job_id=record.job_id) == {"FINISHED"}
    assert controller(extension).views[record.job_id].phase.value == "cancelled"
    assert not controller(extension).is_running(record.job_id)
    assert sandbox.requests == []
