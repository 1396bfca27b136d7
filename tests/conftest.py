import os
import warnings
from pathlib import Path

import pytest

from tests import models

CLIPS = Path(os.environ.get("CLIPS_DIR", "/work/shared/clips"))


def pytest_configure(config):
    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    if not (CLIPS / "box.mp4").is_file():
        pytest.fail(f"test clips not found in {CLIPS}; set CLIPS_DIR to the folder with box.mp4, cup.mp4, carphone_pristine.mp4")
    return CLIPS


@pytest.fixture(scope="session")
def model_256_f32() -> Path:
    return models.export_dir(256, "f32")


@pytest.fixture(scope="session")
def model_256_bf16() -> Path:
    return models.export_dir(256, "bf16")


@pytest.fixture(scope="session")
def model_128_f32() -> Path:
    return models.export_dir(128, "f32")
