"""Issue #12's start-up changes (pipeline half) keep their promises: the CLI's first heavy import
pauses the garbage collector, leaves it on afterwards with torch's objects frozen, and a second
one changes nothing; models prefetched in the background are the ones the call uses, and a
failed prefetch surfaces at the next load; OpenCV runs on one thread during generate's call."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_IMPORTS = """
import gc, sys
from talkinghead.cli import _heavy_imports
assert "torch" not in sys.modules
with _heavy_imports():
    assert not gc.isenabled()
    import torch
frozen = gc.get_freeze_count()
with _heavy_imports():  # torch is loaded: nothing is paused or frozen again
    assert gc.isenabled()
    import json
print(gc.isenabled(), frozen, gc.get_freeze_count() == frozen)
"""


def test_first_heavy_import_freezes_torch_and_leaves_the_collector_on():
    out = subprocess.run([sys.executable, "-c", HEAVY_IMPORTS], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "True"                 # the collector runs again after the imports
    assert int(out[1]) > 50_000             # torch's objects (~150 k) no longer walked
    assert out[2] == "True"                 # the second call froze nothing more


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
