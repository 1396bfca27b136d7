"""Label configs seen by this backend: parsed shapes by config (hashed) and the config of each project (from /setup).

Both are LRU-bounded: a client cycling configs or project ids costs a parse each, never memory.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from backend.ls.errors import BadRequest
from backend.ls.labelconfig import TaskShape, parse_label_config
from backend.serving.ratelimit import LRUDict

MAX_CONFIG_CHARS = 1 << 20  # a label config of more than 1 MiB is not one a person wrote


class Configs:
    def __init__(self, max_shapes: int = 256, max_projects: int = 4096):
        self._shapes: LRUDict[bytes, TaskShape] = LRUDict(max_shapes)
        self._projects: LRUDict[str, TaskShape] = LRUDict(max_projects)

    def shape_of(self, config: str) -> TaskShape:
        """The parsed shape of a label config (LabelConfigError/BadRequest if we cannot serve it)."""
        if len(config) > MAX_CONFIG_CHARS:
            raise BadRequest(f"the label config has {len(config)} characters, more than {MAX_CONFIG_CHARS}")
        key = hashlib.sha256(config.encode("utf-8", "surrogatepass")).digest()
        shape = self._shapes.get(key)
        if shape is None:
            shape = parse_label_config(config)
            self._shapes[key] = shape
        return shape

    def remember(self, project: str, config: str) -> TaskShape:
        shape = self.shape_of(config)
        if project:
            self._projects[project] = shape
        return shape

    def of_project(self, project: object) -> TaskShape | None:
        return self._projects.get(str(project).split(".")[0]) if project is not None else None

    def of_request(self, body: Mapping) -> TaskShape:
        """The shape for a /predict body: its label_config, else the one its project sent to /setup."""
        config = body.get("label_config")
        if isinstance(config, str) and config.strip():
            return self.shape_of(config)
        shape = self.of_project(body.get("project") or "")
        if shape is None:
            raise BadRequest("the request has no label_config; send the project's label config")
        return shape
