"""Benchmark (not a test): geometric renderer throughput and end-to-end cost of `drive`.

Prints frames/s at 512x512 and at larger source resolutions (output at the source's full
resolution), and seconds of compute per second of video for the whole job (portrait analysis,
calibration, driving-video analysis, render, H.264/AAC encode). Writes bench/results/render.json.
`--plate`: only the render at 512 with and without the still background plate (#10), in frames
per wall and per CPU second, beside the load average -> bench/results/render_plate.json.
`--thread [--against TREE] [--passes N]`: the render thread's CPU per frame at 512 (#12): thread
and process CPU time with OpenCV's default threads and with one, the parts of a frame, and with
`--against` another source tree (e.g. `git archive` of an older commit) rendered in the same
process, passes interleaved, with the largest pixel difference -> bench/results/render_thread.json.
`--spline`: the warp's thin-plate spline alone on its real calls (carphone's motion, 512): thread
CPU per call of the whole `tps_backward` and of its parts (system kernel, LU solve, grid kernel,
product) -> bench/results/render_spline.json (#12: where 40 % of a frame goes).
Goal (issue #2): >= 50 frames/s at 512x512 on 2 cores.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render_fps(image: np.ndarray, motion, frames: int = 200, config=None) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second of this process) of `render`."""
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.render.geometric import GeometricRenderer

    with FaceLandmarker() as lm:
        face = analyze_portrait(image, "bench", lm)
        r = GeometricRenderer() if config is None else GeometricRenderer(config)
        state = r.prepare(image, face)
        r.calibrate(state, lm)
    for t in range(10):  # warm-up
        r.render(state, motion[t % len(motion)])
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(frames):
        r.render(state, motion[t % len(motion)])
    return frames / (time.perf_counter() - t0), frames / (time.process_time() - c0)


