"""Benchmark (not a test): live mode (#15), latency, pacing, memory and quality vs offline.

1. Live run: real speech (the real-speech test set, looped) fed in 20 ms chunks in real time
   into the live stream (`serve/live.py`: the streaming pipeline in its single-threaded worker,
   JPEG per frame, frames paced at 25 fps behind the jitter buffer), as `talkinghead live
   --input FILE` does, without the browser. Latency from each chunk's arrival to the send time
   of the frame that shows it (median, p95), frames sent vs expected, late frames, send-interval
   jitter, RSS every second (memory flat). CPU seconds per second of audio, per stage.
2. Quality: the real-speech clip (20 s, never trained on) streamed through the Python API and
   written to a video, vs offline `generate` with the same portrait crop; both judged on the
   output video by the face model (lip-sync r against the pocketsphinx viseme track, blinks/s,
   head-pose std; `evaluation/generated.py`).
3. `--first-frame N` (#12): `talkinghead live --image the sample --input FILE` in N fresh
   processes, up to the point where it would serve; then its first frame: a session gets the
   first hop's audio (hop + look-ahead frames) and renders. Process CPU and wall from the
   process's start (before the interpreter) to that frame, with the stages; whether torch was
   imported. With `--old-tree DIR` (a `git archive` of an earlier commit) its processes
   alternate with this tree's. The liveliness calibration is read from its cache (each tree's
   first process, not counted, fills it). `--first-start N`: the same, each process with a new,
   empty cache folder, as a user's very first start: the shipped models under the defaults
   read the shipped calibration (talkinghead/weights/alive_calibration.json); an old tree
   without it calibrates (about 50 CPU s).
4. `--motion-hops N` (#12): the streaming motion's CPU per hop, numpy models vs torch ones,
   warm, N alternated rounds over the sample speech's hops (shipped models, `--steps`).
   `--calibration`: the liveliness calibration (`calibrate_alive`, a first `live` start's
   cost before its result is cached), numpy models then torch ones, CPU and the results.
Run 3 and 4 with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 (live's worker threads are
single-threaded). Results: bench/results/live.json (3 and 4: live_numpy.json). Timings depend
on the machine's load: `uptime` is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORTRAIT = ROOT / "talkinghead" / "assets" / "sample" / "portrait.jpg"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def looped_speech(seconds: float) -> np.ndarray:
    from talkinghead.evaluation.testset import real_speech

    x = real_speech().clip.mono()
    return np.resize(x, int(seconds * 16000)).astype(np.float32)


async def _live_run(stream, samples: np.ndarray, rss: list) -> None:
    from talkinghead.serve.live import feed_realtime

    async def sample_rss():
        while True:
            rss.append((time.perf_counter(), rss_mib()))
            await asyncio.sleep(1.0)

    feeder = asyncio.create_task(feed_realtime(stream, samples))
    sampler = asyncio.create_task(sample_rss())
    async for _ in stream.frames():
        pass
    await feeder
    sampler.cancel()


def live(seconds: float, steps: int, delay: float, hop: int, lookahead: int, size: int) -> dict:
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import MotionControls, StreamConfig, StreamPipeline
    from talkinghead.serve.live import LiveStream

    pipe = StreamPipeline(StreamConfig(crop_size=size, window=StreamWindow(hop=hop, lookahead=lookahead)))
    state = pipe.prepare(PORTRAIT)
    samples = looped_speech(seconds)
    session = pipe.session(state, MotionControls(steps=steps))     # calibrates first (not timed below)
    alive = pipe.calibration(MotionControls(steps=steps))
    stream = LiveStream(session, delay)
    rss: list = []
    cpu0, load0 = time.process_time(), load()
    asyncio.run(_live_run(stream, samples, rss))
    cpu = time.process_time() - cpu0
    s = stream.stats.summary()
    mem = [m for _, m in rss]
    tenth = max(1, len(mem) // 10)
    return {"audio_seconds": seconds, "steps": steps, "delay_s": delay, "hop": hop, "lookahead": lookahead,
            "crop": size, **s, "rss_mib_first_10pct": float(np.mean(mem[:tenth])),
            "rss_mib_last_10pct": float(np.mean(mem[-tenth:])), "rss_mib_max": float(max(mem)),
            "cpu_s_per_audio_s": cpu / seconds,
            "stage_s_per_audio_s": {k: v / seconds for k, v in session.timings.items()},
            "load_before": load0, "load_after": load(),
            "alive_calibration": None if alive is None else alive.as_dict()}


class Streamed:
    """`generate`'s call signature over the streaming API (for judge_on_real_speech)."""

    def __init__(self, size: int, steps: int, hop: int, lookahead: int, alive: bool = True) -> None:
        from talkinghead.motion.streaming import StreamWindow
        from talkinghead.pipelines.stream import StreamConfig, StreamPipeline

        self.pipe = StreamPipeline(StreamConfig(crop_size=size, window=StreamWindow(hop=hop, lookahead=lookahead),
                                                alive=alive))
        self.steps = steps

    def __call__(self, image, audio, output, controls, progress=False):
        from dataclasses import replace

        from talkinghead.io.audio import read_audio
        from talkinghead.io.video import write_video
        from talkinghead.pipelines.stream import chunked, single_threaded

        state = self.pipe.prepare(image)
        x = read_audio(audio).mono()
        with single_threaded():
            session = self.pipe.session(state, replace(controls, steps=self.steps))
            frames = (f.frame for c in [*chunked(x, 0.02), None]
                      for f in (session.push(c) if c is not None else session.finish()))
            n = write_video(output, frames, 25.0, audio=audio)
        face = SimpleNamespace(landmarks=state.landmarks)
        return SimpleNamespace(path=Path(output), fps=25.0, num_frames=n,
                               portrait=SimpleNamespace(face=face), timings=session.timings)


