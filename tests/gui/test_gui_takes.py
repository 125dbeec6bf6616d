"""Takes with a window: Generate then New Take on the same trimmed strip gives two takes; the switch
makes the first play again. Checked from the outside: the sandbox's request log and the saved .blend
as another Blender reads it."""

from __future__ import annotations

from conftest import TRIM


def test_new_take_stacks_a_second_take_and_the_switch_plays_the_first_again(gui, sandbox):
    run = gui.run("takes.py", blend=gui.project, timeout=360).check()
    facts = run.facts
    assert facts["presses"] == [["FINISHED"], ["FINISHED"]]
    assert sandbox.count("submit") == 2, "New Take pays for a new result though an identical job succeeded"
    assert facts["switch"] == ["FINISHED"]
    saved = gui.inspect()
    source = next(strip for strip in saved["strips"] if strip["name"] == "Take")
    takes = {}
    for number, job_id in enumerate(facts["job_ids"], start=1):
        assert facts["jobs"][job_id]["phase"] == "done"
        strips = [strip for strip in saved["strips"] if strip["job"] == job_id]
        movies = [strip for strip in strips if strip["type"] == "MOVIE"]
        assert len(movies) == 1 and movies[0]["name"] == f"Take TF v{number:03d}"
        assert facts["jobs"][job_id]["label"] == movies[0]["name"], "the Jobs list names the take"
        assert {strip["take"] for strip in strips} == {number} and {strip["take_of"] for strip in strips} == {"Take"}
        assert all(strip["start"] == source["start"] == 1 + TRIM for strip in strips), "aligned to the source"
        assert any(strip["type"] == "SOUND" for strip in strips), "each take brings its sound"
        takes[number] = strips
    assert min(strip["channel"] for strip in takes[1]) > source["channel"]
    assert min(strip["channel"] for strip in takes[2]) > max(strip["channel"] for strip in takes[1])
    # NEXT from the newest wraps around to the first: it plays, picture and sound; the second is muted.
    assert all(not strip["mute"] for strip in takes[1]) and all(strip["mute"] for strip in takes[2])
    assert facts["active_after_switch"] == "Take TF v001"
    assert source["mute"], "the source stays muted under its takes"
