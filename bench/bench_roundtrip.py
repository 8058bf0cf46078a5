"""Benchmark (not a test): video-driven round trip, judged on the OUTPUT video.

Astronaut portrait driven by the real carphone clip; the output is re-analysed by the face model.
Prints Pearson r of jawOpen and mean blink (driving vs output), median |pose error| in degrees,
dlib identity distance, and background change; plots the curves to docs/drive_roundtrip.png.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from talkinghead.assets import SAMPLE_DIR, asset_path
    from talkinghead.evaluation.identity import DlibIdentity
    from talkinghead.face.extract import extract_video_motion, motion_from_face
    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.video import iter_frames
    from talkinghead.pipelines.drive import DriveConfig, DrivePipeline

    os.environ.setdefault("GLOG_minloglevel", "2")
    with tempfile.TemporaryDirectory() as d:
        out = DrivePipeline(DriveConfig())(SAMPLE_DIR / "portrait.jpg", asset_path("carphone.mp4"),
                                           Path(d) / "o.mp4", progress=False)
        measured = extract_video_motion(out.path, progress=False)
        ident = DlibIdentity()
        src = ident.embed(out.portrait.image, out.portrait.face)
        with FaceLandmarker() as lm:
            dists = [ident.distance(src, ident.embed(f, lm.detect(f)[0]))
                     for f in list(iter_frames(out.path))[::4]]
    want = out.motion
    got = measured.relative_to(motion_from_face(out.portrait.face))
    r_jaw = float(np.corrcoef(want.channel("jawOpen"), got.channel("jawOpen"))[0, 1])
    r_blink = float(np.corrcoef(want.blink.mean(1), got.blink.mean(1))[0, 1])
    pose_err = np.median(np.abs(want.rotation - got.rotation), axis=0)
    res = {"jawOpen_r": round(r_jaw, 3), "blink_r": round(r_blink, 3),
           "pose_median_abs_err_deg": dict(zip(("yaw", "pitch", "roll"),
                                               np.round(pose_err, 2).tolist())),
           "dlib_distance_median": round(float(np.median(dists)), 3),
           "dlib_distance_max": round(float(np.max(dists)), 3)}
    for k, v in res.items():
        print(f"{k:26s} {v}")
    (ROOT / "bench" / "results" / "roundtrip.json").write_text(json.dumps(res, indent=2) + "\n")

    t = np.arange(len(want)) / want.fps
    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    ax[0].plot(t, want.channel("jawOpen"), label="driving (asked)")
    ax[0].plot(t, got.channel("jawOpen"), label="output (re-analysed)")
    ax[0].set_ylabel("jawOpen delta")
    ax[0].set_title(f"drive round trip: jaw r={r_jaw:.2f}, blink r={r_blink:.2f}")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, want.blink.mean(1))
    ax[1].plot(t, got.blink.mean(1))
    ax[1].set_ylabel("blink delta")
    for i, (name, style) in enumerate(zip(("yaw", "pitch", "roll"), ("C0", "C1", "C2"))):
        ax[2].plot(t, want.rotation[:, i], style, label=f"{name} asked")
        ax[2].plot(t, got.rotation[:, i], style + "--", label=f"{name} output")
    ax[2].set_ylabel("degrees")
    ax[2].set_xlabel("seconds")
    ax[2].legend(ncol=3, fontsize=7)
    fig.tight_layout()
    dest = ROOT / "docs" / "drive_roundtrip.png"
    fig.savefig(dest, dpi=90)
    print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
