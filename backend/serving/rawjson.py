"""JSON answers assembled from cached fragments, byte-identical to Flask's `jsonify` (compact, sorted keys, ASCII).

A tracked task's answer repeats, click after click, hundreds of results that did not change (one brush mask per
object and frame; each RLE is ~1-3 KB of small ints, so serialising them is most of an answer's cost). A result
wrapped in `Fragment` carries its own JSON text, made once with the same options Flask uses; `dumps` splices the
texts in and serialises everything else with `json.dumps`, so the bytes are those `jsonify` would send.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
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


class TextCache:
    """JSON texts by a caller's content key (e.g. a digest of everything that makes the text), least recently used
    first out once their total length passes `max_bytes` (0: caches nothing). Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self.nbytes = 0
        self._texts: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> str | None:
        with self._lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
            return text

    def put(self, key: bytes, text: str) -> None:
        if len(text) > self.max_bytes:
            return
        with self._lock:
            old = self._texts.pop(key, None)
            self.nbytes += len(text) - (len(old) if old is not None else 0)
            self._texts[key] = text
            while self.nbytes > self.max_bytes:
                _, gone = self._texts.popitem(last=False)
                self.nbytes -= len(gone)


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
