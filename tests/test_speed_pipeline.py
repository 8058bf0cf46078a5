"""Issue #12's start-up changes (pipeline half) keep their promises: the CLI's first heavy import
pauses the garbage collector, leaves it on afterwards with torch's objects frozen, and a second
one changes nothing; models prefetched in the background are the ones the call uses, and a
failed prefetch surfaces at the next load."""

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
