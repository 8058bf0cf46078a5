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
Results: bench/results/live.json. Timings depend on the machine's load: `uptime` is printed.
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
    a = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
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
