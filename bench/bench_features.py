"""Benchmark (not a test): Whisper-base features in numpy against the torch reference (#12).

Process CPU seconds on one thread (OMP/OpenBLAS/MKL set to 1 before numpy or torch load), beside
the load average:
- the encoder alone on the bundled sample's first window (4 s: 200 encoder frames), first call
  and warm (median of passes, numpy and torch interleaved);
- the whole `WhisperExtractor` on 30 s of speech (the sample repeated; 8 s windows with 1 s of
  context), warm, per second of audio; and on a 2 s clip (live's short hops);
- loading each encoder from the cached safetensors;
- fresh processes (alternated): import + load + the sample's features, the numpy path vs the
  torch path (`WhisperExtractor(load_encoder())`), process CPU from `resource`, and whether
  torch was imported; plus `python -X importtime` of the numpy path's modules.
Writes bench/results/features.json. `--passes N` (default 5), `--processes N` (default 3).
Goal: the numpy path no slower than torch's by more than ~10 % on the warm 30 s figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "talkinghead" / "assets" / "sample" / "speech.wav"

_PROCESS = """
import resource, sys, time
import numpy as np
from talkinghead.io.audio import read_audio
clip = read_audio({sample!r})
if {torch_path}:
    from talkinghead.audio.features import WhisperExtractor
    from talkinghead.audio.whisper import load_encoder
    ex = WhisperExtractor(load_encoder())
else:
    from talkinghead.audio.features import get_extractor
    ex = get_extractor("whisper")
first = next(ex.chunks(clip, 25.0))
u = resource.getrusage(resource.RUSAGE_SELF)
print(u.ru_utime + u.ru_stime, "torch" in sys.modules)
"""


def _cpu(fn) -> float:
    c = time.process_time()
    fn()
    return time.process_time() - c


def _load() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


def in_process(passes: int) -> dict:
    import torch

    from talkinghead.audio.features import WhisperExtractor, whisper_mel
    from talkinghead.audio.whisper import encode_window, load_encoder
    from talkinghead.audio.whisper_numpy import load_numpy_encoder
    from talkinghead.io.audio import read_audio
    from talkinghead.types import AudioClip

    torch.set_num_threads(1)
    clip = read_audio(SAMPLE)
    load_t = _cpu(lambda: load_encoder())
    load_n = _cpu(lambda: load_numpy_encoder())
    te, ne = load_encoder(), load_numpy_encoder()
    mel = whisper_mel(clip.mono())                                       # (80, 400): 200 frames

    def torch_window():
        with torch.inference_mode():
            encode_window(te, torch.from_numpy(mel)[None])

    first = {"numpy": _cpu(lambda: ne(mel)), "torch": _cpu(torch_window)}
    window = {"numpy": [], "torch": []}
    speech = AudioClip(np.tile(clip.mono(), 8)[None, :30 * 16000], 16000)
    ex = {"numpy": WhisperExtractor(ne), "torch": WhisperExtractor(te)}
    whole = {"numpy": [], "torch": []}
    for _ in range(passes):
        window["numpy"].append(_cpu(lambda: ne(mel)))
        window["torch"].append(_cpu(torch_window))
        for name in ("numpy", "torch"):
            whole[name].append(_cpu(lambda: ex[name](speech, 25.0)) / 30.0)
    short = {"numpy": [], "torch": []}                   # live's hops: a short clip at a time
    for _ in range(passes):
        for name in ("numpy", "torch"):
            short[name].append(_cpu(lambda: ex[name].frames(clip.mono()[:32000], 25.0, 50)))
    med = {k: {n: statistics.median(v[n]) for n in v} for k, v in (("window", window), ("whole", whole))}
    return {"load_cpu_s": {"numpy": round(load_n, 3), "torch": round(load_t, 3)},
            "sample_window_first_call_cpu_s": {k: round(v, 3) for k, v in first.items()},
            "sample_window_warm_cpu_s": {n: round(v, 3) for n, v in med["window"].items()},
            "sample_window_passes": {n: [round(x, 3) for x in v] for n, v in window.items()},
            "extractor_30s_cpu_s_per_s": {n: round(v, 4) for n, v in med["whole"].items()},
            "extractor_30s_passes": {n: [round(x, 4) for x in v] for n, v in whole.items()},
            "extractor_2s_clip_cpu_s": {n: round(statistics.median(v), 4) for n, v in short.items()},
            "ratio_numpy_over_torch_30s": round(med["whole"]["numpy"] / med["whole"]["torch"], 3),
            "ratio_numpy_over_torch_window": round(med["window"]["numpy"] / med["window"]["torch"], 3)}


def processes(n: int) -> dict:
    runs = {"numpy": [], "torch": []}
    for _ in range(n):
        for name in ("numpy", "torch"):
            code = _PROCESS.format(sample=str(SAMPLE), torch_path=name == "torch")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=ROOT).stdout.split()
            runs[name].append((float(out[0]), out[1] == "True"))
    return {"process_cpu_s_to_first_chunk": {k: [round(c, 3) for c, _ in v] for k, v in runs.items()},
            "median": {k: round(statistics.median(c for c, _ in v), 3) for k, v in runs.items()},
            "torch_imported": {k: sorted({t for _, t in v}) for k, v in runs.items()}}


def import_time() -> dict:
    """`-X importtime` of the numpy path's modules: each top-level import's cumulative time (what
    the `import` line itself pulled in) and their sum; whether torch appears anywhere."""
    code = "import talkinghead.audio.features, talkinghead.audio.whisper_numpy, safetensors.numpy"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, check=True, cwd=ROOT).stderr
    rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:")][1:]
    rows = [(int(cum), name[1:]) for _, cum, name in rows]               # name: 2 spaces a level
    top = {name: us for us, name in rows if not name.startswith(" ")}
    return {"top_level_cumulative_us": top, "total_s": round(sum(top.values()) / 1e6, 3),
            "torch_imported": any(name.strip().split(".")[0] == "torch" for _, name in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--processes", type=int, default=3)
    a = ap.parse_args()
    out = {"load_average": _load(), "threads": 1}
    out["in_process"] = in_process(a.passes)
    out["fresh_process"] = processes(a.processes)
    out["import_time"] = import_time()
    out["load_average_after"] = _load()
    dest = ROOT / "bench" / "results" / "features.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"load average {out['load_average']} -> {out['load_average_after']}; wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
