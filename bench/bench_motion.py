"""Benchmark (not a test): audio-driven generation judged on the OUTPUT video, speed and memory.

1. Lip sync on real recorded speech (ARCTIC a0007 + the ALSA voice clips, never trained on):
   the generated video is re-analysed by the face model; mouth opening vs the pocketsphinx
   viseme track (Pearson r, best offset), bilabial closures, closed mouth in pauses.
2. Liveliness from the same video: blinks/s and durations, head-pose std; `--still` pose std;
   two seeds give different head motion.
3. Every motion model (fd2talk, sadtalker, pbnet) on the same clip.
4. Speed: features + motion for 60 s of audio with the default model and step count.
5. Memory: peak RSS of features + motion for 10 s, 60 s and 10 min of audio (fresh process
   each), and of a whole 10-minute `generate` (render + encode included) with --long.
6. Plots: docs/generate_lipsync.png (opening vs viseme track, pose, blinks) and
   docs/motion_training.png (validation curves of the shipped models).
Results: bench/results/motion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORTRAIT = ROOT / "talkinghead" / "assets" / "sample" / "portrait.jpg"


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_round(v) for v in d]
    return round(d, 3) if isinstance(d, float) else d


def lipsync(model: str = "fd2talk", still: bool = False, seed: int = 0, plot: bool = False) -> dict:
    from talkinghead.evaluation.generated import judge_on_real_speech
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    pipe = GeneratePipeline(GenerateConfig(motion_model=model, still=still))
    with tempfile.TemporaryDirectory() as d:
        r = judge_on_real_speech(pipe, PORTRAIT, d, MotionControls(seed=seed))
        if plot:
            _plot_lipsync(r, ROOT / "docs" / "generate_lipsync.png")
    return {"lipsync": r.lipsync.as_dict(), "motion": r.stats.as_dict(),
            "seconds": r.stats.seconds, "pose": r.analysis.motion.rotation}


def _plot_lipsync(r, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from talkinghead.data.visemes import BILABIALS, opening_track

    o = r.analysis.opening
    t = np.arange(len(o)) / 25.0
    track = opening_track(r.speech.phones, len(o))
    fig, ax = plt.subplots(3, 1, figsize=(12, 7), sharex=True)
    ax[0].plot(t, (o - np.nanmean(o)) / np.nanstd(o), label="mouth opening (output video)")
    ax[0].plot(t, (track - track.mean()) / track.std(), label="viseme track (pocketsphinx)", alpha=0.8)
    for p in r.speech.phones:
        if p.name in BILABIALS:
            ax[0].axvspan(p.start, p.end, color="red", alpha=0.2)
        if p.name == "sil" and p.end - p.start >= 0.3:
            ax[0].axvspan(p.start, p.end, color="grey", alpha=0.15)
    ax[0].set_title(f"lip sync on real speech: r = {r.lipsync.pearson_r:.2f} "
                    "(red: p/b/m, grey: pauses >= 300 ms)")
    ax[0].legend(loc="upper right")
    rot = r.analysis.motion.rotation - r.analysis.motion.rotation[0]
    for i, name in enumerate(("yaw", "pitch", "roll")):
        ax[1].plot(t, rot[:, i], label=name)
    ax[1].set_ylabel("degrees")
    ax[1].legend(loc="upper right")
    ax[1].set_title(f"head pose (std {r.stats.pose_std_deg:.1f} deg)")
    ax[2].plot(t, r.analysis.blink, label="eye closure (face model)")
    ax[2].set_title(f"blinks: {r.stats.blinks} ({r.stats.blinks_per_second:.2f}/s)")
    ax[2].set_xlabel("seconds")
    for name, start, _ in r.speech.parts:
        ax[0].text(start, ax[0].get_ylim()[1] * 0.9, name, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=90)


def motion_speed(seconds: float = 60.0, repeats: int = 3) -> dict:
    import torch

    from talkinghead.evaluation.testset import real_speech
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
    from talkinghead.types import AudioClip

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    pipe = GeneratePipeline(GenerateConfig())
    _ = pipe.extractor
    load = time.perf_counter() - t0
    speech = real_speech().clip.mono()
    samples = np.resize(speech, int(seconds * 16000))[None]
    clip = AudioClip(samples.astype(np.float32), 16000)
    times, feats = [], []
    for _ in range(repeats):
        t1 = time.perf_counter()
        features = pipe.extractor(clip, 25.0)
        t2 = time.perf_counter()
        pipe.motion_model(features, MotionControls())
        t3 = time.perf_counter()
        feats.append(t2 - t1)
        times.append(t3 - t1)
    return {"audio_seconds": seconds, "load_s": load, "features_s": min(feats),
            "features+motion_s": min(times), "goal_s": 3.0}


def rss_child(seconds: float, full: bool) -> dict:
    """Run in a fresh process: generate motion (or a whole video) for `seconds` of audio."""
    code = f"""