def quality(size: int, steps: list[int], hop: int, lookahead: int, offline: bool = True,
            seeds: tuple[int, ...] = (0,), alive: bool = True) -> dict:
    """Each run once per seed, judged on its output video; "mean" rows average the seeds (one
    20 s clip holds about 8 blinks: a single seed's blink count is noisy)."""
    from talkinghead.evaluation.generated import judge_on_real_speech
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    def figures(r) -> dict:
        return {"lip_r": r.lipsync.offset_r, "offset_frames": r.lipsync.offset_frames,
                "lipsync": r.lipsync.as_dict(),
                "motion": r.stats.as_dict()}

    out = {}
    tag = "" if alive else "_uncalibrated"
    with tempfile.TemporaryDirectory() as d:
        runs = [("offline", GeneratePipeline(GenerateConfig(mode="crop", crop_size=size)))] if offline else []
        runs += [(f"streamed_steps{s}_hop{hop}{tag}", Streamed(size, s, hop, lookahead, alive)) for s in steps]
        for name, pipe in runs:
            if isinstance(pipe, Streamed) and alive:
                t, c = time.perf_counter(), time.process_time()
                cal = pipe.pipe.calibration(MotionControls(steps=pipe.steps))
                out[f"{name}_calibration"] = {**cal.as_dict(), "wall_s": time.perf_counter() - t,
                                              "cpu_s": time.process_time() - c, "load": load()}
                print(f"{name} calibration: {cal}", flush=True)
            for seed in seeds:
                key = f"{name}_seed{seed}"
                t, c = time.perf_counter(), time.process_time()
                out[key] = figures(judge_on_real_speech(pipe, PORTRAIT, d, MotionControls(seed=seed)))
                out[key].update(wall_s=time.perf_counter() - t, cpu_s=time.process_time() - c, load=load())
                m = out[key]["motion"]
                print(f"{key}: lip r {out[key]['lip_r']:.3f} (offset {out[key]['offset_frames']}), "
                      f"blinks/s {m['blinks_per_second']:.2f}, pose std {m['pose_std_deg']:.2f} deg", flush=True)
            rows = [out[f"{name}_seed{s}"] for s in seeds]
            out[f"{name}_mean"] = {"seeds": list(seeds), "lip_r": float(np.mean([r["lip_r"] for r in rows])),
                                   "blinks_per_second": float(np.mean([r["motion"]["blinks_per_second"] for r in rows])),
                                   "pose_std_deg": float(np.mean([r["motion"]["pose_std_deg"] for r in rows]))}
            print(f"{name} mean over seeds {list(seeds)}: {out[f'{name}_mean']}", flush=True)
    return out


