"""Serving benchmark: jobs per minute for 10 s clips through `talkinghead serve` with 1 and 2
workers, and the API's overhead over the CLI for the same job.

Everything runs on this machine: a real server process on 127.0.0.1 and the real CLI. Prints a
table and writes bench/results/serve.json (with the load average: other work on the machine
shows up in every figure).

  python bench/bench_serve.py [--seconds 10] [--jobs 4] [--crop 256]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "talkinghead" / "assets" / "sample"
sys.path.insert(0, str(ROOT))


def make_clip(seconds: float, out: Path) -> Path:
    import numpy as np

    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.types import AudioClip

    clip = read_audio(SAMPLE / "speech.wav")
    n = int(seconds * clip.sample_rate)
    samples = np.resize(clip.samples[0], n)[None]                       # the sample, looped
    return write_wav(out, AudioClip(samples.astype(np.float32), clip.sample_rate))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def options(crop: int | None) -> dict:
    return {"crop": True, "size": crop} if crop else {}


def serve_run(workers: int, jobs: int, audio: Path, crop: int | None, data: Path,
              threads: int | None = None) -> dict:
    """Start a server, warm each worker with one job, then time `jobs` submitted at once."""
    from talkinghead.serve.client import Client

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "talkinghead", "serve", "--port", str(port),
                             "--data", str(data), "--workers", str(workers), "-q",
                             "--threads", str(threads or max(1, os.cpu_count() // workers))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Client(f"http://127.0.0.1:{port}")
    load0 = os.getloadavg()[0]
    try:
        assert c.healthy(120), "server did not start"
        files = {"image": SAMPLE / "portrait.jpg", "audio": audio}
        warm = [c.submit(files, options(crop)) for _ in range(workers)]   # load models in each runner
        for j in warm:
            assert c.wait(j, 1800)["status"] == "done"
        # one job alone on a warm server: end-to-end latency vs the pipeline's own time
        t = time.perf_counter()
        one = c.submit(files, options(crop))
        single = c.wait(one, 1800, poll=0.1)
        c.download(one, data / "one.mp4")
        latency = time.perf_counter() - t
        t = time.perf_counter()
        ids = [c.submit(files, {**options(crop), "seed": i}) for i in range(jobs)]
        done = [c.wait(i, 3600) for i in ids]
        wall = time.perf_counter() - t
        assert all(d["status"] == "done" for d in done), [d["error"] for d in done]
        return {"workers": workers, "jobs": jobs, "wall_s": round(wall, 1), "load_before_after":
                [round(load0, 1), round(os.getloadavg()[0], 1)],
                "jobs_per_min": round(jobs / wall * 60, 2), "single_latency_s": round(latency, 2),
                "single_pipeline_s": single["timings"]["total"]}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def cli_run(audio: Path, crop: int | None, out: Path) -> float:
    args = [sys.executable, "-m", "talkinghead", "generate", "--image", str(SAMPLE / "portrait.jpg"),
            "--audio", str(audio), "-o", str(out), "-q"] + (["--crop", "--size", str(crop)] if crop else [])
    t = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--crop", type=int, help="crop size (default: full image, as the CLI's default)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = make_clip(a.seconds, tmp / "clip.wav")
        cli = cli_run(audio, a.crop, tmp / "cli.mp4")
        runs = [serve_run(w, a.jobs, audio, a.crop, tmp / f"data{w}", a.threads) for w in (1, 2)]
    load = os.getloadavg()
    result = {"clip_seconds": a.seconds, "crop": a.crop,
              "threads_per_worker": a.threads or "cores/workers", "cli_wall_s": round(cli, 2),
              "runs": runs,
              "api_latency_over_cli": round(runs[0]["single_latency_s"] / cli, 3),
              "api_overhead_s": round(runs[0]["single_latency_s"] - runs[0]["single_pipeline_s"], 2),
              "speedup_2_workers": round(runs[1]["jobs_per_min"] / runs[0]["jobs_per_min"], 2),
              "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
              "note": "taken while other work loaded the machine: see loadavg"}
    print(f"{a.seconds:g} s clips, {'crop ' + str(a.crop) if a.crop else 'full image'}, "
          f"load average {load[0]:.1f} on {os.cpu_count()} cores")
    print(f"CLI (cold process): {cli:.1f} s")
    for r in runs:
        print(f"serve --workers {r['workers']}: {r['jobs_per_min']:.2f} jobs/min ({r['jobs']} jobs in "
              f"{r['wall_s']:.0f} s); one job on a warm server {r['single_latency_s']:.1f} s "
              f"end to end, {r['single_pipeline_s']:.1f} s in the pipeline (load average "
              f"{r['load_before_after'][0]} -> {r['load_before_after'][1]})")
    print(f"API overhead (end to end - pipeline): {result['api_overhead_s']:.2f} s; "
          f"API latency / CLI wall: {result['api_latency_over_cli']:.2f}; "
          f"2 workers / 1 worker: {result['speedup_2_workers']:.2f}x")
    out = ROOT / "bench" / "results" / "serve.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