def _write(out: dict, name: str) -> str:
    """Record the load average after the run, write bench/results/NAME.json, and say where."""
    out["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    dest = ROOT / "bench" / "results" / name
    dest.write_text(json.dumps(out, indent=2) + "\n")
    return f"load average {out['load_average']} -> {out['load_average_after']}; wrote {dest.relative_to(ROOT)}"


def plate_cost(image: np.ndarray, motion) -> None:
    """Render speed at 512 with and without the still background plate (render/background.py);
    CPU-time figures, since wall time means little on a machine other jobs load."""
    from talkinghead.render.geometric import RenderConfig

    out: dict[str, object] = {"load_average": [round(x, 1) for x in os.getloadavg()]}
    for name, cfg in (("plate", RenderConfig()), ("no_plate", RenderConfig(still_background=False))):
        wall, cpu = render_fps(image, motion, 200, cfg)
        out[name] = {"frames_per_s": round(wall, 1), "frames_per_cpu_s": round(cpu, 1)}
        print(f"render 512x512 {name:9s}: {wall:7.1f} frames/s, {cpu:7.1f} frames per CPU second")
    print(_write(out, "render_plate.json"))


def _load_renderer(tree: Path | None):
    """The geometric renderer module of `tree` (None: this checkout), imported afresh: two trees
    can render side by side in one process (each keeps its own module globals)."""
    import importlib

    for k in [k for k in sys.modules if k == "talkinghead" or k.startswith("talkinghead.")]:
        del sys.modules[k]
    if tree is not None:
        sys.path.insert(0, str(tree))
    try:
        mod = importlib.import_module("talkinghead.render.geometric")
    finally:
        if tree is not None:
            sys.path.remove(str(tree))
    return mod


def _cpu_per_frame(render, frames, passes: int) -> list[tuple[float, float]]:
    """(thread, process) CPU ms per frame of each pass."""
    out = []
    for _ in range(passes):
        c, p = time.thread_time(), time.process_time()
        for f in frames:
            render(f)
        out.append((1e3 * (time.thread_time() - c) / len(frames), 1e3 * (time.process_time() - p) / len(frames)))
    return out


def render_thread(image: np.ndarray, face, motion, against: Path | None, passes: int) -> None:
    """Render-thread CPU per frame (sample portrait, 512, one BLAS thread as `generate` renders)."""
    import cv2
    from threadpoolctl import threadpool_limits

    frames = [motion[t] for t in range(len(motion))]
    trees = {"this": None, **({"against": against} if against else {})}
    sides = {}
    for name, tree in trees.items():
        G = _load_renderer(tree)
        r = G.GeometricRenderer()
        state = r._prepare(image, face)
        sides[name] = (lambda f, r=r, state=state: r.render(state, f))
    out: dict[str, object] = {"load_average": [round(x, 1) for x in os.getloadavg()],
                              "frames": len(frames), "passes": passes, "against": str(against)}
    if against:
        a = np.stack([sides["this"](f) for f in frames]).astype(np.int16)
        b = np.stack([sides["against"](f) for f in frames])
        out["max_pixel_difference"] = int(np.abs(a - b).max())
        out["pixels_differing"] = int((a != b).sum())
    default = cv2.getNumThreads()
    with threadpool_limits(1):
        for threads in (default, 1):
            cv2.setNumThreads(threads)
            got = {k: [] for k in sides}
            for i in range(passes):                # interleaved, alternating the order
                for k in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                    got[k] += _cpu_per_frame(sides[k], frames, 1)
            for k, v in got.items():
                v = np.array(v)
                row = {"thread_ms": round(float(np.median(v[:, 0])), 3),
                       "process_ms": round(float(np.median(v[:, 1])), 3),
                       "thread_ms_passes": [round(x, 2) for x in v[:, 0]]}
                out[f"{k}_opencv_threads_{threads}"] = row
                print(f"{k:8s} OpenCV threads {threads}: {row['thread_ms']:.2f} ms thread CPU, "
                      f"{row['process_ms']:.2f} ms process CPU per frame (medians of {passes} passes)")
        cv2.setNumThreads(default)
    if against:
        for threads in (default, 1):
            ratio = out[f"against_opencv_threads_{threads}"]["thread_ms"] / out[f"this_opencv_threads_{threads}"]["thread_ms"]
            out[f"ratio_opencv_threads_{threads}"] = round(ratio, 3)
            print(f"against / this, OpenCV threads {threads}: {ratio:.2f}x thread CPU")
        print(f"largest pixel difference {out['max_pixel_difference']} ({out['pixels_differing']} values differ)")
    print(_write(out, "render_thread.json"))


def spline_parts(image: np.ndarray, face, motion, passes: int = 3) -> None:
    """Thread CPU per call of the warp's spline and its parts on the calls a render makes."""
    import cv2
    from threadpoolctl import threadpool_limits

    import talkinghead.render.geometric as G
    from talkinghead.render.tps import _kernel, _sq_dist

    calls = []
    exact = G.tps_backward
    G.tps_backward = lambda d, s, g, reg: calls.append((d, s, g, reg)) or exact(d, s, g, reg)
    try:
        r = G.GeometricRenderer()
        state = r._prepare(image, face)
        for t in range(len(motion)):
            r.render(state, motion[t])
    finally:
        G.tps_backward = exact
    n = len(calls[0][1])
    systems = []
    for d, s, g, reg in calls:
        d = d.astype(np.float64)
        lhs = np.zeros((n + 3, n + 3))                       # as tps_backward builds it
        lhs[:n, :n] = _kernel(_sq_dist(d, d))
        lhs.flat[:(n + 3) * n:n + 4] += reg
        lhs[:n, n] = lhs[n, :n] = 1.0
        lhs[:n, n + 1:], lhs[n + 1:, :n] = d, d.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = s - d
        systems.append((lhs, rhs))
    coef = np.linalg.solve(*systems[0])[:n].astype(np.float32)
    kg = _kernel(_sq_dist(calls[0][2], calls[0][0]))
    parts = {
        "tps_backward": lambda i: exact(*calls[i]),
        "system_kernel": lambda i: _kernel(_sq_dist(calls[i][0].astype(np.float64),
                                                    calls[i][0].astype(np.float64))),
        "lu_solve": lambda i: np.linalg.solve(*systems[i]),
        "grid_kernel": lambda i: _kernel(_sq_dist(calls[i][2], calls[i][0])),
        "grid_product": lambda i: kg @ coef,
    }
    out: dict[str, object] = {"load_average": [round(x, 1) for x in os.getloadavg()],
                              "calls": len(calls), "controls": n, "grid_points": len(calls[0][2])}
    with threadpool_limits(1):
        cv2.setNumThreads(1)
        for name, f in parts.items():
            best = []
            for _ in range(passes):
                c = time.thread_time()
                for i in range(len(calls)):
                    f(i)
                best.append(1e3 * (time.thread_time() - c) / len(calls))
            out[name + "_ms"] = round(min(best), 3)
            print(f"{name:14s} {min(best):.3f} ms thread CPU per call (best of {passes} passes)")
    print(f"{len(calls)} calls, {n} controls, {out['grid_points']} grid points; "
          + _write(out, "render_spline.json"))


def main() -> None:
    import cv2

    from talkinghead.assets import SAMPLE_DIR, asset_path
    from talkinghead.io.image import read_image
    from talkinghead.pipelines.drive import DriveConfig, DrivePipeline

    os.environ.setdefault("GLOG_minloglevel", "2")
    portrait = SAMPLE_DIR / "portrait.jpg"
    video = asset_path("carphone.mp4")
    pipe = DrivePipeline(DriveConfig())
    motion = pipe.driving_motion(video, progress=False)
    image = read_image(portrait)
    if "--plate" in sys.argv:
        plate_cost(image, motion)
        return
    if "--thread" in sys.argv or "--spline" in sys.argv:
        from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait

        with FaceLandmarker() as lm:
            face = analyze_portrait(image, "bench", lm)
        if "--spline" in sys.argv:
            spline_parts(image, face, motion)
            return
        arg = lambda k, d: sys.argv[sys.argv.index(k) + 1] if k in sys.argv else d  # noqa: E731
        against = arg("--against", None)
        render_thread(image, face, motion, Path(against) if against else None, int(arg("--passes", 6)))
        return
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "render_fps": {},
    }
    for side in (512, 1024, 2048):
        img = image if side == 512 else cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
        fps, _ = render_fps(img, motion, frames=200 if side <= 1024 else 80)
        results["render_fps"][f"{side}x{side}"] = round(fps, 1)
        print(f"render {side}x{side}: {fps:7.1f} frames/s")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = pipe(portrait, video, Path(d) / "o.mp4", audio=SAMPLE_DIR / "speech.wav",
                   progress=False)
        total = time.perf_counter() - t0
    seconds = out.num_frames / out.fps
    results["end_to_end"] = {
        "video_seconds": seconds, "compute_seconds": round(total, 3),
        "compute_per_video_second": round(total / seconds, 3),
        "stages": {k: round(v, 3) for k, v in out.timings.items()},
    }
    print(f"end to end (512x512, {seconds:.1f} s of video): {total:.2f} s "
          f"= {total / seconds:.3f} s per second of video")
    print("  stages:", ", ".join(f"{k} {v:.2f} s" for k, v in out.timings.items()))
    goal = results["render_fps"]["512x512"] / 50.0
    print(f"render goal ratio (>= 50 frames/s at 512x512): {goal:.2f}x")
    dest = ROOT / "bench" / "results" / "render.json"
    dest.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