def report(r: dict) -> None:
    """The live run's figures against the goals, in a few lines."""
    st = r["stage_s_per_audio_s"]
    threads = {k[:-len("_thread_cpu")]: v for k, v in st.items() if k.endswith("_thread_cpu")}
    print(f"live run, {r['audio_seconds']:g} s of audio, load {r['load_before']} -> {r['load_after']}:")
    print(f"  latency chunk -> frame: median {r.get('latency_ms_median', float('nan')):.0f} ms, p95 "
          f"{r.get('latency_ms_p95', float('nan')):.0f} ms (goal <= 300 / 500); send rate {r['fps']:.2f} fps "
          f"(goal 25); frames {r['frames']} / {r['expected_frames']} (dropped "
          f"{r['expected_frames'] - r['frames']}), late {r['late_frames']}; RSS {r['rss_mib_first_10pct']:.0f} -> "
          f"{r['rss_mib_last_10pct']:.0f} MiB (max {r['rss_mib_max']:.0f})")
    print(f"  CPU s per audio s: whole process {r['cpu_s_per_audio_s']:.3f}; per thread "
          + ", ".join(f"{k} {v:.3f}" for k, v in threads.items())
          + f" (each must stay < 1 to keep up: busiest {max(threads.values(), default=float('nan')):.3f}); "
          f"stages: features {st['features_cpu']:.3f}, motion {st['motion_cpu']:.3f}, render {st['render_cpu']:.3f}")


FIRST_FRAME = r"""
import json, sys, time
import uvicorn

out = {}


def first_frame(app, **kw):
    import numpy as np

    from talkinghead.io.audio import read_audio
    from talkinghead.pipelines.stream import single_threaded

    out["ready"] = time.perf_counter(), time.process_time()
    service = captured[0]
    cfg = service.pipeline.config
    n = (cfg.window.hop + cfg.window.lookahead) * cfg.frame_samples
    x = read_audio(sys.argv[2]).mono()[:n]
    session = service.pipeline.session(service.state, service.settings.controls)
    with single_threaded():
        frames = session.push(x)
    assert frames and frames[0].index == 0
    out["first_frame"] = time.perf_counter(), time.process_time()


uvicorn.run = first_frame
import talkinghead.serve.live as live

captured, make_app = [], live.create_live_app
live.create_live_app = lambda service: (captured.append(service), make_app(service))[1]
from talkinghead.cli import main

main(["live", "--image", sys.argv[1], "--input", sys.argv[2]])
print(json.dumps({**out, "torch": "torch" in sys.modules, "package": live.__file__}))
"""