import resource, sys, time, tempfile, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from talkinghead.evaluation.testset import real_speech
from talkinghead.io.audio import write_wav
from talkinghead.motion.generate import MotionControls
from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
from talkinghead.types import AudioClip
speech = real_speech().clip.mono()
clip = AudioClip(np.resize(speech, int({seconds} * 16000))[None].astype(np.float32), 16000)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
pipe = GeneratePipeline(GenerateConfig())
if {full}:
    d = tempfile.mkdtemp()
    wav = write_wav(d + '/a.wav', clip)
    pipe({str(PORTRAIT)!r}, wav, d + '/o.mp4', MotionControls(), progress=False)
else:
    pipe.motion(clip, MotionControls())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, base / 1024, time.perf_counter() - t)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, base, secs = map(float, out.stdout.split()[-3:])
    return {"audio_seconds": seconds, "peak_rss_mib": peak, "before_mib": base, "wall_s": secs,
            "whole_video": full}


def training_curves(path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from talkinghead.motion.registry import WEIGHTS_DIR

    logs = {}
    for d in sorted(WEIGHTS_DIR.iterdir()):
        f = d / "log.jsonl"
        if f.exists():
            rows = [json.loads(x) for x in f.read_text().splitlines()]
            logs[d.name] = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (name, pts) in zip(axes.flat, logs.items()):
        s, v = zip(*pts)
        ax.plot(s, v, marker="o", ms=3)
        ax.set_yscale("log")
        ax.set_title(f"{name}: {v[0]:.3g} -> {v[-1]:.3g}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (held-out voice)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return {k: {"first": v[0][1], "last": v[-1][1], "steps": v[-1][0]} for k, v in logs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true", help="also a whole 10-minute generate (RSS)")
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    res: dict = {}
    main_run = lipsync(plot=True)
    res["default"] = {k: main_run[k] for k in ("lipsync", "motion")}
    still = lipsync(still=True)
    res["still_pose_std_deg"] = still["motion"]["pose_std_deg"]
    other = lipsync(seed=1)
    res["seed_pose_difference_deg"] = float(np.abs(other["pose"] - main_run["pose"]).mean())
    res["models"] = {m: {k: lipsync(m)[k] for k in ("lipsync", "motion")} for m in ("sadtalker", "pbnet")}
    res["speed"] = motion_speed()
    res["memory"] = [rss_child(s, False) for s in (10, 60, 600)]
    if args.long:
        res["memory"].append(rss_child(600, True))
    res["training"] = training_curves(ROOT / "docs" / "motion_training.png")
    res = _round(res)
    out = ROOT / "bench" / "results" / "motion.json"
    out.write_text(json.dumps(res, indent=2))
    ls = res["default"]["lipsync"]
    mo = res["default"]["motion"]
    print(f"lip sync (real speech, output video): r={ls['pearson_r']:.3f} (goal 0.6), offset "
          f"{ls['offset_frames']} frames, bilabials {ls['bilabial_hit_rate']:.2f} of {ls['bilabials']} "
          f"(goal 0.8), pauses closed {ls['pause_closed_rate']:.2f} of {ls['pauses']}")
    print(f"liveliness: {mo['blinks_per_second']:.2f} blinks/s (goal 0.15-0.6), durations "
          f"{mo['blink_durations_ms']} ms, pose std {mo['pose_std_deg']:.2f} deg (goal 1.5-8); "
          f"--still {res['still_pose_std_deg']:.2f} deg (goal < 0.5); seed 0 vs 1 pose differs by "
          f"{res['seed_pose_difference_deg']:.2f} deg")
    for m, v in res["models"].items():
        print(f"{m}: r={v['lipsync']['pearson_r']:.3f}, blinks/s {v['motion']['blinks_per_second']:.2f}, "
              f"pose std {v['motion']['pose_std_deg']:.2f}")
    sp = res["speed"]
    print(f"speed: features+motion for {sp['audio_seconds']:.0f} s audio: {sp['features+motion_s']:.2f} s "
          f"(goal 3 s; features {sp['features_s']:.2f} s; model load {sp['load_s']:.1f} s)")
    for m in res["memory"]:
        print(f"memory: {m['audio_seconds']:.0f} s audio, {'whole video' if m['whole_video'] else 'motion'}: "
              f"peak RSS {m['peak_rss_mib']:.0f} MiB ({m['wall_s']:.1f} s)")
    for k, v in res["training"].items():
        print(f"training {k}: validation loss {v['first']:.4g} -> {v['last']:.4g} in {v['steps']} steps")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
