"""JSON answers assembled from cached fragments, byte-identical to Flask's `jsonify` (compact, sorted keys, ASCII).

A tracked task's answer repeats, click after click, hundreds of results that did not change (one brush mask per
object and frame; each RLE is ~1-3 KB of small ints, so serialising them is most of an answer's cost). A result
wrapped in `Fragment` carries its own JSON text, made once with the same options Flask uses; `dumps` splices the
texts in and serialises everything else with `json.dumps`, so the bytes are those `jsonify` would send.
"""
from __future__ import annotations

import json
from typing import Any

OPTIONS = {"ensure_ascii": True, "sort_keys": True, "separators": (",", ":")}  # Flask 3's DefaultJSONProvider, compact


class Fragment(dict):
    """A JSON object (a plain dict to every other reader) with its serialised text; never mutate one after making it
    (the text would no longer match)."""

    __slots__ = ("text",)

    def __init__(self, value: dict, text: str):
        super().__init__(value)
        self.text = text


def text_of(value: dict) -> str:
    """The JSON text `Fragment` carries for `value`."""
    return json.dumps(value, **OPTIONS)


def _has_fragment(obj: Any) -> bool:
    if isinstance(obj, Fragment):
        return True
    if isinstance(obj, dict):
        return any(_has_fragment(v) for v in obj.values())
    if isinstance(obj, list):
        return any(isinstance(v, (dict, list)) and _has_fragment(v) for v in obj)
    return False


def dumps(obj: Any, default: Any = None) -> str:
    """`json.dumps(obj, default=default, **OPTIONS)`, with each `Fragment`'s cached text used instead of serialising
    it again."""
    if isinstance(obj, Fragment):
        return obj.text
    if not _has_fragment(obj):
        return json.dumps(obj, default=default, **OPTIONS)
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("dumps splices fragments only into objects with string keys")
        return "{" + ",".join(json.dumps(k, ensure_ascii=True) + ":" + dumps(v, default) for k, v in sorted(obj.items())) + "}"
    return "[" + ",".join(dumps(v, default) for v in obj) + "]"