def _first_frame_run(tree: Path, empty_cache: bool = False) -> dict:
    """One fresh `talkinghead live` process of `tree` up to its first frame (`empty_cache`: with
    a new, empty cache folder, as on a first start)."""
    import subprocess

    speech = ROOT / "talkinghead" / "assets" / "sample" / "speech.wav"
    env = {**os.environ, "PYTHONPATH": str(tree), "GLOG_minloglevel": "2"}
    cache = tempfile.TemporaryDirectory(prefix="th_first_start_") if empty_cache else None
    if cache:                   # a first start also copies and verifies the assets (83 MB) into it
        env["TALKINGHEAD_CACHE"] = cache.name
    t0 = time.perf_counter()        # CLOCK_MONOTONIC: the child's perf_counter shares its origin
    res = subprocess.run([sys.executable, "-c", FIRST_FRAME, str(PORTRAIT), str(speech)], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    if cache:
        cache.cleanup()
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(r["package"]).resolve().is_relative_to(tree.resolve()), r["package"]
    return {"first_frame_wall_s": r["first_frame"][0] - t0, "first_frame_cpu_s": r["first_frame"][1],
            "ready_wall_s": r["ready"][0] - t0, "ready_cpu_s": r["ready"][1], "torch_imported": r["torch"]}


def first_frame(runs: int, old_tree: str | None, empty_cache: bool = False) -> dict:
    """Fresh processes to the first live frame, this tree and `old_tree` alternated; the
    calibration cached (filled by each tree's first process), or `empty_cache`: a first start."""
    import statistics

    trees = {"new": ROOT} | ({"old": Path(old_tree)} if old_tree else {})
    for tree in trees.values() if not empty_cache else ():        # fills the calibration cache
        _first_frame_run(tree)
    rows: dict[str, list] = {k: [] for k in trees}
    for i in range(runs):
        for name in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
            r = {**_first_frame_run(trees[name], empty_cache), "load": load()}
            rows[name].append(r)
            print(f"  {name}: first frame {r['first_frame_cpu_s']:.2f} CPU s, {r['first_frame_wall_s']:.2f} s "
                  f"wall (ready {r['ready_cpu_s']:.2f} / {r['ready_wall_s']:.2f}), torch {r['torch_imported']}, "
                  f"load {r['load']}", flush=True)
    out = {}
    for name, rs in rows.items():
        out[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.endswith("_s")}
        out[name].update(torch_imported=any(r["torch_imported"] for r in rs), runs=rs)
    return out


def motion_hops(rounds: int, steps: int) -> dict:
    """Warm CPU per hop of the streaming motion, numpy vs torch models (shipped), alternated."""
    import statistics

    from talkinghead.audio.features import get_extractor
    from talkinghead.io.audio import read_audio
    from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT
    from talkinghead.motion.registry import load_checkpoint, shipped
    from talkinghead.motion.streaming import StreamingFD2Talk, StreamWindow
    from talkinghead.pipelines.stream import hops_from_features, single_threaded

    x = read_audio(ROOT / "talkinghead" / "assets" / "sample" / "speech.wav").mono()
    feats = get_extractor("whisper").frames(x, 25.0, len(x) // 640)
    names = ("fd2talk_expression", "fd2talk_pose")
    models = {"numpy": [NumpyMotionDiT.from_checkpoint(shipped(n)) for n in names],
              "torch": [load_checkpoint(shipped(n)) for n in names]}
    hops = hops_from_features(feats, StreamWindow())
    ms: dict[str, list] = {k: [] for k in models}
    out: dict[str, list] = {}
    with single_threaded():
        for i in range(rounds + 1):                                 # round 0 warms up
            for name in (("numpy", "torch") if i % 2 == 0 else ("torch", "numpy")):
                m = StreamingFD2Talk(*models[name], StreamWindow(), seed=0, steps=steps)
                c = time.process_time()
                parts = [m.step(h.features, h.first, h.emit) for h in hops]
                if i:
                    ms[name].append((time.process_time() - c) / len(hops) * 1e3)
                out[name] = parts
    diff = [float(max(np.abs(a[j] - b[j]).max() for a, b in zip(out["numpy"], out["torch"]))) for j in (0, 1)]
    res = {f"{k}_ms_per_hop": statistics.median(v) for k, v in ms.items()}
    res.update(ratio=res["numpy_ms_per_hop"] / res["torch_ms_per_hop"], hops=len(hops), steps=steps,
               rounds={k: v for k, v in ms.items()}, max_diff_expression=diff[0], max_diff_pose_deg=diff[1],
               load=load())
    print(f"motion per hop (warm, {len(hops)} hops, {steps} steps, {rounds} rounds, load {res['load']}): numpy "
          f"{res['numpy_ms_per_hop']:.1f} ms vs torch {res['torch_ms_per_hop']:.1f} ms CPU (ratio "
          f"{res['ratio']:.2f}); max difference {diff[0]:.1e} expression, {diff[1]:.1e} deg pose", flush=True)
    return res


def calibration(steps: int) -> dict:
    """`StreamPipeline.calibration` uncached (the default settings), numpy then torch models."""
    from talkinghead.motion.registry import load_checkpoint, shipped
    from talkinghead.pipelines.stream import MotionControls, StreamConfig, StreamPipeline

    os.environ["TALKINGHEAD_ALIVE_CACHE"] = "off"
    out = {}
    for name in ("numpy", "torch"):
        models = () if name == "numpy" else [load_checkpoint(shipped(n)) for n in ("fd2talk_expression", "fd2talk_pose")]
        pipe = StreamPipeline(StreamConfig(), *models)
        pipe.extractor                                              # loaded outside the figure
        c, w, load0 = time.process_time(), time.perf_counter(), load()
        cal = pipe.calibration(MotionControls(steps=steps))
        out[name] = {"cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - w, "load": load0,
                     **cal.as_dict()}
        print(f"calibration, {name} models: {out[name]['cpu_s']:.1f} CPU s, {out[name]['wall_s']:.1f} s wall "
              f"(load {load0}): blink-rate condition "
              f"{cal.blink_rate}, pose gain {cal.pose_gain:.4f}", flush=True)
    return out


def numpy_figures(a: argparse.Namespace) -> None:
    """Modes 3 and 4: bench/results/live_numpy.json (merged with what it holds)."""
    path = ROOT / "bench" / "results" / "live_numpy.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res["threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if a.motion_hops:
        res["motion_per_hop"] = motion_hops(a.motion_hops, a.steps)
    if a.calibration:
        res["calibration"] = calibration(a.steps)
    for mode, runs in (("first_frame", a.first_frame), ("first_start", a.first_start)):
        if runs:
            res[mode] = first_frame(runs, a.old_tree, empty_cache=mode == "first_start")
            for name, r in res[mode].items():
                print(f"{mode.replace('_', ' ')}, {name} tree, median of {runs}: {r['first_frame_cpu_s']:.2f} "
                      f"CPU s, {r['first_frame_wall_s']:.2f} s wall; torch imported: {r['torch_imported']}")
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the live run")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.27)
    ap.add_argument("--hop", type=int, default=3)
    ap.add_argument("--lookahead", type=int, default=3)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-offline", action="store_true", help="quality: the streamed runs only")
    ap.add_argument("--quality-steps", default="3", help="streamed runs' sampling steps, e.g. 5,10")
    ap.add_argument("--seeds", default="0,1,2", help="quality: seeds, each run once per seed")
    ap.add_argument("--no-alive", action="store_true",
                    help="quality: the streamed runs without the liveliness calibration (calibrate_alive)")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "live.json"))
    ap.add_argument("--first-frame", type=int, default=0, help="fresh processes to the first live frame")
    ap.add_argument("--first-start", type=int, default=0,
                    help="the same, each with a new empty cache folder (a first start)")
    ap.add_argument("--old-tree", help="--first-frame/--first-start: an older tree (git archive) to alternate with")
    ap.add_argument("--motion-hops", type=int, default=0, help="rounds of warm per-hop motion, numpy vs torch")
    ap.add_argument("--calibration", action="store_true", help="the liveliness calibration's CPU, numpy vs torch")
    a = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    if a.first_frame or a.first_start or a.motion_hops or a.calibration:
        numpy_figures(a)
        return
    res = {"cpus": os.cpu_count()}
    if not a.skip_quality:
        res["quality"] = quality(a.size, [int(s) for s in a.quality_steps.split(",")], a.hop, a.lookahead,
                                 not a.skip_offline, tuple(int(s) for s in a.seeds.split(",")), not a.no_alive)
    if not a.skip_live:
        res["live"] = live(a.seconds, a.steps, a.delay, a.hop, a.lookahead, a.size)
        print(json.dumps(res["live"], indent=1), flush=True)
        report(res["live"])
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
