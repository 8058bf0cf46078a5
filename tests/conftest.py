import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
SAMPLE = Path(__file__).resolve().parents[1] / "talkinghead" / "assets" / "sample"


def _torch_on_one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny models run many small ops: no oversubscription on a
    loaded 2-core machine, ~10x faster here); the previous count is restored after."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """`one_thread` for a whole module, its module-scoped fixtures (trained checkpoints, written
    weight files) included: `pytestmark = pytest.mark.usefixtures("one_thread_module")`. Measured
    at load 4-8 on 2 cores: test_hallo2 + test_motion_models 180 -> 23 CPU s."""
    yield from _torch_on_one_thread()


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


def write_synthetic_corpus(root: Path, feature_dim: int = 12, seed: int = 0,
                           utterances: tuple[int, int] = (24, 6)) -> Path:
    """A small corpus in the real shard format whose audio features are a fixed noisy linear
    function of the motion targets, so a model can learn audio -> motion from it."""
    from talkinghead.data.corpus import EXPRESSION_CHANNELS, Item, ShardWriter

    rng = np.random.default_rng(seed)
    proj = rng.normal(0, 1, (len(EXPRESSION_CHANNELS) + 3, feature_dim)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "val"), utterances):
        writer = ShardWriter(root, split, 10**9)
        for _ in range(count):
            n = int(rng.integers(60, 140))
            t = np.arange(n) / 25.0
            mouth = np.clip(0.3 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, 1)
            expr = np.zeros((n, len(EXPRESSION_CHANNELS)), np.float32)
            expr[:, 0] = mouth
            expr[:, 3] = 0.5 * mouth[::-1]
            pose = np.cumsum(rng.normal(0, 0.3, (n, 3)), 0).astype(np.float32)
            pose -= pose[0]
            feats = np.concatenate([expr, pose / 5], 1) @ proj + rng.normal(0, 0.1, (n, feature_dim))
            item = Item(np.zeros(int(n * 640), np.float32), expr, pose, int(rng.integers(8)),
                        float(rng.uniform(0.2, 0.4)), "synthetic", "")
            writer.add(item, {"whisper": feats.astype(np.float32)})
        writer.flush()
    return root


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"))
