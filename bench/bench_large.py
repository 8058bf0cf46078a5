"""Benchmark (not a test): time and peak memory of `generate` on large portraits (issue #13).

The bundled 512 px portrait is upscaled (bicubic, JPEG q92) to 2048, 4096 and 8000 px; each
portrait says the same 10 s of speech (the bundled clip, repeated) in a fresh process, so the
peak RSS (wait4) is that job's alone. Default --max-size 4096: the 8000 px portrait gives a
4096 px video. Goal: at 8000 px, peak < 3 GiB. Writes bench/results/large.json.

  .venv/bin/python bench/bench_large.py [--sizes 512 2048 4096 8000] [--seconds 10]
      [--max-size 4096] [--baseline COMMIT --baseline-sizes 8000]  # COMMIT's code too (git archive)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
from talkinghead.io.video import video_info
image, audio, out, max_size = sys.argv[1:5]
try:
    cfg = GenerateConfig(max_size=int(max_size) or None)
except TypeError:  # a baseline commit without max_size
    cfg = GenerateConfig()
res = GeneratePipeline(cfg)(image, audio, out, progress=False)
info = video_info(res.path)
print(json.dumps({"timings": res.timings, "frames": res.num_frames, "seconds": time.perf_counter() - t0,
                  "output": [info.width, info.height]}))
"""


def make_inputs(tmp: Path, sizes: list[int], seconds: float) -> tuple[dict[int, Path], Path]:
    import cv2
    import numpy as np

    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.types import AudioClip

    src = cv2.imread(str(SAMPLE_DIR / "portrait.jpg"))
    paths = {}
    for s in sizes:
        p = tmp / f"portrait_{s}.jpg"
        img = src if s == src.shape[1] else cv2.resize(src, (s, s), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths[s] = p
    clip = read_audio(SAMPLE_DIR / "speech.wav")
    n = int(seconds * clip.sample_rate)
    reps = int(np.ceil(n / clip.samples.shape[1]))
    speech = tmp / "speech.wav"
    write_wav(speech, AudioClip(np.tile(clip.samples, (1, reps))[:, :n], clip.sample_rate))
    return paths, speech


def run_child(code_root: Path, image: Path, audio: Path, out: Path, max_size: int) -> dict:
    """One generate job in a fresh process: its figures and its own peak RSS (wait4)."""
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=str(code_root))
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(image), str(audio), str(out),
                              str(max_size)], stdout=fo, stderr=fe, text=True, cwd=code_root, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0), fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    if p.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {p.returncode}"
        return {"error": last}
    r = json.loads(stdout.strip().splitlines()[-1])
    r["wall_s"] = wall
    r["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    r["cpu_s"] = usage.ru_utime + usage.ru_stime  # steadier than wall time on a shared machine
    r["stderr"] = [ln for ln in stderr.splitlines() if "scaled down" in ln or ln.startswith("error")]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096, 8000])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-size", type=int, default=4096)
    ap.add_argument("--baseline", help="a commit whose code runs the same jobs, for comparison")
    ap.add_argument("--baseline-sizes", type=int, nargs="+", default=[8000],
                    help="portrait sizes the baseline runs (it may need > 6 GB at 8000 px)")
    ap.add_argument("--out", default="large.json", help="file name under bench/results/")
    a = ap.parse_args()
    load = os.getloadavg()
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "seconds_of_speech": a.seconds, "max_size": a.max_size,
        "load_average_before": [round(x, 2) for x in load], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        portraits, speech = make_inputs(tmp, a.sizes, a.seconds)
        roots = {"now": ROOT}
        if a.baseline:
            base = tmp / "baseline"
            base.mkdir()
            subprocess.run(f"git archive {a.baseline} | tar -x -C {base}", shell=True, cwd=ROOT,
                           check=True)
            roots["baseline"] = base
            results["baseline"] = a.baseline
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other jobs share the machine)")
        print(f"{'code':9} {'portrait':>9} {'output':>10} {'wall s':>7} {'CPU s':>6} {'peak MiB':>9}"
              f"  stages (wall s)")
        for name, root in roots.items():
            for s, image in portraits.items():
                if name == "baseline" and s not in a.baseline_sizes:
                    continue
                r = run_child(root, image, speech, tmp / f"out_{name}_{s}.mp4", a.max_size)
                results["runs"][f"{name}_{s}"] = r
                if "error" in r:
                    print(f"{name:9} {s:>9} failed: {r['error']}")
                    continue
                t = r["timings"]
                stages = " ".join(f"{k} {v:.1f}" for k, v in t.items())
                print(f"{name:9} {s:>9} {r['output'][0]:>5}x{r['output'][1]:<4} {r['wall_s']:7.1f} "
                      f"{r['cpu_s']:6.1f} {r['peak_rss_mib']:9.0f}  {stages}", flush=True)
    now = {s: results["runs"].get(f"now_{s}", {}) for s in a.sizes}
    if 512 in a.sizes and "peak_rss_mib" in now[512]:
        results["ratios_vs_512"] = {s: {"wall": r["wall_s"] / now[512]["wall_s"],
                                        "cpu": r["cpu_s"] / now[512]["cpu_s"],
                                        "peak_rss": r["peak_rss_mib"] / now[512]["peak_rss_mib"]}
                                    for s, r in now.items() if "wall_s" in r}
    if 8000 in a.sizes and "peak_rss_mib" in now[8000]:
        results["goal_8000_peak_below_3GiB"] = now[8000]["peak_rss_mib"] < 3 * 1024
        print(f"8000 px peak {now[8000]['peak_rss_mib']:.0f} MiB: goal < 3072 MiB "
              f"{'met' if results['goal_8000_peak_below_3GiB'] else 'NOT met'}")
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "bench" / "results" / a.out
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
