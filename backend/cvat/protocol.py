"""CVAT's tracker contract: what a call carries, and the small state we hand back.

CVAT's lambda manager (``cvat/apps/lambda_manager/views.py``, release 2.73.0) sends a tracker
``{"image": <base64 frame>, "shapes": [...], "states": [...]}``:

- start: ``states`` is ``[]`` and every shape is ``{"type", "points"}``;
- continue: ``shapes`` is ``[None] * len(states)`` and ``states`` are what we returned last time (CVAT signs them
  and refuses them after 8 h, so we only ever see our own, recent states);
- an old UI may send both, one shape or state per object, ``None`` where it has none.

It expects ``{"shapes": [{"type", "points"}, ...], "states": [<JSON>, ...]}`` with one entry per object, in order.
A state here is a reference, not the memory: which session, which object, the stream frame it was last tracked on,
its last box and the shape type asked for; SAM 2's memory stays in the server's session store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from backend.cvat.shapes import SHAPE_TYPES
from backend.serving.errors import BadRequest

STATE_VERSION = 1


@dataclass(frozen=True)
class TrackState:
    session: str
    obj: int
    frame: int
    box: tuple[float, float, float, float]
    kind: str

    def to_json(self) -> dict:
        return {"v": STATE_VERSION, "session": self.session, "object": self.obj, "frame": self.frame,
                "box": [round(v, 2) for v in self.box], "type": self.kind}

    @classmethod
    def from_json(cls, data: object, index: int) -> TrackState:
        where = f"states[{index}]"
        if not isinstance(data, dict):
            raise BadRequest(f"{where} must be a state this tracker returned (an object), got {type(data).__name__}")
        if data.get("v") != STATE_VERSION:
            raise BadRequest(f"{where} is not a state of this tracker (version {data.get('v')!r}); "
                             f"start tracking again")
        session, obj, frame, box, kind = (data.get(k) for k in ("session", "object", "frame", "box", "type"))
        ok = (isinstance(session, str) and 0 < len(session) <= 64 and _is_int(obj) and _is_int(frame)
              and frame >= 0 and kind in SHAPE_TYPES and isinstance(box, list) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box))
        if not ok:
            raise BadRequest(f"{where} is malformed (expected session, object, frame, box [x1, y1, x2, y2], type); "
                             f"start tracking again")
        return cls(session, int(obj), int(frame), tuple(float(v) for v in box), kind)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class NewShape:
    """An object to start tracking: CVAT's shape as sent (validated against the image later)."""

    kind: str
    points: list


@dataclass(frozen=True)
class Call:
    image: str
    items: list[NewShape | TrackState]  # one per object, in CVAT's order


def parse_call(body: object, *, max_shapes: int) -> Call:
    """Check a tracker call's structure (not yet the image nor the geometry) and pair shapes with states."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object {image, shapes, states}")
    image, shapes, states = body.get("image"), body.get("shapes"), body.get("states", [])
    if shapes is None and isinstance(states, list):
        shapes = [None] * len(states)
    if not isinstance(shapes, list) or not isinstance(states, list):
        raise BadRequest("`shapes` and `states` must be lists (CVAT sends shapes to start, states to continue)")
    if states and len(states) != len(shapes):
        raise BadRequest(f"{len(shapes)} shapes but {len(states)} states; send one state per shape "
                         f"(null shapes when continuing)")
    if not shapes:
        raise BadRequest("no shapes and no states: send shapes to start tracking or states to continue")
    if len(shapes) > max_shapes:
        raise BadRequest(f"{len(shapes)} objects in one call; this tracker takes at most {max_shapes} "
                         f"(CVAT_MAX_SHAPES)")
    items: list[NewShape | TrackState] = []
    for i, shape in enumerate(shapes):
        state = states[i] if states else None
        if state is not None:
            items.append(TrackState.from_json(state, i))
            continue
        if shape is None:
            raise BadRequest(f"shapes[{i}] is null and there is no state for it: nothing to track")
        if isinstance(shape, list):  # the legacy form: bare rectangle points
            shape = {"type": "rectangle", "points": shape}
        if not isinstance(shape, dict) or shape.get("type") not in SHAPE_TYPES:
            kind = shape.get("type") if isinstance(shape, dict) else type(shape).__name__
            raise BadRequest(f"shapes[{i}] has type {kind!r}; this tracker supports {', '.join(SHAPE_TYPES)}")
        items.append(NewShape(shape["type"], shape.get("points")))
    return Call(image, items)
