"""Benchmark (not a test): FD2Talk's motion sampling in numpy (the default) against the torch
modules, in process CPU seconds on one thread (run it with OMP_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1, as the figures in docs were taken).

1. warm, in one process, the two backends alternated: the bundled sample's first chunk (its
   4 s = 100 frames x 10 DDIM steps, both models; `stream`, the pose in a second thread as
   `generate` runs it) and `--seconds` of speech (the sample's Whisper features tiled) whole
   (`__call__`) and streamed (rows arriving 50 at a time), per second of video;
2. cold, a fresh process per backend: import, load both models, sample the first chunk;
   process CPU in all and whether torch was imported.
`uptime`'s load is printed beside the figures. Results: bench/results/fd2talk_numpy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEECH = ROOT / "talkinghead" / "assets" / "sample" / "speech.wav"

COLD = """
import resource, sys, time
import numpy as np
t0 = time.process_time()
from talkinghead.motion.generate import FD2TalkMotion, MotionControls
m = FD2TalkMotion(backend=sys.argv[2])
t1 = time.process_time()
v = np.load(sys.argv[1])
next(iter(m.stream(iter([v]), len(v), 25.0, MotionControls())))
t2 = time.process_time()
print(t1 - t0, t2 - t1, t2, 'torch' in sys.modules)
"""


def _load() -> str:
    return os.getloadavg().__repr__()


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def _features() -> np.ndarray:
    from talkinghead.audio.features import get_extractor
    from talkinghead.pipelines.generate import load_speech

    return get_extractor("whisper")(load_speech(SPEECH), 25.0).values


def warm(values: np.ndarray, seconds: float, repeats: int) -> dict:
    from talkinghead.audio.features import AudioFeatures
    from talkinghead.motion.generate import FD2TalkMotion, MotionControls

    models = {"numpy": FD2TalkMotion(), "torch": FD2TalkMotion(backend="torch")}
    long = np.resize(values, (int(seconds * 25), values.shape[1])).astype(np.float32)   # (T, A)
    controls = MotionControls()
    jobs = {
        "first_chunk": lambda m: next(iter(m.stream(iter([values]), len(values), 25.0, controls))),
        "whole": lambda m: m(AudioFeatures(long, 25.0, "whisper"), controls),
        "stream": lambda m: list(m.stream((long[i:i + 50] for i in range(0, len(long), 50)),
                                          len(long), 25.0, controls)),
    }
    times: dict = {job: {name: [] for name in models} for job in jobs}
    for name, m in models.items():   # warm-up
        jobs["first_chunk"](m)
    for _ in range(repeats):
        for job, fn in jobs.items():
            for name, m in models.items():
                times[job][name].append(_cpu(lambda: fn(m)))
    out = {}
    for job in jobs:
        med = {name: statistics.median(v) for name, v in times[job].items()}
        per = 1 if job == "first_chunk" else seconds
        out[job] = {f"{name}_cpu_s" + ("" if per == 1 else "_per_s"): med[name] / per for name in med}
        out[job]["numpy_over_torch"] = med["numpy"] / med["torch"]
        out[job]["all_runs"] = times[job]
    return out


def cold(values: np.ndarray, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "features.npy"
        np.save(path, values)
        res: dict = {"numpy": [], "torch": []}
        for _ in range(repeats):
            for backend in res:
                out = subprocess.run([sys.executable, "-c", COLD, str(path), backend], capture_output=True,
                                     text=True, check=True, cwd=ROOT).stdout.split()
                res[backend].append([float(x) for x in out[:3]] + [out[3] == "True"])
    return {b: {"import_and_load_cpu_s": statistics.median(r[0] for r in runs),
                "first_chunk_cpu_s": statistics.median(r[1] for r in runs),
                "process_cpu_s": statistics.median(r[2] for r in runs),
                "torch_imported": runs[0][3]} for b, runs in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    values = _features()
    result = {"threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
              "load_before": _load()}
    result["cold"] = cold(values, args.repeats)
    result["warm"] = warm(values, args.seconds, args.repeats)
    result["load_after"] = _load()
    for job, r in result["warm"].items():
        print(job, {k: round(v, 4) for k, v in r.items() if k != "all_runs"})
    for b, r in result["cold"].items():
        print("cold", b, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
    print("load", result["load_before"], "->", result["load_after"])
    path = ROOT / "bench" / "results" / "fd2talk_numpy.json"
    path.write_text(json.dumps(result, indent=1))
    print("written", path)


if __name__ == "__main__":
    main()
