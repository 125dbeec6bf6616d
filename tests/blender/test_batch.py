"""Dub a whole edit: ``bpy.ops.sequencer.talking_face_batch`` through the installed extension, against the sandbox.

The oracles are outside the code under test: the sandbox's request log (one submit per
shot), the lengths of the WAV files the test wrote (which sound went with which shot),
and the strips' frames on the timeline.
"""

from __future__ import annotations

import pathlib
import time
from types import ModuleType

import bpy
import pytest
import sample_media
import sound_strips

from newport_api.sandbox import Sandbox  # the source tree's: the artist's zip has no sandbox

EXTENSION_MODULE = "bl_ext.user_default.talking_face"
API_KEY = "sk-batch-test-2d8e4f6a1c"
SCENE_FPS = 25
SHOT_GAP = 100  # frames between shot starts: far more than any shot lasts
# (size, fps, frames): mixed sizes and rates, about a second each
SHOT_MEDIA = [((320, 240), 25, 30), ((256, 144), 30, 36), ((240, 320), 24, 28),
              ((320, 180), 25, 25), ((288, 288), 50, 50), ((320, 240), 30, 30)]


@pytest.fixture(scope="module")
def shot_files(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """Per shot: its movie and its dialogue, each dialogue of its own length (0.6 s, 0.68 s, …)."""
    return make_shot_files(extension, tmp_path_factory.mktemp("batch_media"), SHOT_MEDIA)


@pytest.fixture(scope="module")
def scene_rate_files(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list:
    """Mixed sizes, all at the scene's rate.

    With results of other rates, bpy 4.5 sometimes crashed (a segfault in another thread) while the tick
    placed a result with ``movie_strip_add`` after earlier tests had placed many: a placement matter
    this queue test is not about.
    """
    media = [(size, SCENE_FPS, frames) for size, _fps, frames in SHOT_MEDIA]
    return make_shot_files(extension, tmp_path_factory.mktemp("batch_media_25"), media)


def make_shot_files(extension: ModuleType, folder: pathlib.Path, shot_media: list) -> list:
    files = []
    for index, (size, fps, frames) in enumerate(shot_media):
        movie = sample_media.make_movie(extension.operators.compat, folder / f"shot{index}.mp4",
                                        frames=frames, fps=fps, size=size)
        line = sample_media.write_sine_wav(folder / f"line{index}.wav", seconds=dialogue_seconds(index))
        files.append((movie, line))
    return files


def dialogue_seconds(index: int) -> float:
    return round(0.6 + 0.08 * index, 2)  # whole frames at 25 fps: sound strips without Audaspace end on a frame


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
    preferences.api_key = ""
    preferences.max_parallel_jobs = 3


@pytest.fixture
def edit(extension: ModuleType, shot_files, prefs):
    """A scene of six selected shots on channel 2, each with its dialogue on channel 1 starting a frame later."""
    yield from build_edit(extension, shot_files)


@pytest.fixture
def scene_rate_edit(extension: ModuleType, scene_rate_files, prefs):
    yield from build_edit(extension, scene_rate_files)


def build_edit(extension: ModuleType, shot_files: list):
    compat = extension.operators.compat
    previous = bpy.context.window.scene
    scene = bpy.data.scenes.new("batch edit")
    compat.set_scene_fps(scene, SCENE_FPS)
    bpy.context.window.scene = scene
    compat.ensure_editor(scene)
    for index, (movie, line) in enumerate(shot_files):
        start = 1 + index * SHOT_GAP
        compat.new_movie(scene, f"Shot {index}", str(movie), channel=2, frame_start=start)
        sound_strips.add_sound_strip(compat, scene, f"Line {index}", line, channel=1, frame_start=start + 1)
    for strip in compat.all_strips(scene):
        strip.select = strip.name.startswith("Shot")
    scene.frame_start, scene.frame_end = 1, len(shot_files) * SHOT_GAP
    scene.talking_face.regenerate = True  # every test pays for its own jobs: nothing reused from another test
    yield scene
    bpy.context.window.scene = previous  # the scene is kept, not removed: see conftest.KEEP_SCENES_NOTE


def controller(extension: ModuleType):
    return extension.operators.controller.get_controller()


def new_jobs(extension: ModuleType, before: set[str]) -> list:
    return [record for job_id, record in controller(extension).views.items() if job_id not in before]


def shot(extension: ModuleType, scene, index: int):
    return extension.operators.compat.all_strips(scene)[f"Shot {index}"]


def results_of(extension: ModuleType, scene, job_id: str) -> list:
    return [strip for strip in extension.operators.compat.all_strips(scene) if strip.get("talking_face_job") == job_id]


def assert_placed_in_sync(extension: ModuleType, scene, record) -> None:
    compat = extension.operators.compat
    assert record.phase.value == "done", record.error
    index = int(record.owner["source_strip"].split()[-1])
    source = shot(extension, scene, index)
    placed = results_of(extension, scene, record.job_id)
    [movie] = [strip for strip in placed if compat.is_movie(strip)]
    assert movie.channel > source.channel and movie.frame_final_start == source.frame_final_start
    for sound in (strip for strip in placed if compat.is_sound(strip)):
        assert sound.frame_final_start == source.frame_final_start, "picture and sound start together"
    # Its own dialogue was sent: the length of the WAV this test wrote for this shot.
    assert record.owner["audio_seconds"] == pytest.approx(dialogue_seconds(index), abs=0.01)
    assert f"Line {index}" in record.owner["source_strips"]


def test_a_batch_places_each_shot_above_itself_with_one_submit_each(extension, edit, sandbox):
    before = set(controller(extension).views)
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1) == {"FINISHED"}
    records = new_jobs(extension, before)
    assert sorted(record.owner["source_strip"] for record in records) == [f"Shot {i}" for i in range(6)]
    for record in records:
        assert_placed_in_sync(extension, edit, record)
    assert sandbox.count("submit") == 6
    assert len({record.owner["batch"] for record in records}) == 1, "one batch groups them"


def test_a_shot_without_dialogue_is_skipped_with_its_reason_and_the_others_are_placed(extension, edit, sandbox):
    extension.operators.compat.all_strips(edit)["Line 3"].channel = 3  # not on the dialogue channel
    before = set(controller(extension).views)
    with pytest.raises(RuntimeError, match=r"5 of 6 shot\(s\) placed.*Shot 3: No sound strip overlaps 'Shot 3' "
                                           r"on channel 1"):
        bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", audio_channel=1)
    records = new_jobs(extension, before)
    assert sorted(record.owner["source_strip"] for record in records) == [f"Shot {i}" for i in (0, 1, 2, 4, 5)]
    for record in records:
        assert_placed_in_sync(extension, edit, record)
    assert sandbox.count("submit") == 5, "nothing is spent for the skipped shot"


def test_two_shards_cover_every_shot_exactly_once(extension, edit, sandbox):
    covered = []
    for shard in ("0/2", "1/2"):  # as two machines would, each opening the edit with the shots selected
        for strip in extension.operators.compat.all_strips(edit):
            strip.select = strip.name.startswith("Shot") and not strip.get("talking_face_job")
        before = set(controller(extension).views)
        assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", shard=shard) == {"FINISHED"}
        covered.append(sorted(record.owner["source_strip"] for record in new_jobs(extension, before)))
    # Timeline order is shot order here: the even shots, then the odd ones.
    assert covered == [["Shot 0", "Shot 2", "Shot 4"], ["Shot 1", "Shot 3", "Shot 5"]]
    assert sandbox.count("submit") == 6
    with pytest.raises(RuntimeError, match="not of the form i/n"):
        bpy.ops.sequencer.talking_face_batch(shard="2/2")


def test_the_queue_runs_at_most_max_parallel_jobs_at_once(extension, scene_rate_edit, sandbox, prefs):
    edit = scene_rate_edit
    prefs.max_parallel_jobs = 2
    jobs = controller(extension)
    before = set(jobs.views)
    assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", mode="ASYNC") == {"FINISHED"}
    records = new_jobs(extension, before)
    assert len(records) == 6
    most, waited = jobs.running_count(), set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        most = max(most, jobs.running_count())
        assert jobs.running_count() <= 2, "never more than max_parallel_jobs at once"
        waited.update(record.job_id for record in records
                      if jobs.views[record.job_id].message == "Waiting in the queue")
        if all(jobs.views[record.job_id].phase.value == "done" for record in records):
            break
        jobs.tick()
        time.sleep(0.02)
    for record in records:
        assert_placed_in_sync(extension, edit, jobs.views[record.job_id])
    assert most == 2 and len(waited) >= 4, "the queue used both slots and the rest waited"
    assert sandbox.count("submit") == 6


def test_retry_failed_reruns_only_the_failed_shot(extension, edit, sandbox, capfd):
    sandbox.inject("poll", "task_failed", reason="No face was detected")  # the first shot's task fails
    before = set(controller(extension).views)
    with pytest.raises(RuntimeError, match="Shot 0: .*No face was detected"):
        bpy.ops.sequencer.talking_face_batch(audio="OVERLAP")
    records = new_jobs(extension, before)
    [failed] = [record for record in records if record.phase.value == "failed"]
    assert failed.owner["source_strip"] == "Shot 0" and sandbox.count("submit") == 6
    [group] = [entry for entry in extension.ui.panel.group_batches(controller(extension).jobs_for_file())
               if isinstance(entry, list) and entry[0].owner.get("batch") == failed.owner["batch"]]
    assert [record.owner["source_strip"] for record in group] == [f"Shot {i}" for i in range(6)]
    layout = bpy.context.window_manager.popmenu_begin__internal("talking face batch test").layout
    extension.ui.panel.draw_jobs(layout, bpy.context)  # the grouped batch with its Retry Failed button
    assert "not found" not in capfd.readouterr().err

    assert bpy.ops.sequencer.talking_face_retry_failed(batch=failed.owner["batch"]) == {"FINISHED"}
    assert sandbox.count("submit") == 7, "only the failed shot ran again"
    for record in records:
        assert_placed_in_sync(extension, edit, controller(extension).views[record.job_id])
        assert len(results_of(extension, edit, record.job_id)) >= 1
    assert bpy.ops.sequencer.talking_face_retry_failed(batch=failed.owner["batch"]) == {"CANCELLED"}


def test_the_confirmation_lists_each_shot_and_the_skipped_ones_with_their_reason(extension, edit, shot_files,
                                                                                 sandbox, capfd):
    batch, compat = extension.operators.batch, extension.operators.compat
    compat.all_strips(edit)["Line 3"].channel = 3
    first = shot(extension, edit, 0)  # a sound overlapping Shot 0 by two frames only: Line 0 overlaps it most
    sound_strips.add_sound_strip(compat, edit, "Tail", shot_files[0][1], channel=1,
                                 frame_start=first.frame_final_end - 2)
    for strip in compat.all_strips(edit):  # pasting a sound strip (Blender without Audaspace) deselects the rest
        strip.select = strip.name.startswith("Shot")
    shots = batch.read_shots(bpy.context, audio="OVERLAP", audio_channel=1, audio_pattern="", scope="SELECTED")
    assert [(shot.name, shot.audio_name) for shot in shots if not shot.reason] == [
        (f"Shot {i}", f"Line {i}") for i in (0, 1, 2, 4, 5)]
    assert [shot.reason for shot in shots if shot.reason] == [
        "No sound strip overlaps 'Shot 3' on channel 1 — add its dialogue there or pick another audio rule."]
    layout = bpy.context.window_manager.popmenu_begin__internal("talking face batch dialog").layout
    batch.draw_shot_list(layout, bpy.context, shots)
    printed = capfd.readouterr().err
    assert "not found" not in printed and "Error" not in printed
    # The movies are silent: their own sound cannot be sent.
    own = batch.read_shots(bpy.context, audio="OWN", audio_channel=0, audio_pattern="", scope="RANGE")
    assert len(own) == 6 and all("has no sound" in shot.reason for shot in own)
    assert sandbox.requests == [], "nothing is sent before the artist confirms"


def test_files_pairs_each_shot_with_its_own_file(extension, edit, sandbox, tmp_path):
    folder = tmp_path / "dub"
    folder.mkdir()
    sample_media.write_sine_wav(folder / "Shot 0.wav", seconds=0.84)  # none for Shot 3
    before = set(controller(extension).views)
    with pytest.raises(RuntimeError, match=r"Shot 3: There is no audio file for 'Shot 3'"):
        bpy.ops.sequencer.talking_face_batch(audio="FILES", audio_pattern=str(folder / "{strip}.wav"), shard="0/3")
    [record] = new_jobs(extension, before)
    assert record.phase.value == "done" and record.owner["source_strip"] == "Shot 0"
    assert record.owner["audio_seconds"] == pytest.approx(0.84, abs=0.01)
    assert sandbox.count("submit") == 1


def test_a_retried_job_that_waits_in_the_queue_goes_on_polling_its_task(extension, edit, prefs):
    """Queued for a slot, a retried job keeps its phase: a task still running is polled, not paid for again."""
    jobs = controller(extension)
    with Sandbox(processing_seconds=60) as slow:
        prefs.base_url = slow.base_url
        before = set(jobs.views)
        assert bpy.ops.sequencer.talking_face_batch(audio="OVERLAP", shard="0/6", mode="ASYNC") == {"FINISHED"}
        [record] = new_jobs(extension, before)
        assert tick_until(jobs, lambda: jobs.views[record.job_id].phase.value == "processing")
        assert bpy.ops.sequencer.talking_face_cancel(job_id=record.job_id) == {"FINISHED"}
        assert tick_until(jobs, lambda: jobs.views[record.job_id].phase.value == "cancelled"
                          and not jobs.is_running(record.job_id))
        assert bpy.ops.sequencer.talking_face_retry(job_id=record.job_id, mode="ASYNC") == {"FINISHED"}
        assert tick_until(jobs, lambda: slow.count("poll") > 0 and jobs.views[record.job_id].phase.value
                          in ("processing", "queued"))
        assert bpy.ops.sequencer.talking_face_cancel(job_id=record.job_id) == {"FINISHED"}
        assert tick_until(jobs, lambda: not jobs.is_running(record.job_id))
        assert slow.count("submit") == 1, "the retried job polled its task, it did not submit again"


def tick_until(jobs, predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.tick()
        if predicate():
            return True
        time.sleep(0.02)
    return False
