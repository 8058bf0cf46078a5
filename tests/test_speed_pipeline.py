"""Issue #12's start-up changes (pipeline half) keep their promises: the CLI's first heavy import
pauses the garbage collector, leaves it on afterwards with the pipelines' objects frozen, and a
second one changes nothing; models prefetched in the background are the ones the call uses, and a
failed prefetch surfaces at the next load; OpenCV runs on one thread during generate's call and
a live session's pushes; a default `generate` process never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

HEAVY_IMPORTS = """
import gc, sys
from talkinghead.cli import _heavy_imports
assert "talkinghead.pipelines.generate" not in sys.modules
with _heavy_imports():
    assert not gc.isenabled()
    import talkinghead.pipelines.generate
frozen = gc.get_freeze_count()
with _heavy_imports():  # the pipelines are loaded: nothing is paused or frozen again
    assert gc.isenabled()
    import json
print(gc.isenabled(), frozen, gc.get_freeze_count() == frozen)
"""


def test_first_heavy_import_freezes_the_pipelines_and_leaves_the_collector_on():
    out = subprocess.run([sys.executable, "-c", HEAVY_IMPORTS], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "True"                 # the collector runs again after the imports
    assert int(out[1]) > 10_000             # the pipelines' objects (~29 k) no longer walked
    assert out[2] == "True"                 # the second call froze nothing more


GENERATE_WITHOUT_TORCH = """
import sys
from talkinghead.cli import main
code = main(sys.argv[1:])
print("EXIT", code, "TORCH", *sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


@pytest.mark.slow
def test_generate_writes_the_sample_video_without_ever_importing_torch(tmp_path):
    """The default `talkinghead generate` (FD2Talk motion, Whisper features, geometric renderer)
    runs on numpy: a real process on the bundled sample writes its video and has not loaded
    torch (1.2-1.3 CPU s, half of the path to the first frame) when it exits."""
    import os
    from pathlib import Path

    from talkinghead.io.video import iter_frames, video_info

    sample = Path(__file__).resolve().parent.parent / "talkinghead" / "assets" / "sample"
    out = tmp_path / "out.mp4"
    env = {**os.environ, "TALKINGHEAD_FACE_CACHE": str(tmp_path / "faces"), "GLOG_minloglevel": "2"}
    run = subprocess.run([sys.executable, "-c", GENERATE_WITHOUT_TORCH, "generate", "--image",
                          str(sample / "portrait.jpg"), "--audio", str(sample / "speech.wav"),
                          "-o", str(out), "-q"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-3:] == ["EXIT", "0", "TORCH"], run.stdout   # no torch module at all
    info = video_info(out)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (100, 512, 512, True)
    frames = list(iter_frames(out))
    assert len(frames) == 100 and np.abs(frames[50].astype(int) - frames[0]).mean() > 0.5  # it moves


def test_prefetched_models_are_the_ones_the_call_uses(one_thread):
    from talkinghead.pipelines.generate import GeneratePipeline

    pipe = GeneratePipeline()
    pipe.prefetch_models().join()
    motion, extractor = pipe._motion_model, pipe._extractor
    assert motion is not None and extractor is not None
    assert pipe.motion_model is motion and pipe.extractor is extractor  # not loaded again
    assert pipe.prefetch_models().join() is None and pipe.motion_model is motion


def test_a_failed_prefetch_is_raised_by_the_next_load(monkeypatch):
    import talkinghead.pipelines.generate as G

    calls = []

    def broken(name):
        calls.append(name)
        raise OSError("checkpoint unreadable")

    monkeypatch.setattr(G, "get_motion_model", broken)
    pipe = G.GeneratePipeline()
    pipe.prefetch_models().join()             # swallowed in the background thread
    with pytest.raises(OSError, match="checkpoint unreadable"):
        pipe.motion_model                     # the worker's own load raises it
    assert calls == ["fd2talk", "fd2talk"]


def test_cv2_threads_sets_one_thread_and_restores_the_pool():
    """The streamed call runs OpenCV on one thread (its pool's worker spun between jobs) and
    gives the process its pool back afterwards, also when the call fails; a remap gives the same
    bytes either way."""
    import cv2
    import numpy as np

    from talkinghead.pipelines.drive import cv2_threads

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (256, 256, 3), np.uint8)
    maps = (rng.random((256, 256, 2)) * 255).astype(np.float32)
    before = cv2.getNumThreads()
    pooled = cv2.remap(img, maps, None, cv2.INTER_LINEAR)
    with pytest.raises(RuntimeError):
        with cv2_threads(1):
            assert cv2.getNumThreads() == 1
            single = cv2.remap(img, maps, None, cv2.INTER_LINEAR)
            raise RuntimeError("the call failed")
    assert cv2.getNumThreads() == before
    assert np.array_equal(single, pooled)



def test_a_live_session_runs_opencv_on_one_thread_and_gives_the_pool_back():
    """`single_threaded` (around a live session's pushes) also holds OpenCV to one thread, whose
    pool's worker spun between the renderer's calls, and restores every count after."""
    import cv2
    import torch

    from talkinghead.pipelines.stream import single_threaded

    before = cv2.getNumThreads(), torch.get_num_threads()
    with single_threaded():
        assert (cv2.getNumThreads(), torch.get_num_threads()) == (1, 1)
    assert (cv2.getNumThreads(), torch.get_num_threads()) == before
