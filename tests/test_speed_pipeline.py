"""Issue #12's start-up change (pipeline half) keeps its promise: the CLI's first heavy import
pauses the garbage collector, leaves it on afterwards with torch's objects frozen, and a second
one changes nothing."""

from __future__ import annotations

import subprocess
import sys

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
