"""Serving side: a pure numpy + OpenVINO engine (`backend.engine`) and a thin Label Studio adapter (`backend.ls`)."""
