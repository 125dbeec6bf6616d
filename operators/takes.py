"""Takes: every result for the same source strip is a take (v001, v002, …) stacked above it.

A take's strips (its movie and its sound) carry the job's id like any placed result, and
three custom properties (``placement.TAKE_PROPERTY`` and its neighbours): the take's
number, the source strip's name, and the options it was made with as JSON
(``timeline.take_options``). The numbers count per source. A new take lands above the
earlier ones and plays; the other takes of that source are muted, picture and sound.

The operators that switch and redo takes are in ``take_ops``. All of it lives on the strips, so it is saved with the .blend and undone with it; nothing
about takes is kept anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import bpy

from ..newport_api import JobRecord
from . import compat, placement, shots


@dataclass(frozen=True)
class Take:
    number: int
    strips: tuple[Any, ...]  # its movie first, then its sound

    @property
    def movie(self) -> Any:
        return self.strips[0]

    @property
    def label(self) -> str:
        return take_label(self.number)

    @property
    def playing(self) -> bool:
        return not self.movie.mute


@dataclass(frozen=True)
class TakeChoice:
    """The takes of one source, as the active strip points at them (a take, or the source itself)."""

    source: str
    takes: tuple[Take, ...]  # by number
    active: Take | None  # the take whose strip is active; None when the source is

    @property
    def playing(self) -> Take | None:
        return next((take for take in self.takes if take.playing), None)

    @property
    def current(self) -> Take:
        """The take switching starts from: the one playing, else the active one, else the newest."""
        return self.playing or self.active or self.takes[-1]

    def position(self, take: Take) -> int:
        return self.takes.index(take) + 1


def take_label(number: int) -> str:
    return f"v{number:03d}"


def takes_of(scene: bpy.types.Scene, source: str) -> tuple[Take, ...]:
    """Every take of the source strip named ``source`` in ``scene``, by number."""
    by_number: dict[int, list[Any]] = {}
    for strip in compat.all_strips(scene):
        if strip.get(placement.SOURCE_PROPERTY) == source and strip.get(placement.TAKE_PROPERTY) is not None:
            by_number.setdefault(int(strip[placement.TAKE_PROPERTY]), []).append(strip)
    return tuple(Take(number, tuple(sorted(strips, key=lambda strip: not compat.is_movie(strip))))
                 for number, strips in sorted(by_number.items()))


def choice_for(scene: bpy.types.Scene, strip: Any) -> TakeChoice | None:
    """The takes ``strip`` belongs to (a take's source's, or a source's own); None when it has none."""
    if scene is None or strip is None:
        return None
    source = strip.get(placement.SOURCE_PROPERTY) or strip.name
    takes = takes_of(scene, source)
    if not takes:
        return None
    active = next((take for take in takes if any(part == strip for part in take.strips)), None)
    return TakeChoice(source, takes, active)


def active_choice(context: bpy.types.Context) -> TakeChoice | None:
    scene = context.scene
    editor = scene.sequence_editor if scene is not None else None
    return choice_for(scene, editor.active_strip) if editor is not None else None


# -- placing a take ---------------------------------------------------------------------------

def place_take(scene: bpy.types.Scene, record: JobRecord) -> list[str]:
    """Place a job's result as its source's next take: above the earlier takes, playing, the others muted.

    A job placed already is left as it is (its strips' names come back): a take is placed once,
    and never renumbered. The job's label becomes its take's name, as on the timeline.
    """
    owner = record.owner
    existing = placement.find_imported(scene, record.job_id)
    if existing:
        return existing
    source = owner.get("source_strip", "")
    earlier = takes_of(scene, source)
    number = max((take.number for take in earlier), default=0) + 1
    # Where the shot was when its job started (jobs from before shots: where its source is now).
    slot = shots.Shot.from_dict(owner["shot"]).slot if owner.get("shot") else None
    floor = max((strip.channel for take in earlier for strip in take.strips), default=0)
    name = f"{owner.get('result_name') or record.label or 'Talking Face'} {take_label(number)}"
    names = placement.place_result(
        scene, source, record.output_path, job_id=record.job_id, name=name,
        fallback_audio_path=owner.get("audio_path", ""), mute_sources=bool(owner.get("mute_sources", True)),
        source_strip_names=tuple(owner.get("source_strips", ())),
        floor_channel=max(floor, slot.floor_channel) if slot else floor, start=slot.start if slot else None,
        meta=slot.meta if slot else "",
        properties=take_properties(number, source, owner.get("options")))
    play(scene, source, number)
    record.label = name
    return names


def take_properties(number: int, source: str, options: dict | None) -> dict[str, Any]:
    properties: dict[str, Any] = {placement.TAKE_PROPERTY: number, placement.SOURCE_PROPERTY: source}
    if options is not None:  # jobs planned before takes kept their options have none to keep
        properties[placement.OPTIONS_PROPERTY] = json.dumps(options, sort_keys=True)
    return properties


def play(scene: bpy.types.Scene, source: str, number: int) -> None:
    """Take ``number`` of ``source`` plays, picture and sound; every other take of it is muted."""
    for take in takes_of(scene, source):
        for strip in take.strips:
            if strip.mute != (take.number != number):  # written only when it changes: each write redraws
                strip.mute = take.number != number


def switch(scene: bpy.types.Scene, choice: TakeChoice, step: int) -> Take:
    """Play the take ``step`` places after the current one, wrapping around; returns it."""
    index = (choice.takes.index(choice.current) + step) % len(choice.takes)
    chosen = choice.takes[index]
    play(scene, choice.source, chosen.number)
    if choice.active is not None:  # the selection follows the take that plays, so the panel shows it
        for strip in choice.active.strips:
            strip.select = False
        for strip in chosen.strips:
            strip.select = True
        scene.sequence_editor.active_strip = chosen.movie
    return chosen


def stored_options(take: Take) -> dict[str, Any] | None:
    text = take.movie.get(placement.OPTIONS_PROPERTY)
    try:
        options = json.loads(text) if text else None
    except ValueError:
        return None
    return options if isinstance(options, dict) else None
