"""Benchmark suite (not a test): the default pipeline on real clips, stage by stage, and the
offline quality figures of `talkinghead eval` on its output. Results go to
bench/results/suite.json; when that file already exists, the change since then is printed, so
two commits can be compared by running this before and after.

1. Per-stage time (portrait, audio features, motion, render, encode) and seconds of compute per
   second of video, for the bundled sample (4 s) and the real-speech test set (20 s: ARCTIC a0007
   plus the ALSA voice clips; never trained on).
2. Peak RSS and time of a whole `generate` in a fresh process for 10 s, 60 s and 10 min of audio
   (the real speech, looped).
3. `talkinghead eval` on each output (weight-free metrics: lip sync vs the pocketsphinx viseme
   track, dlib CSIM, CPBD, blinks, pose, Beat Align Score), and the wall time of the eval
   command on the bundled sample's output, offline (`unshare -n` when run as root).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "talkinghead" / "assets" / "sample"
RESULTS = ROOT / "bench" / "results" / "suite.json"
STAGES = ("portrait", "features", "motion", "render", "encode")
QUALITY = ("lip_r", "lip_offset_frames", "bilabial_hit_rate", "pause_closed_rate", "csim_dlib",
           "dlib_distance", "cpbd", "blinks_per_second", "pose_std_deg", "beat_align")


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    return round(d, 4) if isinstance(d, float) else d


def stage_times(audio: Path, out: Path) -> dict:
    from talkinghead.pipelines.generate import GeneratePipeline

    t0 = time.perf_counter()
    r = GeneratePipeline()(SAMPLE / "portrait.jpg", audio, out, progress=False)
    wall = time.perf_counter() - t0
    seconds = r.num_frames / r.fps
    return {"video_seconds": seconds, **{f"{k}_s": r.timings[k] for k in STAGES},
            "total_s": wall, "compute_per_video_second": wall / seconds}


def quality(video: Path) -> dict:
    from talkinghead.evaluation.runner import evaluate

    t0 = time.perf_counter()
    r = evaluate([video], source=SAMPLE / "portrait.jpg", progress=False)
    m = r.videos[0].metrics
    return {**{k: m[k] for k in QUALITY}, "eval_s": time.perf_counter() - t0}


def memory(seconds: float) -> dict:
    """Peak RSS and time of a whole `generate` in a fresh process (bench_motion's child)."""
    from bench_motion import rss_child

    r = rss_child(seconds, full=True)
    return {"peak_rss_mib": r["peak_rss_mib"], "wall_s": r["wall_s"],
            "compute_per_video_second": r["wall_s"] / seconds}


def eval_cli_seconds(video: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "talkinghead", "eval", "--generated", str(video), "--source",
           str(SAMPLE / "portrait.jpg"), "-o", str(out), "-q"]
    offline = os.geteuid() == 0 and shutil.which("unshare") is not None
    if offline:
        cmd = ["unshare", "-n", *cmd]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return {"eval_cli_s": time.perf_counter() - t0, "offline": offline}


def _compare(old: dict, new: dict, prefix: str = "") -> list[str]:
    lines = []
    for k, v in new.items():
        o = old.get(k) if isinstance(old, dict) else None
        if isinstance(v, dict):
            lines += _compare(o or {}, v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and isinstance(o, (int, float)) and o != v:
            rel = f" ({(v - o) / abs(o):+.0%})" if o else ""
            lines.append(f"  {prefix}{k}: {o:.4g} -> {v:.4g}{rel}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-long", action="store_true", help="skip the 10-minute run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from talkinghead.evaluation.testset import real_speech
    from talkinghead.io.audio import write_wav

    results: dict = {"clips": {}, "memory": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        clips = {"sample_4s": SAMPLE / "speech.wav",
                 "real_speech_20s": write_wav(d / "real.wav", real_speech().clip)}
        for name, audio in clips.items():
            video = d / f"{name}.mp4"
            results["clips"][name] = {**stage_times(audio, video), **quality(video)}
        results["eval_cli"] = eval_cli_seconds(d / "sample_4s.mp4", d / "report")
    for seconds in (10, 60) + (() if args.no_long else (600,)):
        results["memory"][f"{seconds}s"] = memory(seconds)
    results = _round(results)

    print(f"{'clip':16} " + " ".join(f"{s:>9}" for s in STAGES) + f" {'s/s':>6} {'lip r':>6} "
          f"{'CSIM':>6} {'CPBD':>6} {'blink/s':>7} {'pose':>5} {'BAS':>5}")
    for name, r in results["clips"].items():
        print(f"{name:16} " + " ".join(f"{r[s + '_s']:9.2f}" for s in STAGES)
              + f" {r['compute_per_video_second']:6.3f} {r['lip_r']:6.2f} {r['csim_dlib']:6.3f}"
              f" {r['cpbd']:6.3f} {r['blinks_per_second']:7.2f} {r['pose_std_deg']:5.2f} {r['beat_align']:5.3f}")
    for k, m in results["memory"].items():
        print(f"generate {k:>5}: peak RSS {m['peak_rss_mib']:.0f} MiB, {m['wall_s']:.1f} s "
              f"({m['compute_per_video_second']:.3f} s per second of video)")
    e = results["eval_cli"]
    print(f"talkinghead eval on the sample's output: {e['eval_cli_s']:.1f} s"
          f"{' (offline: unshare -n)' if e['offline'] else ''}")
    if RESULTS.exists():
        changes = _compare(json.loads(RESULTS.read_text()), results)
        print("changes since the last run:" if changes else "no change since the last run")
        print("\n".join(changes))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
