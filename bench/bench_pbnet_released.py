"""DAWN's released PBNet (motion/pbnet_released.py): time and peak memory of one sampling pass
against the clip's length (not a test).

The released joint model's sizes (`ReleasedPBNetConfig()`: pose 6 + eyes 2, HuBERT 1024, latents
64 / 256, 2 layers, 4 heads) with random weights:

* `ours`: `ReleasedPBNet.generate` (attention in query chunks of 256 over the +-200 frame window);
* `official`: the authors' `CVAE.generate` (transformerreemb8, a T x T bias and score matrix per
  head) on the same weights, when `--official DIR` points at the PBnet folder of a DAWN-pytorch
  commit 63cefa4 checkout (never part of this repository) and `--site` at einops / einops-exts /
  rotary-embedding-torch; also reports max |ours - official| at the lengths up to 1,000 frames.

Each measurement runs in a fresh child process, one torch thread (peak RSS, and RSS growth over
the model's). Results: bench/results/pbnet_released.json.

    .venv/bin/python bench/bench_pbnet_released.py --frames 200 1000 5000 \
        --official /work/ext/dawn_pbnet/PBnet --site /work/ext/dawn/site
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "pbnet_released.json"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _models(official: str | None, site: str | None):
    import torch

    from talkinghead.motion.pbnet_released import ReleasedPBNet

    torch.manual_seed(0)
    ours = ReleasedPBNet().eval()
    if not official:
        return ours, None
    sys.path[:0] = [site, official]
    from src.models.get_model import get_model

    theirs = get_model(dict(modeltype="cvae", archiname="transformerreemb8", device="cpu", lambdas={"rc": 1.0},
                            latent_dim=256, num_frames=200, audio_dim=1024, pos_dim=6, eye_dim=2, ff_size=128,
                            num_layers=2, num_buckets=128, max_distance=128, audio_latent_dim=256))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs.eval()


def child(impl: str, frames: int, official: str | None, site: str | None) -> dict:
    import torch

    torch.set_num_threads(1)
    ours, theirs = _models(official if impl != "ours" else None, site)
    g = torch.Generator().manual_seed(1)
    init, audio = torch.rand(1, 1, 8, generator=g), torch.randn(1, frames, 1024, generator=g)
    base = _rss_mib()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):     # the official prints 'eval!'
        if impl == "ours":
            out = ours.generate(init, audio, torch.Generator().manual_seed(5))
        else:
            torch.manual_seed(5)
            out = theirs.generate(init, audio, torch.tensor([frames]), fact=1)["output"]
    row = {"impl": impl, "frames": frames, "seconds": time.perf_counter() - t0,
           "cpu_seconds": time.process_time() - cpu0, "peak_rss_mib": _rss_mib(), "growth_mib": _rss_mib() - base}
    if impl == "compare":
        row["max_abs_diff"] = float((ours.generate(init, audio, torch.Generator().manual_seed(5)) - out).abs().max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[200, 1000, 5000])
    ap.add_argument("--official")
    ap.add_argument("--site")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.official, a.site)))
        return
    rows, env = [], dict(os.environ, OMP_NUM_THREADS="1")
    jobs = [("ours", f) for f in a.frames] + ([("official", f) for f in a.frames] +
                                              [("compare", f) for f in a.frames if f <= 1000] if a.official else [])
    for impl, frames in jobs:
        cmd = [sys.executable, __file__, "--child", impl, str(frames)] + \
              (["--official", a.official, "--site", a.site or ""] if a.official else [])
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        row = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else \
            {"impl": impl, "frames": frames, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:200]}
        print(row, flush=True)
        rows.append(row)
    load = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "loadavg": load, "threads": 1}, indent=1) + "\n")
    print("load average", load)


if __name__ == "__main__":
    main()
