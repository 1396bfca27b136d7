"""Convert an official SAM 2.1 checkpoint into OpenVINO IR for the serving engine.

This package is the only place that imports torch and sam2; the serving side
(`backend/`) reads what it writes: five IR graphs, `constants.npz` and
`manifest.json`.
"""
