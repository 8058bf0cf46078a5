import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
SAMPLE = Path(__file__).resolve().parents[1] / "talkinghead" / "assets" / "sample"


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    return SAMPLE / "portrait.jpg"


@pytest.fixture(scope="session")
def speech_path() -> Path:
    return SAMPLE / "speech.wav"


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    from talkinghead.io.image import read_image

    return read_image(SAMPLE / "portrait.jpg")


@pytest.fixture(scope="session")
def carphone_path() -> Path:
    from talkinghead.assets import asset_path

    return asset_path("carphone.mp4")


@pytest.fixture(scope="session")
def landmarker():
    from talkinghead.face.landmarker import FaceLandmarker

    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.fixture(scope="session")
def portrait_face(portrait, landmarker):
    from talkinghead.face.landmarker import analyze_portrait

    return analyze_portrait(portrait, "portrait", landmarker)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkinghead", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)
