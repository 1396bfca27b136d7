"""Re-track only what changed: which objects a propagation must recompute, and from where.

SAM 2's objects are independent given the frame features (each object attends only to its own memories),
so a change to one object's prompts never changes another object's results. Each `ObjectTrack` carries two
markers: re-track forward from `stale_fwd` and/or backward from `stale_rev`. A prompt change on frame k marks
the directions in which frames next to k depend on k:

- forward when frame k+1 was never tracked or was tracked forward (so it remembers k);
- backward when frame k-1 was never tracked or was tracked in reverse.

So a correction on a frame reached by a forward pass re-tracks forward from it only, and earlier frames keep
their masks; a first prompt for a new object tracks it both ways from its prompt and leaves every other object
alone. A propagation that walks over the marked frame in that direction moves the marker along, so a cancelled
pass leaves exactly the unfinished part pending. Frame indices are 0-based.
"""
from __future__ import annotations

from dataclasses import dataclass

from .state import ObjectId, ObjectTrack


@dataclass(frozen=True)
class PassPlan:
    """One propagation: from `start`, forward or in reverse, tracking only `objects` (others keep their results)."""

    start: int
    reverse: bool
    objects: tuple[ObjectId, ...]


def mark_changed(track: ObjectTrack, frame: int, num_frames: int) -> None:
    """Record that the object's prompts on `frame` changed (see the module docstring for the rule)."""
    nxt, prev = frame + 1, frame - 1
    if nxt < num_frames and not track.tracked.get(nxt, False):
        track.stale_fwd = frame if track.stale_fwd is None else min(track.stale_fwd, frame)
    if prev >= 0 and track.tracked.get(prev, True):
        track.stale_rev = frame if track.stale_rev is None else max(track.stale_rev, frame)


def advance(track: ObjectTrack, frame: int, reverse: bool, num_frames: int) -> None:
    """The object was just (re)tracked on `frame` in this direction: move its marker past it."""
    if reverse:
        if track.stale_rev == frame:
            track.stale_rev = frame - 1 if frame > 0 else None
    else:
        if track.stale_fwd == frame:
            track.stale_fwd = frame + 1 if frame + 1 < num_frames else None
        if track.stale_rev is not None and track.stale_rev == frame + 1:
            track.stale_rev = None  # frame r-1 now remembers r going forward: nothing left to do backward


def pending_passes(tracks: list[ObjectTrack]) -> list[PassPlan]:
    """The passes that bring every object up to date: forward ones by start frame, then reverse ones from the
    latest; objects with the same start and direction share a pass (one image encoding per frame)."""
    groups: dict[tuple[int, bool], list[ObjectId]] = {}
    for t in tracks:
        if t.stale_fwd is not None:
            groups.setdefault((t.stale_fwd, False), []).append(t.obj_id)
        r = t.stale_rev
        # a reverse pass from r is needed only while frame r-1 does not already (or, after this plan's forward
        # pass, will not) remember r going forward: e.g. prompts on frames 0 and 5 of a new object track it once
        if r is not None and not (t.tracked.get(r - 1) is False or (t.stale_fwd is not None and t.stale_fwd < r)):
            groups.setdefault((r, True), []).append(t.obj_id)
    order = sorted(groups, key=lambda k: (k[1], -k[0] if k[1] else k[0]))
    return [PassPlan(start, rev, tuple(groups[start, rev])) for start, rev in order]
